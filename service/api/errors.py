"""The one place that chooses HTTP status codes for project errors: ``{"detail": "..."}`` answers.

Every error the project raises on purpose is a :class:`zscl_core.ZSCLError`; the first row of
:data:`STATUS` whose class matches gives the status (subclasses are listed before their bases).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from records.errors import (ClientGone, Conflict, DatasetTooLarge, Forbidden, InvalidRequest,
                            NotFound, NotReady, PayloadTooLarge, QueueFull, Unauthorized,
                            UnsupportedMediaType, UnsupportedUpload)
from zscl_core import ConfigError, DatasetError, ModelLoadError, ZSCLError

__all__ = ["STATUS", "install_error_handlers", "error_response", "response_for", "status_for"]

logger = logging.getLogger(__name__)

STATUS: tuple[tuple[type[ZSCLError], int], ...] = (
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (ModelLoadError, 409),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (DatasetTooLarge, 413),
    (UnsupportedMediaType, 415),
    (UnsupportedUpload, 415),
    (InvalidRequest, 422),
    (ConfigError, 422),
    (DatasetError, 422),
    (QueueFull, 429),
    (ClientGone, 499),  # nginx's "client closed request": logged, never sent
    (NotReady, 503),
)
_MODEL_LOAD_HINT = "the model version cannot be loaded; repair it or activate another: "
# what to do about a missing record, by its kind: the records name the fact, the API the route
NOT_FOUND_HINTS = {
    "dataset": "GET /v1/datasets lists them",
    "job": "GET /v1/jobs lists the jobs",
    "label set": "create it with PUT /v1/label-sets/{key}",
    "model version": "GET /v1/models lists the known versions",
}


def _message(exc: ZSCLError) -> str:
    """The error's message, with the API's own hint where the error names what is missing."""
    if isinstance(exc, ModelLoadError):
        return f"{_MODEL_LOAD_HINT}{exc}"
    hint = NOT_FOUND_HINTS.get(getattr(exc, "kind", None) or "") if isinstance(exc, NotFound) else None
    return f"{exc}; {hint.format(key=exc.key)}" if hint else str(exc)


def status_for(exc: ZSCLError) -> int:
    """The HTTP status of a project error (500 for one no row matches: a bug)."""
    return next((status for kind, status in STATUS if isinstance(exc, kind)), 500)


def _headers_for(exc: ZSCLError) -> dict[str, str] | None:
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": "ApiKey"}
    if isinstance(exc, (NotReady, QueueFull)):
        return {"Retry-After": str(exc.retry_after_s)}
    return None


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The ``{"detail": message}`` answer every API error has, so clients read one shape."""
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def response_for(exc: ZSCLError) -> JSONResponse:
    """The answer to a project error: its status, its message, and the Retry-After or
    WWW-Authenticate header a client needs to act on it."""
    status = status_for(exc)
    if status == 500:
        logger.error("unmapped project error: %r", exc)
        return error_response(500, f"internal error: {exc}")
    return error_response(status, _message(exc), _headers_for(exc))


async def _project_error(_request: Request, exc: ZSCLError) -> JSONResponse:
    return response_for(exc)


def install_error_handlers(app: FastAPI) -> None:
    """Make ``app`` answer every project error a route raises through :func:`response_for`."""
    app.add_exception_handler(ZSCLError, _project_error)
