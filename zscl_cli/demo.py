"""``zscl demo``: the three files the README's tour uses, written from data on this machine.

- ``cat.jpg``: scikit-image's ``chelsea`` photo (a cat), to classify;
- ``clothes.zip``: a labelled dataset to learn, in the ``<class>/<image>`` layout that
  ``POST /v1/datasets`` splits by itself: a few Fashion-MNIST classes, N test images of each,
  from Debian's ``dataset-fashion-mnist``;
- ``suite.zip``: a zero-shot evaluation suite, ``test/<class>/<image>`` (never trained on): CIFAR-10
  test photos from ``../shared/data/cifar10-subset.tar`` where that file is, else seeded crops of
  scikit-image's sample photos.

Every choice is seeded and every zip member has a fixed date, so the same sources give
byte-identical files (and so the same dataset ids) on every run.
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["DEFAULT_CLOTHES_CLASSES", "FASHION_CLASSES", "PHOTO_CLASSES", "Written", "add_demo",
           "suite_source", "write_cat", "write_clothes", "write_suite"]

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_PACKAGE = "dataset-fashion-mnist"
# the labels of Fashion-MNIST's idx files, in order (zscl_bench.tasks.FASHION_CLASSES too)
FASHION_CLASSES = ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                   "bag", "ankle boot"]
# five classes that look unlike each other: the starter reads them poorly (47%), and a 40-step
# job learns them (77%; the README tour)
DEFAULT_CLOTHES_CLASSES = ("T-shirt", "trouser", "dress", "sneaker", "bag")
# where zscl_bench and the tests look for it: ``shared/data`` next to the repository
CIFAR_TAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset.tar"
# the fallback suite: scikit-image's sample photos (files in skimage/data/), one class each
PHOTO_CLASSES = {"cat": ("chelsea.png",), "cup of coffee": ("coffee.png",),
                 "rocket": ("rocket.jpg",), "astronaut": ("astronaut.png",),
                 "motorcycle": ("motorcycle_left.png", "motorcycle_right.png"),
                 "horse": ("horse.png",)}
PHOTO_CROP_SIZE = 64
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # zip's earliest: no clock in the bytes


@dataclass
class Written:
    """One file the demo wrote: its classes (in folder-name order) and images per class."""

    path: Path
    counts: dict[str, int]
    layout: str
    source: str
    note: str = ""


def _zip(path: Path, files: dict[str, bytes]) -> None:
    """Stored, not deflated: PNG and JPEG are compressed already."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name in sorted(files):
            archive.writestr(zipfile.ZipInfo(name, date_time=ZIP_DATE), files[name])


def _folder(classname: str) -> str:
    return classname.replace(" ", "_")  # ingestion reads "_" in a folder name as a space


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def write_cat(path: Path) -> Written:
    """scikit-image's ``chelsea`` photo as a JPEG."""
    from skimage import data
    image = Image.fromarray(data.chelsea())
    path.write_bytes(_encode(image, "JPEG"))
    return Written(path, {"cat": 1}, f"a {image.width}x{image.height} JPEG",
                   "scikit-image's sample photo 'chelsea' (a cat)")


