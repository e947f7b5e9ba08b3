"""Private build directories that a restart can tell apart from live ones.

A dataset or a model version is built in a temporary directory and renamed into place when
complete, so a killed process leaves a temporary directory behind, never a half-written final
one. Each temporary directory is locked (``flock``) for as long as its process works in it; the
kernel drops the lock when the process dies, however it dies (SIGKILL, power loss), so
:func:`remove_unlocked_temp_dirs` removes what dead processes left, whatever its age, and never
the directory of a live one (another worker saving a version at that moment).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TMP_PREFIX", "fsync_path", "locked_temp_dir", "remove_unlocked_temp_dirs"]

logger = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"


def fsync_path(path: str | Path) -> None:
    """Flush a file's or a directory's entries to disk (a directory after a rename into it, so
    the rename survives a power loss)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked_temp_dir(parent: str | Path, prefix: str = TMP_PREFIX) -> Iterator[Path]:
    """A new directory ``<parent>/<prefix><random>``, locked while the block runs and removed
    after it, unless the block renamed it into place.

    Args:
        parent: where to make it (the store it will be renamed into; it must exist).
        prefix: the start of its name, which the cleaner looks for.
    """
    while True:
        path = Path(parent) / f"{prefix}{uuid.uuid4().hex}"
        path.mkdir()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:  # a cleaner removed it before we could lock it: take another
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:  # a cleaner that locked it first has removed it: take another
            break
        os.close(fd)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)  # gone already when renamed into place
        os.close(fd)  # releases the lock


def remove_unlocked_temp_dirs(parent: str | Path, prefix: str = TMP_PREFIX) -> list[str]:
    """Remove the ``<prefix>*`` directories under ``parent`` that no live process holds locked
    (what killed processes left); returns their names. Call it at start-up."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    removed = [entry.name for entry in parent.iterdir()
               if entry.name.startswith(prefix) and _remove_if_unlocked(entry)]
    if removed:
        logger.info("removed %d unfinished director%s a stopped process left in %s: %s",
                    len(removed), "y" if len(removed) == 1 else "ies", parent, removed)
    return removed


def _remove_if_unlocked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:  # finished meanwhile, or not a directory we made
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # a live process works in it
        os.close(fd)
        return False
    try:  # removed while locked: a process that locks it next sees st_nlink == 0
        shutil.rmtree(path, ignore_errors=True)
        return True
    finally:
        os.close(fd)
