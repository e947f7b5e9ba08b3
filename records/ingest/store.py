"""The store: ingestion end to end, the content-addressed directory built in a private temp
directory and published with one rename, and reading, loading and deleting stored datasets.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from zscl_core import LabelledImages, scan_image_folder
from zscl_core.data import class_name_from_folder
from zscl_core.errors import DatasetError
from zscl_core.tempdirs import fsync_path, locked_temp_dir, remove_unlocked_temp_dirs

from ..errors import DatasetTooLarge
from .archive import Budget, IngestLimits, check_content_type, detect_archive, extract_tar, extract_zip
from .layout import assign_layout, image_suffix, plan_splits

logger = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"
_UPLOAD_PREFIX = ".upload-"
_ID_RE = re.compile(r"^[0-9a-f]{16}$")


@dataclass(frozen=True)
class IngestedDataset:
    """A stored dataset. Counts are keyed by class name; ``classnames`` follow folder-name order."""

    dataset_id: str
    sha256: str
    path: Path
    classnames: list[str]
    class_folders: list[str]
    n_train: int
    n_test: int
    train_counts: dict[str, int]
    test_counts: dict[str, int]
    split: str  # "explicit" or "auto"
    source_filename: str
    deduplicated: bool = False
    info: dict = field(default_factory=dict, repr=False)  # the full dataset.json


# ---------------------------------------------------------------------------------------------
# public API


def ingest_dataset(upload: Path, store_root: Path, limits: IngestLimits, *, filename: str,
                   content_type: str | None) -> IngestedDataset:
    """Validate an uploaded archive and store it content-addressed, all or nothing.

    Args:
        upload: the uploaded file (already on disk; the API spools the request body there).
        store_root: the directory holding one sub-directory per dataset.
        limits: caps and dataset rules.
        filename: the client's file name, kept in dataset.json (not used to pick a reader).
        content_type: the declared content type, or None; must be an archive type if given.

    Returns:
        The stored dataset; ``deduplicated`` is True when identical content was already stored
        (the earlier copy is returned and the upload discarded).

    Raises:
        DatasetTooLarge: a byte, file-count or compression-ratio cap was exceeded.
        UnsafeArchive: a member has an absolute path, a ``..`` component, or is a link/device.
        UnsupportedUpload: not a zip or tar (plain or gzip).
        DatasetError: anything else wrong with the content (names the member and the fix).
    """
    upload, store_root = Path(upload), Path(store_root)
    check_content_type(content_type)
    archive_bytes = upload.stat().st_size
    if archive_bytes > limits.max_archive_bytes:
        raise DatasetTooLarge(f"the upload is {archive_bytes} bytes, more than the limit of "
                              f"{limits.max_archive_bytes}; split the dataset or downscale its images")
    kind = detect_archive(upload)
    store_root.mkdir(parents=True, exist_ok=True)
    # locked while it exists: a restart removes it if this process dies (remove_stale_temp_dirs)
    with locked_temp_dir(store_root, _TMP_PREFIX) as work:
        raw, built = work / "raw", work / "dataset"
        raw.mkdir()
        budget = Budget(limits, archive_bytes)
        if kind == "zip":
            files, dirs = extract_zip(upload, raw, budget)
        else:
            files, dirs = extract_tar(upload, raw, budget, gzipped=kind == "tar.gz")
        entries, split = assign_layout(files, dirs, limits)
        info = _build(entries, split, built, limits, filename)
        return _publish(built, store_root, info)


def read_dataset(path: Path, *, deduplicated: bool = False) -> IngestedDataset:
    """The stored dataset at ``path`` (a ``<store_root>/<dataset_id>`` directory)."""
    path = Path(path)
    try:
        info = json.loads((path / "dataset.json").read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} is not a stored dataset (dataset.json unreadable: {exc}); "
                           f"upload it again") from exc
    return IngestedDataset(
        dataset_id=info["dataset_id"], sha256=info["sha256"], path=path,
        classnames=list(info["classnames"]), class_folders=list(info["class_folders"]),
        n_train=sum(info["train_counts"].values()), n_test=sum(info["test_counts"].values()),
        train_counts=dict(info["train_counts"]), test_counts=dict(info["test_counts"]),
        split=info["split"], source_filename=info["source_filename"], deduplicated=deduplicated,
        info=info)


def load_dataset_dir(path: Path, transform=None) -> tuple[LabelledImages, LabelledImages]:
    """(train, test) of a stored dataset, with the same class order; for the worker.

    ``train`` is empty for a dataset uploaded as a bare ``test/`` split (a suite-only dataset).
    """
    path = Path(path)
    test = scan_image_folder(path / "test", transform)
    if not _has_files(path / "train"):
        return LabelledImages([], [], list(test.classnames), transform), test
    train = scan_image_folder(path / "train", transform)
    if list(train.classnames) != list(test.classnames):
        raise DatasetError(f"{path}: train classes {list(train.classnames)} differ from test classes "
                           f"{list(test.classnames)}; the directory was altered, upload it again")
    return train, test


def evaluation_images(path: Path, *, suite: bool, transform=None) -> LabelledImages:
    """The images a gate evaluates a stored dataset on.

    A zero-shot suite is never trained on, so all its images are test images: train then test,
    each in ``scan_image_folder`` order (class folder, then file name), with the shared class
    order. Any other dataset is evaluated on its test split only; its train split was learned.

    Args:
        path: a ``<store_root>/<dataset_id>`` directory.
        suite: whether the dataset is registered as a zero-shot suite (``Dataset.is_suite``).
        transform: the model's preprocessing, applied when an image is read.
    """
    train, test = load_dataset_dir(path, transform)
    if not suite:
        return test
    return LabelledImages([*train.items, *test.items], [*train.labels, *test.labels],
                          list(test.classnames), transform)


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() for p in folder.rglob("*"))


def delete_dataset(store_root: Path, dataset_id: str) -> bool:
    """Remove a stored dataset; False when it does not exist. Whether it is still used is the
    caller's business (the database knows)."""
    if not _ID_RE.match(dataset_id or ""):
        raise DatasetError(f"'{dataset_id}' is not a dataset id (16 lower-case hex characters)")
    store_root = Path(store_root)
    target = store_root / dataset_id
    doomed = store_root / f"{_TMP_PREFIX}delete-{uuid.uuid4().hex}"
    try:
        os.rename(target, doomed)  # readers see it whole or not at all
    except FileNotFoundError:
        return False
    shutil.rmtree(doomed, ignore_errors=True)
    logger.info("deleted dataset %s", dataset_id)
    return True