def _read_idx(path: Path) -> np.ndarray:
    """The array in a gzipped IDX file. The same reader as ``zscl_bench.tasks.read_idx``, kept
    here because importing that module loads torch (about 9 s cold here), which `zscl demo`
    does not otherwise need."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(f">{dims}I", data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _fashion_files(root: Path) -> tuple[Path, Path]:
    images, labels = root / "t10k-images-idx3-ubyte.gz", root / "t10k-labels-idx1-ubyte.gz"
    if not (images.is_file() and labels.is_file()):
        raise SystemExit(f"Fashion-MNIST is not in {root}: install Debian's package with "
                         f"`sudo apt-get install {FASHION_PACKAGE}` (or pass --fashion-mnist DIR "
                         f"holding t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz)")
    return images, labels


def write_clothes(path: Path, root: Path, classes: list[str], per_class: int, seed: int) -> Written:
    """``per_class`` seeded Fashion-MNIST test images of each class, as ``<class>/<n>.png``."""
    images_file, labels_file = _fashion_files(root)
    images, labels = _read_idx(images_file), _read_idx(labels_file)
    rng = np.random.default_rng(seed)
    files, counts = {}, {}
    for name in sorted(classes, key=_folder):
        where = np.flatnonzero(labels == FASHION_CLASSES.index(name))
        chosen = np.sort(rng.permutation(where)[:per_class])
        for index in chosen:
            files[f"{_folder(name)}/{index:05d}.png"] = _encode(Image.fromarray(images[index]), "PNG")
        counts[name] = len(chosen)
    _zip(path, files)
    return Written(path, counts, "<class>/<image>.png, 28x28 greyscale; the server holds out a "
                   "seeded fifth of each class for the gate",
                   f"Fashion-MNIST's test split ({root}, Debian package {FASHION_PACKAGE})")


def _cifar_test_images(tar_path: Path, per_class: int, seed: int) -> dict[str, dict[str, bytes]]:
    """class -> {file name: JPEG bytes}: ``per_class`` seeded picks from ``cifar10/test/``."""
    with tarfile.open(tar_path) as archive:
        members: dict[str, list[tarfile.TarInfo]] = {}
        for member in archive.getmembers():
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and parts[:2] == ["cifar10", "test"]:
                members.setdefault(parts[2], []).append(member)
        rng = np.random.default_rng(seed)
        picked = {}
        for folder in sorted(members):
            ordered = sorted(members[folder], key=lambda m: m.name)
            chosen = sorted(rng.permutation(len(ordered))[:per_class])
            picked[folder] = {Path(ordered[i].name).name: archive.extractfile(ordered[i]).read()
                              for i in chosen}
    if not picked:
        raise SystemExit(f"{tar_path} holds no cifar10/test/<class>/<image> files; pass "
                         f"--suite-source photos, or a CIFAR-10 export in that layout")
    return picked


def _photo(name: str) -> Image.Image:
    import skimage.data
    with Image.open(Path(skimage.data.__file__).parent / name) as image:
        return image.convert("RGB")


def _crop(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A seeded random crop (35-100 % of the area, aspect 3:4 to 4:3, maybe mirrored), small."""
    w, h = photo.size
    area = rng.uniform(0.35, 1.0) * w * h
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw, ch = min(w, round(math.sqrt(area * aspect))), min(h, round(math.sqrt(area / aspect)))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = photo.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop.resize((PHOTO_CROP_SIZE, PHOTO_CROP_SIZE), Image.Resampling.BILINEAR)


def _photo_crops(per_class: int, seed: int) -> dict[str, dict[str, bytes]]:
    rng = np.random.default_rng(seed)
    picked = {}
    for classname in sorted(PHOTO_CLASSES, key=_folder):
        photos = [_photo(name) for name in PHOTO_CLASSES[classname]]
        picked[_folder(classname)] = {f"{i:03d}.jpg": _encode(_crop(photos[i % len(photos)], rng), "JPEG")
                                      for i in range(per_class)}
    return picked


def suite_source(requested: str, cifar_tar: Path) -> str:
    """"cifar10" or "photos": ``requested``, with "auto" meaning CIFAR-10 where its archive is."""
    if requested == "auto":
        return "cifar10" if cifar_tar.is_file() else "photos"
    if requested == "cifar10" and not cifar_tar.is_file():
        raise SystemExit(f"no CIFAR-10 archive at {cifar_tar}: pass --cifar10 TAR, or "
                         f"--suite-source photos for a suite from scikit-image's photos")
    return requested


