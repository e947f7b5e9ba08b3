"""Archive safety: the declared content type, the archive kind (from the bytes), and the
extraction of zip and tar members, streamed under byte, file-count and compression-ratio budgets
into files named by a counter. Every member name is checked before anything is written.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import stat
import tarfile
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from zscl_core.errors import ConfigError, DatasetError

from ..errors import DatasetTooLarge, UnsafeArchive, UnsupportedUpload

MiB = 1 << 20

#: Declared content types an upload may carry (None, i.e. not declared, is accepted too); the
#: reader is chosen from the bytes, never from this or the file name.
ARCHIVE_CONTENT_TYPES = frozenset({
    "application/zip", "application/x-zip", "application/x-zip-compressed", "multipart/x-zip",
    "application/x-tar", "application/x-gtar", "application/gzip", "application/x-gzip",
    "application/x-compressed-tar", "application/x-tgz", "application/octet-stream",
})

_JUNK_FILES = frozenset({"thumbs.db", "desktop.ini"})
# Below this many expanded bytes the ratio cap does not apply: tiny archives (a tar's zero
# padding, a short manifest) compress far better than images do, and cannot hurt anyone.
_RATIO_FLOOR_BYTES = MiB
_CHUNK = MiB


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


@dataclass
class Member:
    """A regular file of the archive, its bytes already in the temp directory."""

    name: str  # normalised relative path inside the archive
    path: Path
    digest: bytes  # sha256 of the bytes


# ---------------------------------------------------------------------------------------------
# reading archives


def check_content_type(content_type: str | None) -> None:
    """Refuse an upload whose declared content type is not an archive (none declared passes)."""
    if content_type is None:
        return
    base = content_type.split(";", 1)[0].strip().lower()
    if base and base not in ARCHIVE_CONTENT_TYPES:
        raise UnsupportedUpload(f"content type '{base}' is not an archive; upload a .zip, .tar, .tar.gz "
                                f"or .tgz file (application/zip, application/x-tar or application/gzip)")


def detect_archive(upload: Path) -> str:
    """The upload's archive format from its first bytes (zip, tar or gzipped tar); refuses any other."""
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


class Budget:
    """Byte, file-count and expansion caps, counted on bytes as they are decompressed."""

    def __init__(self, limits: IngestLimits, archive_bytes: int):
        self.limits = limits
        self.max_expanded = max(int(limits.max_compression_ratio * archive_bytes), _RATIO_FLOOR_BYTES)
        self.entries = 0
        self.total = 0

    def entry(self, name: str) -> None:
        """Count one more archive entry; refuses an archive with too many."""
        self.entries += 1
        if self.entries > self.limits.max_files:
            raise DatasetTooLarge(f"the archive has more than {self.limits.max_files} entries (stopped "
                                  f"at '{name}'); split the dataset into smaller uploads")

    def declared(self, name: str, size: int) -> None:
        """Refuse a member whose declared size is over the per-file limit."""
        if size > self.limits.max_file_bytes:
            raise DatasetTooLarge(f"'{name}' is {size} bytes, more than the per-file limit of "
                                  f"{self.limits.max_file_bytes}; downscale or remove it")

    def add(self, name: str, file_bytes: int, chunk: int) -> None:
        """Count ``chunk`` more decompressed bytes; ``file_bytes`` of ``name`` so far."""
        self.total += chunk
        self.declared(name, file_bytes)
        self.expanded(name, self.total)

    def expanded(self, name: str, total: int) -> None:
        """Refuse an archive that expands past the total limit or the compression ratio."""
        if total > self.limits.max_total_bytes:
            raise DatasetTooLarge(f"the archive expands to more than {self.limits.max_total_bytes} bytes "
                                  f"(stopped at '{name}'); split the dataset into smaller uploads")
        if total > self.max_expanded:
            self.bomb(f"the archive expands more than {self.limits.max_compression_ratio:g} times its "
                      f"size (stopped at '{name}')")

    def bomb(self, what: str) -> None:
        """Refuse the archive as a compression bomb, saying ``what`` gave it away."""
        raise DatasetTooLarge(f"{what}: a compression bomb or highly compressible filler; images "
                              f"compress little, so remove the padding or filler files")


def safe_name(raw: str) -> str:
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


def _write_capped(src, dest: Path, name: str, budget: Budget) -> Member:
    digest = hashlib.sha256()
    size = 0
    with open(dest, "xb") as out:
        while chunk := src.read(_CHUNK):
            size += len(chunk)
            budget.add(name, size, len(chunk))
            digest.update(chunk)
            out.write(chunk)
    return Member(name, dest, digest.digest())


def _zip_entry_count(upload: Path) -> int | None:
    """Entries the end-of-central-directory record announces, read before ZipFile builds one
    object per entry (a small archive can announce millions)."""
    with open(upload, "rb") as fh:
        endrec = zipfile._EndRecData(fh)  # noqa: SLF001 - stable since Python 2, no public equivalent
    return endrec[zipfile._ECD_ENTRIES_TOTAL] if endrec else None  # noqa: SLF001


def extract_zip(upload: Path, raw: Path, budget: Budget) -> tuple[dict[str, Member], set[str]]:
    """Extract a zip upload into ``raw`` within ``budget``; its files and folders."""
    announced = _zip_entry_count(upload)
    if announced is not None and announced > budget.limits.max_files:
        raise DatasetTooLarge(f"the zip has {announced} entries, more than the limit of "
                              f"{budget.limits.max_files}; split the dataset into smaller uploads")
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise UnsupportedUpload(f"the zip archive cannot be read ({exc}); re-create it") from exc
    files: dict[str, Member] = {}
    dirs: set[str] = set()
    with archive:
        infos = archive.infolist()
        seen: set[str] = set()
        declared_total = 0
        for info in infos:  # headers first: refuse before extracting a single byte
            budget.entry(info.filename)
            name = safe_name(info.filename)
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
            name = safe_name(info.filename)
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

    def __init__(self, inner, budget: Budget, limit: int):
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


def extract_tar(upload: Path, raw: Path, budget: Budget, *, gzipped: bool
                 ) -> tuple[dict[str, Member], set[str]]:
    """Extract a (gzipped) tar upload into ``raw`` within ``budget``; its files and folders."""
    files: dict[str, Member] = {}
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
                    name = safe_name(info.name)
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
