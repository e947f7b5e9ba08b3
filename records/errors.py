"""The project's errors: one hierarchy rooted at :class:`zscl_core.ZSCLError`.

``zscl_core`` raises its own (bad config, bad dataset, a model that cannot load); the records,
the service and the worker raise these. None carries an HTTP status: the web edge chooses status
codes in one place (:mod:`service.api.errors`). Every message says what the caller can do.
"""

from __future__ import annotations

from zscl_core.errors import DatasetError, ZSCLError

__all__ = ["ServiceError", "NotReady", "Unauthorized", "Forbidden", "NotFound", "UnknownVersion",
           "Conflict", "InvalidRequest", "InvalidImage", "UnsupportedMediaType", "PayloadTooLarge",
           "QueueFull", "ClientGone", "DatasetTooLarge", "UnsafeArchive", "UnsupportedUpload",
           "SchemaMismatch"]


class ServiceError(ZSCLError):
    """Base of the errors the service and the worker raise on purpose."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotReady(ServiceError):
    """Something the request needs is not up yet (the model, the queue); retry shortly."""

    retry_after_s = 1


class Unauthorized(ServiceError):
    """No API key, or a wrong one."""


class Forbidden(ServiceError):
    """A valid key without the right to do this."""


class NotFound(ServiceError):
    """No such record. :meth:`of` names the kind and the key, so that an edge can add how to
    find the right one (the API names its listing route: ``service.api.errors``)."""

    kind: str | None = None
    key: str | None = None

    @classmethod
    def of(cls, kind: str, key: str, detail: str = "") -> NotFound:
        """``<kind> '<key>' does not exist`` (plus ``detail``), with ``kind`` and ``key`` kept."""
        error = cls(f"{kind} '{key}' does not exist{detail}")
        error.kind, error.key = kind, key
        return error


class UnknownVersion(NotFound):
    """A model version id that the registry does not know."""

    def __init__(self, version_id: str):
        super().__init__(f"model version '{version_id}' is not registered")
        self.kind, self.key = "model version", version_id
        self.version_id = version_id


class Conflict(ServiceError):
    """The request clashes with the records' current state."""


class InvalidRequest(ServiceError):
    """The request is well-formed but its values are not acceptable."""


class InvalidImage(InvalidRequest):
    """An uploaded image that could not be decoded."""

    def __init__(self, filename: str, reason: str):
        super().__init__(f"image '{filename}' could not be decoded ({reason}); send a PNG, JPEG, "
                         f"WebP, GIF or BMP file")
        self.filename = filename


class UnsupportedMediaType(InvalidRequest):
    """The body is in a format this endpoint does not read."""


class PayloadTooLarge(ServiceError):
    """A request is over a size, count or pixel cap."""


class ClientGone(ServiceError):
    """The client disconnected while its request was being worked on; nobody reads the answer."""


class QueueFull(ServiceError):
    """Too much work is waiting; retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SchemaMismatch(ServiceError):
    """The database's schema is not one this code can migrate: a revision it does not know (the
    database was upgraded by a newer zscl-serve), or tables that predate migrations and differ
    from the baseline. Refuse to run rather than read or write it."""


class DatasetTooLarge(DatasetError):
    """An upload broke a byte, file-count, compression-ratio or pixel cap."""


class UnsafeArchive(DatasetError):
    """A member would escape the dataset directory or is not a plain file (path, link, device)."""


class UnsupportedUpload(DatasetError):
    """The upload is not a zip or tar archive, or declares a content type that is not one."""
