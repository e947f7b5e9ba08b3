"""The one place that maps project errors to HTTP responses ``{"detail": "..."}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from zscl_core import ConfigError, DatasetError, ModelLoadError, ZSCLError

from records.errors import ServiceError
from records.ingest import DatasetTooLarge, UnsupportedUpload

__all__ = ["install_error_handlers", "error_response"]

logger = logging.getLogger(__name__)

# zscl_core errors, most specific first
_CORE_STATUS: tuple[tuple[type[ZSCLError], int, str], ...] = (
    (ModelLoadError, 409, "the model version cannot be loaded; repair it or activate another: "),
    (DatasetTooLarge, 413, ""),
    (UnsupportedUpload, 415, ""),
    (ConfigError, 422, ""),
    (DatasetError, 422, ""),
)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


async def _service_error(_request: Request, exc: ServiceError) -> JSONResponse:
    return error_response(exc.status_code, exc.message, exc.headers)


async def _core_error(_request: Request, exc: ZSCLError) -> JSONResponse:
    for kind, status, prefix in _CORE_STATUS:
        if isinstance(exc, kind):
            return error_response(status, f"{prefix}{exc}")
    logger.error("unmapped zscl_core error: %r", exc)
    return error_response(500, f"internal error: {exc}")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(ZSCLError, _core_error)
