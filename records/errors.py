"""Service errors. Each carries its HTTP status; messages say what the caller can do.

No web framework here: the registry and the worker raise these too. The one place that turns
them (and ``zscl_core`` errors) into HTTP responses is :mod:`service.api.errors`.
"""

from __future__ import annotations

__all__ = ["ServiceError", "NotReady", "Unauthorized", "Forbidden", "NotFound", "Conflict",
           "InvalidRequest", "InvalidImage", "PayloadTooLarge", "QueueFull", "UnknownVersion",
           "ClientGone"]


class ServiceError(Exception):
    """Base of the errors the service raises on purpose."""

    status_code = 500
    headers: dict[str, str] | None = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotReady(ServiceError):
    status_code = 503
    headers = {"Retry-After": "1"}


class Unauthorized(ServiceError):
    status_code = 401
    headers = {"WWW-Authenticate": "ApiKey"}


class Forbidden(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404


class UnknownVersion(NotFound):
    def __init__(self, version_id: str):
        super().__init__(f"model version '{version_id}' is not registered; GET /v1/models lists "
                         f"the known versions")
        self.version_id = version_id


class Conflict(ServiceError):
    status_code = 409


class InvalidRequest(ServiceError):
    status_code = 422


class InvalidImage(InvalidRequest):
    def __init__(self, filename: str, reason: str):
        super().__init__(f"image '{filename}' could not be decoded ({reason}); send a PNG, JPEG, "
                         f"WebP, GIF or BMP file")
        self.filename = filename


class PayloadTooLarge(ServiceError):
    status_code = 413


class ClientGone(ServiceError):
    """The client disconnected while its request was being worked on; nobody reads the answer."""

    status_code = 499  # nginx's "client closed request": logged, never sent


class QueueFull(ServiceError):
    status_code = 429

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}
