"""Typed dependencies: the app's services, a database session, and the two API keys."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import SecretStr
from sqlalchemy.orm import Session

from records.errors import Forbidden, Unauthorized

from ..container import Services

__all__ = ["ServicesDep", "SessionDep", "require_admin", "require_inference", "READ_ACCESS",
           "API_KEY_HEADER"]

API_KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                        description="the admin key (state changes; it opens every route) or "
                                    "the inference key (classify and every read)")


async def get_services(request: Request) -> Services:
    """The app's :class:`Services`, built once at startup, for routes to declare as ``ServicesDep``."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_db(services: ServicesDep) -> Iterator[Session]:
    """A database session for one request (``SessionDep``), closed when the request is done."""
    with services.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


def _matches(given: str, expected: SecretStr | None) -> bool:
    if expected is None:
        return False
    return hmac.compare_digest(given.encode(), expected.get_secret_value().encode())


async def require_admin(services: ServicesDep, key: Annotated[str | None, Security(_api_key)]) -> None:
    """Admin key in ``X-API-Key``: 401 without a key, 403 with another one."""
    expected = services.settings.admin_key
    if expected is None:
        raise Forbidden("admin endpoints are disabled: restart the service with ZSCL_ADMIN_KEY set")
    if not key:
        raise Unauthorized(f"this endpoint changes state: send the admin key in the {API_KEY_HEADER} header")
    if not _matches(key, expected):
        raise Forbidden(f"the {API_KEY_HEADER} header does not hold the admin key")


async def require_inference(services: ServicesDep, key: Annotated[str | None, Security(_api_key)]) -> None:
    """Inference key (or the admin key) in ``X-API-Key`` when ZSCL_INFERENCE_KEY is set.

    Guards classify and every read route (:data:`READ_ACCESS`); only the health probes
    (``/livez``, ``/readyz``) stay open, so a deployment with a key shows nothing without one.
    """
    settings = services.settings
    if settings.inference_key is None:
        return
    if not key:
        raise Unauthorized(f"send the inference key in the {API_KEY_HEADER} header")
    # both comparisons always run: the time taken does not tell which key was close
    ok_inference = _matches(key, settings.inference_key)
    ok_admin = _matches(key, settings.admin_key)
    if not (ok_inference or ok_admin):
        raise Forbidden(f"the {API_KEY_HEADER} header does not hold a valid key")


#: The dependencies of every read route: with ZSCL_INFERENCE_KEY set, datasets, jobs, models,
#: label sets and metrics need a key too (the inference key or the admin key).
READ_ACCESS = [Depends(require_inference)]
