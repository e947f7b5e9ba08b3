"""Layout: which extracted file is which class, in which split. Strips a wrapper folder, reads
class folders or a manifest (csv or jsonl), decodes every image, and plans the train/test split
(kept when explicit, seeded and per class when automatic).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import unicodedata
from collections import defaultdict

from PIL import Image, UnidentifiedImageError

from zscl_core.data import class_name_from_folder, open_capped
from zscl_core.errors import DatasetError

from ..errors import DatasetTooLarge, UnsafeArchive
from .archive import IngestLimits, Member, safe_name

logger = logging.getLogger(__name__)

# Pillow formats we decode, and the suffix a stored image gets (one zscl_core.scan_image_folder
# reads). A fixed list keeps Pillow away from plugins that shell out (EPS) or are rarely audited.
_SUFFIX_BY_FORMAT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif",
                     "BMP": ".bmp", "TIFF": ".tiff"}
_OPEN_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # the JPEG opener yields MPO too
_MANIFESTS = ("manifest.csv", "manifest.jsonl")
_SPLITS = ("train", "test")


# ---------------------------------------------------------------------------------------------
# layout: which file is which class, in which split


def _strip_wrapper(files: dict[str, Member], dirs: set[str]):
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


def assign_layout(files: dict[str, Member], dirs: set[str], limits: IngestLimits):
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


def _from_folders(files: dict[str, Member], dirs: set[str], prefix: str):
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


def _manifest_rows(member: Member, manifest: str) -> list[tuple[int, dict]]:
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


def _from_manifest(files: dict[str, Member], manifest: str):
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
            path = safe_name(row["path"])
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
# image validation, the split


def image_suffix(member: Member, limits: IngestLimits) -> str:
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
    groups: dict[tuple, dict[bytes, Member]] = defaultdict(dict)
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


def plan_splits(entries, split_kind: str, limits: IngestLimits) -> tuple[dict, int, int]:
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
