"""Dataset ingestion: an uploaded zip or tar of labelled images becomes a validated,
content-addressed directory ``<store_root>/<dataset_id>/{train,test}/<class>/<image>``.

Accepted layouts (a single top-level wrapper folder is stripped first):
- ``<class>/<image>``: a seeded, per-class stratified train/test split is drawn;
- ``train/<class>/<image>`` + ``test/<class>/<image>``: the split is kept;
- ``test/<class>/<image>`` alone: an explicit split with no train images, usable only as a
  zero-shot evaluation suite (a lone ``train/`` is refused: it could never be evaluated);
- ``manifest.csv`` (columns ``path,label[,split]``) or ``manifest.jsonl`` (``{"path", "label",
  "split"?}``) with the images at the listed relative paths.

Threat model: the archive is hostile. Every member is checked (no absolute path, no ``..``, no
link, device or FIFO) and streamed into a private ``.tmp-<uuid>`` directory under byte, file-count
and compression-ratio budgets counted on the bytes actually decompressed, not on header claims.
Member bytes land in files named by a counter, never by their archive path. Every image is decoded
by Pillow (a fixed list of formats, a pixel cap checked on the header before any pixel is decoded).
The finished directory appears with one ``os.rename``; on any error the temp directory is removed,
so a failed upload leaves nothing behind.

No web, queue or database code here: the API and the worker call these functions.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import time
import unicodedata
import uuid
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from zscl_core import LabelledImages, scan_image_folder
from zscl_core.data import class_name_from_folder
from zscl_core.errors import ConfigError, DatasetError

from .imaging import open_capped

__all__ = ["IngestLimits", "IngestedDataset", "DatasetTooLarge", "UnsafeArchive", "UnsupportedUpload",
           "ingest_dataset", "read_dataset", "load_dataset_dir", "evaluation_images", "delete_dataset",
           "remove_stale_temp_dirs", "ARCHIVE_CONTENT_TYPES"]

logger = logging.getLogger(__name__)

MiB = 1 << 20

#: Declared content types an upload may carry (None, i.e. not declared, is accepted too); the
#: reader is chosen from the bytes, never from this or the file name.
ARCHIVE_CONTENT_TYPES = frozenset({
    "application/zip", "application/x-zip", "application/x-zip-compressed", "multipart/x-zip",
    "application/x-tar", "application/x-gtar", "application/gzip", "application/x-gzip",
    "application/x-compressed-tar", "application/x-tgz", "application/octet-stream",
})

# Pillow formats we decode, and the suffix a stored image gets (one zscl_core.scan_image_folder
# reads). A fixed list keeps Pillow away from plugins that shell out (EPS) or are rarely audited.
_SUFFIX_BY_FORMAT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif",
                     "BMP": ".bmp", "TIFF": ".tiff"}
_OPEN_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # the JPEG opener yields MPO too
_MANIFESTS = ("manifest.csv", "manifest.jsonl")
_JUNK_FILES = frozenset({"thumbs.db", "desktop.ini"})
_SPLITS = ("train", "test")
# Below this many expanded bytes the ratio cap does not apply: tiny archives (a tar's zero
# padding, a short manifest) compress far better than images do, and cannot hurt anyone.
_RATIO_FLOOR_BYTES = MiB
_CHUNK = MiB
_TMP_PREFIX = ".tmp-"
_ID_RE = re.compile(r"^[0-9a-f]{16}$")


class DatasetTooLarge(DatasetError):
    """A byte, file-count, compression-ratio or pixel cap was exceeded (the API answers 413)."""


class UnsafeArchive(DatasetError):
    """A member would escape the dataset directory or is not a plain file (path, link, device)."""


class UnsupportedUpload(DatasetError):
    """The upload is not a zip or tar archive, or declares a content type that is not one."""


@dataclass(frozen=True)
class IngestLimits:
    """Caps an upload must respect, and the dataset rules (classes, split).

    ``max_compression_ratio`` caps expanded bytes / archive bytes (zip and gzip bombs); it only
    applies past 1 MiB of expanded data.
    """

    max_archive_bytes: int = 512 * MiB
    max_files: int = 50_000
    max_total_bytes: int = 2048 * MiB
    max_file_bytes: int = 32 * MiB
    max_compression_ratio: float = 100.0
    max_image_pixels: int = 40_000_000
    min_classes: int = 2
    min_images_per_class: int = 2
    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_archive_bytes", "max_files", "max_total_bytes", "max_file_bytes",
                     "max_image_pixels", "min_images_per_class"):
            if getattr(self, name) < 1:
                raise ConfigError(f"IngestLimits.{name} must be at least 1, got {getattr(self, name)}")
        if self.min_classes < 2:
            raise ConfigError(f"IngestLimits.min_classes must be at least 2, got {self.min_classes}")
        if self.max_compression_ratio < 1:
            raise ConfigError(f"IngestLimits.max_compression_ratio must be >= 1, got "
                              f"{self.max_compression_ratio}")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"IngestLimits.test_fraction must be in (0, 1), got {self.test_fraction}")


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


@dataclass
class _Member:
    """A regular file of the archive, its bytes already in the temp directory."""

    name: str  # normalised relative path inside the archive
    path: Path
    digest: bytes  # sha256 of the bytes


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
    _check_content_type(content_type)
    archive_bytes = upload.stat().st_size
    if archive_bytes > limits.max_archive_bytes:
        raise DatasetTooLarge(f"the upload is {archive_bytes} bytes, more than the limit of "
                              f"{limits.max_archive_bytes}; split the dataset or downscale its images")
    kind = _detect_archive(upload)
    store_root.mkdir(parents=True, exist_ok=True)
    work = store_root / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    work.mkdir()
    try:
        raw, built = work / "raw", work / "dataset"
        raw.mkdir()
        budget = _Budget(limits, archive_bytes)
        if kind == "zip":
            files, dirs = _extract_zip(upload, raw, budget)
        else:
            files, dirs = _extract_tar(upload, raw, budget, gzipped=kind == "tar.gz")
        entries, split = _assign_layout(files, dirs, limits)
        info = _build(entries, split, built, limits, filename)
        return _publish(built, store_root, info)
    finally:
        shutil.rmtree(work, ignore_errors=True)


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


def remove_stale_temp_dirs(store_root: Path, older_than_s: float = 3600.0) -> int:
    """Remove ``.tmp-*`` directories a killed process left behind; returns how many.

    Call it at start-up; ``older_than_s`` must exceed the longest ingestion, since a directory
    still being filled looks the same.
    """
    store_root = Path(store_root)
    if not store_root.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for entry in store_root.iterdir():
        try:
            stale = entry.name.startswith(_TMP_PREFIX) and entry.stat().st_mtime < cutoff
        except FileNotFoundError:  # its owner finished meanwhile
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


# ---------------------------------------------------------------------------------------------
# reading archives


def _check_content_type(content_type: str | None) -> None:
    if content_type is None:
        return
    base = content_type.split(";", 1)[0].strip().lower()
    if base and base not in ARCHIVE_CONTENT_TYPES:
        raise UnsupportedUpload(f"content type '{base}' is not an archive; upload a .zip, .tar, .tar.gz "
                                f"or .tgz file (application/zip, application/x-tar or application/gzip)")


def _detect_archive(upload: Path) -> str:
    with open(upload, "rb") as fh:
        head = fh.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[257:262] == b"ustar":
        return "tar"
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(upload, "rb") as gz:
                inner = gz.read(512)
        except (OSError, EOFError, zlib.error) as exc:
            raise UnsupportedUpload(f"the upload looks gzip-compressed but cannot be read ({exc}); "
                                    f"upload a valid .tar.gz") from exc
        if inner[257:262] == b"ustar":
            return "tar.gz"
        raise UnsupportedUpload("the upload is gzip-compressed but does not contain a tar archive; "
                                "upload a .zip or a .tar/.tar.gz of the image folders")
    raise UnsupportedUpload(f"the upload is not a zip or tar archive (it starts with {head[:8]!r}); "
                            f"upload a .zip, .tar, .tar.gz or .tgz of the image folders")


class _Budget:
    """Byte, file-count and expansion caps, counted on bytes as they are decompressed."""

    def __init__(self, limits: IngestLimits, archive_bytes: int):
        self.limits = limits
        self.max_expanded = max(int(limits.max_compression_ratio * archive_bytes), _RATIO_FLOOR_BYTES)
        self.entries = 0
        self.total = 0

    def entry(self, name: str) -> None:
        self.entries += 1
        if self.entries > self.limits.max_files:
            raise DatasetTooLarge(f"the archive has more than {self.limits.max_files} entries (stopped "
                                  f"at '{name}'); split the dataset into smaller uploads")

    def declared(self, name: str, size: int) -> None:
        if size > self.limits.max_file_bytes:
            raise DatasetTooLarge(f"'{name}' is {size} bytes, more than the per-file limit of "
                                  f"{self.limits.max_file_bytes}; downscale or remove it")

    def add(self, name: str, file_bytes: int, chunk: int) -> None:
        """Count ``chunk`` more decompressed bytes; ``file_bytes`` of ``name`` so far."""
        self.total += chunk
        self.declared(name, file_bytes)
        self.expanded(name, self.total)

    def expanded(self, name: str, total: int) -> None:
        if total > self.limits.max_total_bytes:
            raise DatasetTooLarge(f"the archive expands to more than {self.limits.max_total_bytes} bytes "
                                  f"(stopped at '{name}'); split the dataset into smaller uploads")
        if total > self.max_expanded:
            self.bomb(f"the archive expands more than {self.limits.max_compression_ratio:g} times its "
                      f"size (stopped at '{name}')")

    def bomb(self, what: str) -> None:
        raise DatasetTooLarge(f"{what}: a compression bomb or highly compressible filler; images "
                              f"compress little, so remove the padding or filler files")


def _safe_name(raw: str) -> str:
    """The member's relative path, normalised; raises on anything that could escape."""
    name = raw.replace("\\", "/")
    if any(ord(c) < 32 for c in name):
        raise UnsafeArchive(f"member {raw!r} has control characters in its name; rename it")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchive(f"member '{raw}' has an absolute path; archive the folder with relative "
                            f"paths (e.g. `cd parent && zip -r data.zip folder`)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"member '{raw}' has a '..' path component, which would escape the "
                            f"dataset directory; re-create the archive with plain relative paths")
    return unicodedata.normalize("NFC", "/".join(parts))