@contextlib.contextmanager
def upload_spool(store_root: str | Path) -> Iterator[tuple[Path, BinaryIO]]:
    """A private file to spool an upload into, ``<store_root>/.upload-<random>``, removed on exit.

    Yields (path, open binary file). The file is locked (``flock``) for as long as it exists, so
    :func:`remove_stale_temp_dirs` tells the spool of a live upload (locked) from one a crashed
    process left (the kernel dropped its lock).
    """
    store_root = Path(store_root)
    store_root.mkdir(parents=True, exist_ok=True)
    while True:
        fd, name = tempfile.mkstemp(prefix=_UPLOAD_PREFIX, dir=store_root)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:  # a cleaner got its lock first and unlinked it: take another
            break
        os.close(fd)
    path, fh = Path(name), os.fdopen(fd, "w+b")
    try:
        yield path, fh
    finally:
        path.unlink(missing_ok=True)  # still locked: no cleaner can race the unlink
        fh.close()  # releases the lock


def remove_stale_temp_dirs(store_root: Path) -> int:
    """Remove what killed processes left behind; returns how many entries it removed.

    - ``.tmp-*`` directories (ingestions, deletions) that no live process holds locked
      (:func:`zscl_core.tempdirs.locked_temp_dir`), whatever their age;
    - ``.upload-*`` spools (request bodies, up to ZSCL_MAX_DATASET_BYTES each) that no live
      process holds locked (:func:`upload_spool`), whatever their age.

    Call it at start-up.
    """
    store_root = Path(store_root)
    if not store_root.is_dir():
        return 0
    removed = len(remove_unlocked_temp_dirs(store_root, _TMP_PREFIX))
    for entry in store_root.iterdir():
        if entry.name.startswith(_UPLOAD_PREFIX):
            removed += _remove_unlocked_spool(entry)
    return removed


