"""Dataset files for the tests: encoded images, class folders, zip and tar archives (good and
hostile), reference-image folders, and uploads into a records store."""

from __future__ import annotations

import io
import tarfile
import zipfile
import zlib
from pathlib import Path

from PIL import Image

from records.datasets import add_dataset
from tests.helpers.synthetic import colour_task, reference_images, stripe_task


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def colour_files(n_per_class: int = 5, seed: int = 0, prefix: str = "", fmt: str = "PNG") -> dict[str, bytes]:
    """The colour task as {"<prefix><colour>/<i>.png": bytes}: class folders."""
    items, labels, names = colour_task(n_per_class, seed)
    suffix = ".png" if fmt == "PNG" else ".jpg"
    return {f"{prefix}{names[label]}/{index}{suffix}": encode(image, fmt)
            for index, (image, label) in enumerate(zip(items, labels))}


def stripe_files(split: str, n_per_class: int, seed: int) -> dict[str, bytes]:
    """The stripe task as {"<split>/<pattern>/<i>.png": bytes}: a train or test split folder."""
    items, labels, names = stripe_task(n_per_class, seed)
    return {f"{split}/{names[label].replace(' ', '_')}/{index}.png": encode(image)
            for index, (image, label) in enumerate(zip(items, labels))}


def zip_bytes(files: dict[str, bytes], extra: list[tuple[zipfile.ZipInfo, bytes]] = ()) -> bytes:
    """A deflated zip of ``files``, then of the ``extra`` (info, data) members as they are."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        for info, data in extra:
            archive.writestr(info, data)
    return buf.getvalue()


def write_zip(path, files: dict[str, bytes], extra: list[tuple[zipfile.ZipInfo, bytes]] = ()):
    Path(path).write_bytes(zip_bytes(files, extra))
    return path


def write_tar(path, files: dict[str, bytes], extra: list[tarfile.TarInfo] = (), mode: str = "w:gz"):
    with tarfile.open(path, mode) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info in extra:
            archive.addfile(info)
    return path


def zip_info(name: str, mode: int) -> zipfile.ZipInfo:
    """A zip member whose Unix mode (file type and permissions) is ``mode``."""
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


def tar_info(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def huge_png(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""
    data = encode(Image.new("L", (1, 1)))
    ihdr = bytearray(data[16:29])
    ihdr[0:4], ihdr[4:8] = width.to_bytes(4, "big"), height.to_bytes(4, "big")
    crc = zlib.crc32(b"IHDR" + bytes(ihdr)).to_bytes(4, "big")
    return data[:16] + bytes(ihdr) + crc + data[33:]


def zip_of(items, labels, names) -> bytes:
    """A labelled task as a zip of class folders (spaces in class names become underscores)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (image, label) in enumerate(zip(items, labels)):
            png = io.BytesIO()
            image.save(png, format="PNG")
            zf.writestr(f"{names[label].replace(' ', '_')}/{i:04d}.png", png.getvalue())
    return buf.getvalue()


def stripes_zip(n=30, seed=3) -> bytes:
    return zip_of(*stripe_task(n, seed=seed))


def colours_zip(n=20, seed=7) -> bytes:
    return zip_of(*colour_task(n, seed=seed))


def write_task_folder(root: Path, generator, n_train: int, n_test: int, seed: int) -> Path:
    """Write a synthetic task as PATH/train/<class>/*.png and PATH/test/<class>/*.png."""
    for split, n, split_seed in (("train", n_train, seed), ("test", n_test, seed + 100)):
        items, labels, names = generator(n, seed=split_seed)
        for k, (image, label) in enumerate(zip(items, labels)):
            folder = root / split / names[label].replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{k:04d}.png")
    return root


def write_reference_dir(path: Path, n: int = 96) -> Path:
    """A folder of unlabelled reference images, as ZSCL_REFERENCE_DIR names."""
    path.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(reference_images(n, seed=9)):
        image.save(path / f"{i:04d}.png")
    return path


def upload(settings, sessions, data: bytes, name: str, tmp_path: Path, suite: bool = False):
    """Store the zip ``data`` as a dataset (a quarter held out for test); returns its row."""
    path = tmp_path / f"{name}.zip"
    path.write_bytes(data)
    row, _ = add_dataset(sessions, settings, path, name=name, suite=suite,
                         content_type="application/zip", test_fraction=0.25, seed=0)
    return row