def _is_junk(name: str) -> bool:
    """macOS resource forks, hidden files and folders, Windows thumbnails: skipped silently."""
    parts = name.split("/")
    return parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts) or parts[-1].lower() in _JUNK_FILES


def _write_capped(src, dest: Path, name: str, budget: _Budget) -> _Member:
    digest = hashlib.sha256()
    size = 0
    with open(dest, "xb") as out:
        while chunk := src.read(_CHUNK):
            size += len(chunk)
            budget.add(name, size, len(chunk))
            digest.update(chunk)
            out.write(chunk)
    return _Member(name, dest, digest.digest())


def _zip_entry_count(upload: Path) -> int | None:
    """Entries the end-of-central-directory record announces, read before ZipFile builds one
    object per entry (a small archive can announce millions)."""
    with open(upload, "rb") as fh:
        endrec = zipfile._EndRecData(fh)  # noqa: SLF001 - stable since Python 2, no public equivalent
    return endrec[zipfile._ECD_ENTRIES_TOTAL] if endrec else None  # noqa: SLF001


def _extract_zip(upload: Path, raw: Path, budget: _Budget) -> tuple[dict[str, _Member], set[str]]:
    announced = _zip_entry_count(upload)
    if announced is not None and announced > budget.limits.max_files:
        raise DatasetTooLarge(f"the zip has {announced} entries, more than the limit of "
                              f"{budget.limits.max_files}; split the dataset into smaller uploads")
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise UnsupportedUpload(f"the zip archive cannot be read ({exc}); re-create it") from exc
    files: dict[str, _Member] = {}
    dirs: set[str] = set()
    with archive:
        infos = archive.infolist()
        seen: set[str] = set()
        declared_total = 0
        for info in infos:  # headers first: refuse before extracting a single byte
            budget.entry(info.filename)
            name = _safe_name(info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind == stat.S_IFLNK:
                raise UnsafeArchive(f"member '{info.filename}' is a symbolic link; archive the file it "
                                    f"points to instead (zip without --symlinks)")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeArchive(f"member '{info.filename}' is not a regular file (a device, FIFO or "
                                    f"socket); remove it from the archive")
            if info.flag_bits & 0x1:
                raise DatasetError(f"member '{info.filename}' is encrypted; upload an archive without "
                                   f"a password")
            if name in seen:
                raise DatasetError(f"member '{info.filename}' appears twice in the zip; re-create it")
            seen.add(name)
            budget.declared(info.filename, info.file_size)
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > _RATIO_FLOOR_BYTES and ratio > budget.limits.max_compression_ratio:
                budget.bomb(f"'{info.filename}' expands {ratio:.0f} times, more than the limit of "
                            f"{budget.limits.max_compression_ratio:g}")
            declared_total += info.file_size
            budget.expanded(info.filename, declared_total)
        for index, info in enumerate(infos):
            name = _safe_name(info.filename)
            if info.is_dir() or stat.S_IFMT(info.external_attr >> 16) == stat.S_IFDIR:
                if name and not _is_junk(name):
                    dirs.add(name)
                continue
            if not name or _is_junk(name):
                continue
            try:
                with archive.open(info) as src:
                    files[name] = _write_capped(src, raw / str(index), info.filename, budget)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as exc:
                raise DatasetError(f"member '{info.filename}' of the zip cannot be extracted ({exc}); "
                                   f"re-create the archive with deflate or no compression") from exc
    return files, dirs


class _CappedStream(io.RawIOBase):
    """A read-only view of a decompressed stream that stops past ``limit`` bytes (gzip bombs:
    tarfile would otherwise decompress member data it skips, and pax headers, uncounted)."""

    def __init__(self, inner, budget: _Budget, limit: int):
        self.inner, self.budget, self.limit, self.count = inner, budget, limit, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        want = self.limit + 1 - self.count
        size = want if size is None or size < 0 else min(size, want)
        data = self.inner.read(max(size, 0))
        self.count += len(data)
        if self.count > self.limit:
            self.budget.bomb(f"the gzip stream expands past {self.limit} bytes, more than "
                             f"{self.budget.limits.max_compression_ratio:g} times the upload or the byte caps")
        return data


def _extract_tar(upload: Path, raw: Path, budget: _Budget, *, gzipped: bool
                 ) -> tuple[dict[str, _Member], set[str]]:
    files: dict[str, _Member] = {}
    dirs: set[str] = set()
    limits = budget.limits
    # the tar stream carries 512-byte headers and padding besides the file bytes
    limit = min(budget.max_expanded, limits.max_total_bytes + 1024 * limits.max_files + _RATIO_FLOOR_BYTES)
    with open(upload, "rb") as fh:
        stream = _CappedStream(gzip.GzipFile(fileobj=fh) if gzipped else fh, budget, limit)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as archive:  # stream mode: one pass, no seeks
                for index, info in enumerate(archive):
                    budget.entry(info.name)
                    name = _safe_name(info.name)
                    if info.issym() or info.islnk():
                        kind = "symbolic" if info.issym() else "hard"
                        raise UnsafeArchive(f"member '{info.name}' is a {kind} link (to "
                                            f"'{info.linkname}'); archive the file itself instead "
                                            f"(tar --dereference)")
                    if info.ischr() or info.isblk() or info.isfifo():
                        raise UnsafeArchive(f"member '{info.name}' is a device or FIFO; remove it")
                    if info.isdir():
                        if name and not _is_junk(name):
                            dirs.add(name)
                        continue
                    if not info.isreg() or info.type == tarfile.GNUTYPE_SPARSE:
                        raise UnsafeArchive(f"member '{info.name}' is not a regular file (tar type "
                                            f"{info.type!r}); remove it")
                    budget.declared(info.name, info.size)
                    if not name or _is_junk(name):
                        continue
                    if name in files:
                        raise DatasetError(f"member '{info.name}' appears twice in the tar; re-create it")
                    src = archive.extractfile(info)
                    files[name] = _write_capped(src, raw / str(index), info.name, budget)
        except (tarfile.TarError, gzip.BadGzipFile, zlib.error, EOFError, OSError) as exc:
            raise DatasetError(f"the tar archive is corrupt or truncated ({exc}); re-create it") from exc
    return files, dirs


# ---------------------------------------------------------------------------------------------
# layout: which file is which class, in which split


def _strip_wrapper(files: dict[str, _Member], dirs: set[str]):
    """Drop one top-level folder that holds everything (zips made from a folder), unless its
    files sit directly in it without a manifest (then it is a class folder)."""
    tops = {n.split("/", 1)[0] for n in files} | {d.split("/", 1)[0] for d in dirs}
    if len(tops) != 1 or not files or any("/" not in n for n in files):
        return files, dirs
    top = tops.pop()
    if top in _SPLITS:  # a lone train/ is an incomplete explicit split, not a wrapper
        return files, dirs
    direct = [n for n in files if n.count("/") == 1]
    if direct and not any(n.split("/", 1)[1] in _MANIFESTS for n in direct):
        return files, dirs
    cut = len(top) + 1
    return ({n[cut:]: m for n, m in files.items()},
            {d[cut:] for d in dirs if d != top})


def _class_folder(label: str, where: str) -> str:
    folder = unicodedata.normalize("NFC", label.strip())
    if not folder or "/" in folder or "\\" in folder or folder.startswith(".") or \
            not class_name_from_folder(folder) or len(folder.encode()) > 200 or \
            any(ord(c) < 32 for c in folder):
        raise DatasetError(f"{where}: '{label}' is not a usable class name (non-empty, at most 200 "
                           f"UTF-8 bytes, no '/', not starting with '.'); rename it")
    return folder


def _assign_layout(files: dict[str, _Member], dirs: set[str], limits: IngestLimits):
    """[(split | None, class folder, member)] and the split kind ('explicit' or 'auto')."""
    files, dirs = _strip_wrapper(files, dirs)
    manifests = [m for m in _MANIFESTS if m in files]
    if len(manifests) > 1:
        raise DatasetError("the archive has both manifest.csv and manifest.jsonl; keep one")
    if manifests:
        return _from_manifest(files, manifests[0])
    top_files = sorted(n for n in files if "/" not in n)
    if top_files:
        raise DatasetError(f"'{top_files[0]}' is at the top level of the archive; images go in class "
                           f"folders (<class>/<image>, or train/<class>/ and test/<class>/), or are "
                           f"listed in a manifest.csv")
    tops = {n.split("/", 1)[0] for n in files} | {d.split("/", 1)[0] for d in dirs}
    split_tops = tops & set(_SPLITS)
    if split_tops:
        if tops == {"train"}:
            raise DatasetError("the archive has only a 'train/' folder; a train split without a test "
                               "split can never be evaluated: add test/<class>/ folders, or upload "
                               "the class folders alone for a seeded split")
        if tops not in ({"test"}, set(_SPLITS)):
            raise DatasetError(f"the archive has top-level folders {sorted(tops)}; an explicit split "
                               f"needs exactly 'train/' and 'test/' (or 'test/' alone, for a zero-shot "
                               f"suite), each with class folders; a seeded split needs only class "
                               f"folders")
        entries = []
        for split in (s for s in _SPLITS if s in split_tops):
            sub = {n[len(split) + 1:]: m for n, m in files.items() if n.startswith(split + "/")}
            subdirs = {d[len(split) + 1:] for d in dirs if d.startswith(split + "/")}
            entries += [(split, folder, m) for folder, m in _from_folders(sub, subdirs, f"{split}/")]
        return entries, "explicit"
    return [(None, folder, m) for folder, m in _from_folders(files, dirs, "")], "auto"


def _from_folders(files: dict[str, _Member], dirs: set[str], prefix: str):
    loose = sorted(n for n in files if "/" not in n)
    if loose:
        raise DatasetError(f"'{prefix}{loose[0]}' is not inside a class folder; move it into "
                           f"{prefix}<class>/")
    classes = {n.split("/", 1)[0] for n in files} | {d.split("/", 1)[0] for d in dirs}
    empty = sorted(c for c in classes if not any(n.startswith(c + "/") for n in files))
    if empty:
        raise DatasetError(f"class folder '{prefix}{empty[0]}' is empty; add images to it or remove it")
    out = []
    for name, member in files.items():
        folder = _class_folder(name.split("/", 1)[0], f"folder '{prefix}{name.split('/', 1)[0]}'")
        out.append((folder, member))
    return out


def _manifest_rows(member: _Member, manifest: str) -> list[tuple[int, dict]]:
    try:
        text = member.path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{manifest} is not UTF-8 text ({exc}); save it as UTF-8") from exc
    if manifest.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        columns = {c.strip().lower() for c in (reader.fieldnames or [])}
        if not {"path", "label"} <= columns:
            raise DatasetError(f"manifest.csv has columns {sorted(columns)}; it needs a header row "
                               f"with 'path' and 'label' (and optionally 'split')")
        return [(reader.line_num, {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()})
                for row in reader]
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DatasetError(f"manifest.jsonl line {number} is not JSON ({exc}); one object per line") from exc
        if not isinstance(row, dict):
            raise DatasetError(f"manifest.jsonl line {number} is not an object like "
                               f'{{"path": ..., "label": ..., "split": ...}}')
        rows.append((number, {k: (str(v).strip() if v is not None else "") for k, v in row.items()}))
    return rows


def _from_manifest(files: dict[str, _Member], manifest: str):
    rows = _manifest_rows(files[manifest], manifest)
    if not rows:
        raise DatasetError(f"{manifest} lists no images; add one row per image")
    has_split = [bool(row.get("split")) for _, row in rows]
    if any(has_split) and not all(has_split):
        line = rows[has_split.index(False)][0]
        raise DatasetError(f"{manifest} line {line} has no split while other rows do; fill 'split' "
                           f"(train or test) on every row or on none")
    entries, listed = [], set()
    for line, row in rows:
        where = f"{manifest} line {line}"
        if not row.get("path") or not row.get("label"):
            raise DatasetError(f"{where} needs both 'path' and 'label'")
        try:
            path = _safe_name(row["path"])
        except UnsafeArchive as exc:
            raise UnsafeArchive(f"{where}: {exc}") from exc
        if path not in files or path == manifest:
            raise DatasetError(f"{where}: '{row['path']}' is not in the archive; paths are relative to "
                               f"the folder holding {manifest}")
        if path in listed:
            raise DatasetError(f"{where}: '{row['path']}' is listed twice; list each image once")
        listed.add(path)
        split = row.get("split", "").lower() or None
        if split not in (None, *_SPLITS):
            raise DatasetError(f"{where}: split '{row['split']}' must be 'train' or 'test'")
        folder = _class_folder(row["label"].replace(" ", "_"), where)
        entries.append((split, folder, files[path]))
    unlisted = sorted(set(files) - listed - {manifest})
    if unlisted:
        raise DatasetError(f"'{unlisted[0]}' is in the archive but not in {manifest} "
                           f"({len(unlisted)} such file(s)); list it or remove it")
    if all(has_split) and not any(split == "test" for split, _, _ in entries):
        raise DatasetError(f"every row of {manifest} has split 'train'; a train split without a test "
                           f"split can never be evaluated: mark some rows 'test', or leave 'split' "
                           f"empty on every row for a seeded split")
    return entries, ("explicit" if all(has_split) else "auto")


# ---------------------------------------------------------------------------------------------
# validation, split, normalised directory


def _image_suffix(member: _Member, limits: IngestLimits) -> str:
    """Decode the image fully; returns the suffix of its real format."""
    what = f"'{member.name}'"
    fix = "replace it with a JPEG, PNG, WebP, GIF, BMP or TIFF image, or remove it"

    def too_large(size: str, limit: int) -> DatasetTooLarge:
        return DatasetTooLarge(f"{what} has {size}, more than the limit of {limit}; downscale it")

    try:
        with open_capped(member.path, max_pixels=limits.max_image_pixels, too_large=too_large,
                         formats=_OPEN_FORMATS) as image:
            fmt = image.format
            image.verify()
        with Image.open(member.path, formats=_OPEN_FORMATS) as image:  # verify() spent the first
            image.load()
    except UnidentifiedImageError as exc:
        raise DatasetError(f"{what} is not an image (only images and a manifest may be in the "
                           f"archive); {fix}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{what} is truncated or corrupt ({exc}); {fix}") from exc
    return _SUFFIX_BY_FORMAT[fmt]


def _min_auto_total(limits: IngestLimits) -> int:
    n = limits.min_images_per_class + 1
    while n - max(1, round(n * limits.test_fraction)) < limits.min_images_per_class:
        n += 1
    return n


def _split_auto(digests: list[bytes], limits: IngestLimits) -> tuple[list[bytes], list[bytes]]:
    """Per class: order by sha256(seed, image digest), the first share is the test split. Depends
    only on the seed and the images, not on archive order or on the other classes."""
    seed = str(limits.split_seed).encode()
    order = sorted(digests, key=lambda d: hashlib.sha256(seed + b":" + d).digest())
    n_test = max(1, round(len(order) * limits.test_fraction))
    return order[n_test:], order[:n_test]


def _group(entries) -> tuple[dict, int, int]:
    """{(split, folder): {digest: member}}; identical images in one class are merged, in two
    classes refused."""
    groups: dict[tuple, dict[bytes, _Member]] = defaultdict(dict)
    label_of: dict[bytes, tuple[str, str]] = {}
    merged = 0
    for split, folder, member in entries:
        first = label_of.setdefault(member.digest, (folder, member.name))
        if first[0] != folder:
            raise DatasetError(f"'{first[1]}' (class '{first[0]}') and '{member.name}' (class '{folder}') "
                               f"are the same image with two labels; keep one")
        bucket = groups[(split, folder)]
        if member.digest in bucket:
            merged += 1
            logger.warning("'%s' duplicates '%s'; keeping one", member.name, bucket[member.digest].name)
        bucket.setdefault(member.digest, member)
    overlap = 0
    if any(split == "test" for split, _ in groups):
        for (split, folder), bucket in groups.items():
            if split == "test":
                overlap += len(bucket.keys() & groups.get(("train", folder), {}).keys())
    return groups, merged, overlap


def _plan(entries, split_kind: str, limits: IngestLimits) -> tuple[dict, int, int]:
    """{split: {folder: [members]}} after the class rules and the split."""
    groups, merged, overlap = _group(entries)
    folders = sorted({folder for _, folder in groups})
    names = [class_name_from_folder(f) for f in folders]
    if len(folders) < limits.min_classes:
        raise DatasetError(f"found {len(folders)} class(es) ({', '.join(repr(n) for n in names)}); a "
                           f"dataset needs at least {limits.min_classes}: one folder (or label) per class")
    clash = [n for n in set(names) if names.count(n) > 1]
    if clash:
        raise DatasetError(f"class folders {[f for f in folders if class_name_from_folder(f) == clash[0]]} "
                           f"all read as class '{clash[0]}' ('_' reads as a space); rename one")
    plan = {s: {} for s in _SPLITS}
    # a bare test/ upload: every image is a test image, so the train rules do not apply
    test_only = split_kind == "explicit" and not any(split == "train" for split, _ in groups)
    for folder in folders:
        if split_kind == "auto":
            bucket = groups[(None, folder)]
            if len(bucket) < _min_auto_total(limits):
                raise DatasetError(f"class '{folder}' has {len(bucket)} distinct image(s); the automatic "
                                   f"split needs at least {_min_auto_total(limits)} per class "
                                   f"({limits.min_images_per_class} to train on, 1 to test); add images")
            train, test = _split_auto(list(bucket), limits)
            plan["train"][folder] = [bucket[d] for d in train]
            plan["test"][folder] = [bucket[d] for d in test]
            continue
        train, test = groups.get(("train", folder), {}), groups.get(("test", folder), {})
        if len(train) < limits.min_images_per_class and not test_only:
            raise DatasetError(f"class '{folder}' has {len(train)} training image(s); each class needs at "
                               f"least {limits.min_images_per_class} in train/; add images")
        if not test:
            raise DatasetError(f"class '{folder}' has no test images; add at least one to test/{folder}/")
        plan["train"][folder] = list(train.values())
        plan["test"][folder] = list(test.values())
    return plan, merged, overlap


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _build(entries, split_kind: str, built: Path, limits: IngestLimits, filename: str) -> dict:
    """Write the normalised tree into ``built`` and return its dataset.json content."""
    suffix: dict[bytes, str] = {}
    for _, _, member in entries:  # decode first, so a non-image is named as such
        if member.digest not in suffix:
            suffix[member.digest] = _image_suffix(member, limits)
    plan, merged, overlap = _plan(entries, split_kind, limits)
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
    # folder: each fsync is a journal commit, and they made ingestion 2-3x slower (README-ingest).
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
    _fsync_dir(store_root)
    logger.info("stored dataset %s: %d classes, %d train / %d test images", info["dataset_id"],
                len(info["classnames"]), sum(info["train_counts"].values()), sum(info["test_counts"].values()))
    return read_dataset(final)