def _remove_unlocked_spool(path: Path) -> int:
    """Unlink the spool ``path`` if no process holds its lock; 1 if it did."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, OSError):  # finished meanwhile, or not a plain file we made
        return 0
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # a live upload holds it
        os.close(fd)
        return 0
    try:  # unlinked while locked: an uploader that locks it next sees st_nlink == 0
        path.unlink(missing_ok=True)
        logger.info("removed the upload spool %s a stopped process left", path.name)
        return 1
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# building and publishing


def _build(entries, split_kind: str, built: Path, limits: IngestLimits, filename: str) -> dict:
    """Write the normalised tree into ``built`` and return its dataset.json content."""
    suffix: dict[bytes, str] = {}
    for _, _, member in entries:  # decode first, so a non-image is named as such
        if member.digest not in suffix:
            suffix[member.digest] = image_suffix(member, limits)
    plan, merged, overlap = plan_splits(entries, split_kind, limits)
    placed: dict[bytes, Path] = {}
    records = []
    for split, classes in plan.items():
        for folder, members in classes.items():
            target = built / split / folder
            target.mkdir(parents=True)
            for member in members:
                dest = target / (member.digest.hex()[:32] + suffix[member.digest])
                if member.digest in placed:  # same image in train and test (explicit split)
                    shutil.copyfile(placed[member.digest], dest)
                else:
                    os.rename(member.path, dest)
                    placed[member.digest] = dest
                records.append((f"{split}/{folder}/{dest.name}", member.digest))
    content = hashlib.sha256()
    for relpath, digest in sorted(records):
        content.update(relpath.encode() + b"\0" + digest)
    sha = content.hexdigest()
    folders = sorted(plan["train"])
    info = {
        "format": 1, "dataset_id": sha[:16], "sha256": sha,
        "classnames": [class_name_from_folder(f) for f in folders], "class_folders": folders,
        "train_counts": {class_name_from_folder(f): len(plan["train"][f]) for f in folders},
        "test_counts": {class_name_from_folder(f): len(plan["test"][f]) for f in folders},
        "split": split_kind, "source_filename": filename[:255],
        "duplicates_merged": merged, "train_test_overlap": overlap,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if split_kind == "auto":
        info.update(split_seed=limits.split_seed, test_fraction=limits.test_fraction)
    if overlap:
        logger.warning("%d image(s) are in both train/ and test/ of the same class", overlap)
    with open(built / "dataset.json", "w") as fh:
        json.dump(info, fh, indent=1)
    # Durable before the rename publishes it. One sync() instead of an fsync() per image and per
    # folder: each fsync is a journal commit, and they made ingestion 2-3x slower (see "Tests and
    # figures" in docs/ingestion.md).
    os.sync()
    return info


def _publish(built: Path, store_root: Path, info: dict) -> IngestedDataset:
    final = store_root / info["dataset_id"]
    try:
        os.rename(built, final)  # atomic; fails if a dataset with this id is already there
    except OSError:
        if not (final / "dataset.json").is_file():
            raise
        logger.info("dataset %s already stored; discarding the duplicate upload", info["dataset_id"])
        return read_dataset(final, deduplicated=True)
    fsync_path(store_root)
    logger.info("stored dataset %s: %d classes, %d train / %d test images", info["dataset_id"],
                len(info["classnames"]), sum(info["train_counts"].values()), sum(info["test_counts"].values()))
    return read_dataset(final)
