"""One hierarchy of project errors. Every message says what the user can do about it."""

__all__ = [
    "ZSCLError",
    "ConfigError",
    "ModelLoadError",
    "VersionIntegrityError",
    "DatasetError",
    "UpdateCancelled",
    "WorkAbandoned",
]


class ZSCLError(Exception):
    """Base class of every error zscl_core raises on purpose."""


class ConfigError(ZSCLError, ValueError):
    """A setting or hyper-parameter is out of its valid range."""


class ModelLoadError(ZSCLError):
    """A model could not be built or loaded from the given source."""


class VersionIntegrityError(ModelLoadError):
    """A saved version is incomplete, tampered with, or does not match its manifest."""


class DatasetError(ZSCLError, ValueError):
    """A dataset is unusable (too few classes, empty classes, unreadable images...)."""


class WorkAbandoned(ZSCLError):
    """A caller's ``should_stop()`` asked long work (encoding a head) to stop between chunks."""


class UpdateCancelled(ZSCLError):
    """The update was cancelled by its caller; nothing of it should be kept."""

    def __init__(self, step: int):
        super().__init__(f"update cancelled at step {step}")
        self.step = step