def write_suite(path: Path, source: str, cifar_tar: Path, per_class: int, seed: int,
                fallback: bool = False) -> Written:
    """A zero-shot suite as ``test/<class>/<image>``: CIFAR-10 test photos from ``cifar_tar``
    (``source`` "cifar10") or crops of scikit-image's photos ("photos"; ``fallback``: for want
    of ``cifar_tar``)."""
    if source == "cifar10":
        picked = _cifar_test_images(cifar_tar, per_class, seed)
        where, note = f"CIFAR-10's test split ({cifar_tar})", ""
    else:
        picked = _photo_crops(per_class, seed)
        where = "seeded crops of scikit-image's sample photos"
        note = (f"not CIFAR-10: there is no {cifar_tar}. " if fallback else "") + \
            ("ZSCL distils on these photos by default (ZSCL_REFERENCE_IMAGES=photos), so this "
             "suite flatters retention")
    _zip(path, {f"test/{folder}/{name}": data for folder, files in picked.items()
                for name, data in files.items()})
    counts = {folder.replace("_", " "): len(files) for folder, files in picked.items()}
    return Written(path, counts, "test/<class>/<image>.jpg: a suite, scored on every image", where,
                   note)


def _report(written: list[Written], out: Path) -> None:
    print(f"wrote {len(written)} files to {out.resolve()}:")
    for item in written:
        total = sum(item.counts.values())
        if total == 1:  # one image: what it is is enough
            print(f"  {item.path.name}: {item.layout}, {item.source}")
            continue
        sizes = sorted(set(item.counts.values()))
        per = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
        print(f"  {item.path.name}: {len(item.counts)} classes x {per} images = {total}")
        print(f"    classes: {', '.join(item.counts)}")
        print(f"    layout: {item.layout}")
        print(f"    source: {item.source}")
        if item.note:
            print(f"    note: {item.note}")


def cmd_demo(args) -> int:
    """Write the tour's three files and say what each holds and where it came from."""
    out = Path(args.out)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    unknown = [c for c in classes if c not in FASHION_CLASSES]
    if unknown or not classes:
        raise SystemExit(f"--classes: unknown {unknown or 'empty list'}; Fashion-MNIST's classes "
                         f"are {', '.join(FASHION_CLASSES)}")
    if not 2 <= args.per_class <= 1000 or not 2 <= args.suite_per_class <= 1000:
        raise SystemExit("--per-class and --suite-per-class must be in 2..1000 (a dataset needs "
                         "2 images per class; a class of Fashion-MNIST's or CIFAR-10's test split "
                         "has 1,000)")
    # the errors to fix come before anything is written
    _fashion_files(Path(args.fashion_mnist))
    source = suite_source(args.suite_source, Path(args.cifar10))
    out.mkdir(parents=True, exist_ok=True)
    written = [write_cat(out / "cat.jpg"),
               write_clothes(out / "clothes.zip", Path(args.fashion_mnist), classes, args.per_class,
                          args.seed),
               write_suite(out / "suite.zip", source, Path(args.cifar10), args.suite_per_class,
                           args.seed, fallback=source != args.suite_source)]
    _report(written, out)
    return 0


def add_demo(subparsers) -> None:
    """The ``zscl demo`` subcommand: the README tour's data from what installs by name."""
    p = subparsers.add_parser("demo", help="write the README tour's files: cat.jpg, clothes.zip, "
                                           "suite.zip")
    p.add_argument("--out", default=".", help="the folder to write them in (default: here)")
    p.add_argument("--classes", default=",".join(DEFAULT_CLOTHES_CLASSES),
                   help=f"Fashion-MNIST classes in clothes.zip (default {','.join(DEFAULT_CLOTHES_CLASSES)})")
    p.add_argument("--per-class", type=int, default=100, help="images per class in clothes.zip (100)")
    p.add_argument("--suite-per-class", type=int, default=30,
                   help="images per class in suite.zip (30)")
    p.add_argument("--suite-source", choices=["auto", "cifar10", "photos"], default="auto",
                   help="suite.zip from CIFAR-10 (--cifar10) or scikit-image's photos; auto: "
                        "CIFAR-10 where its archive is")
    p.add_argument("--cifar10", default=str(CIFAR_TAR),
                   help="cifar10-subset.tar (cifar10/test/<class>/*.jpg; default: "
                        "shared/data/ next to the repository)")
    p.add_argument("--fashion-mnist", default=str(FASHION_DIR),
                   help=f"the folder of Fashion-MNIST's idx files (default {FASHION_DIR})")
    p.add_argument("--seed", type=int, default=0, help="seeds every choice (0)")
    p.set_defaults(func=cmd_demo)
