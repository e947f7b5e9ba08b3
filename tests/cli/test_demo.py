"""``zscl demo``: the README tour's files are valid (the zips open, hold the classes and counts the
command prints, and ingest as ``POST /v1/datasets`` would; the images decode), the same on every
run, and a missing Fashion-MNIST is an error naming the Debian package.

Most tests read a small Fashion-MNIST look-alike written to ``tmp_path`` in the same idx format,
so they run anywhere; one reads Debian's real files (a skip without them, an error in CI, whose
.ci/run installs them)."""

from __future__ import annotations

import gzip
import io
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from records.ingest import IngestLimits, ingest_dataset
from tests.helpers.fashion import FASHION
from zscl_bench.tasks import FASHION_CLASSES, default_shared_data
from zscl_cli import demo
from zscl_cli import main as cli


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format Fashion-MNIST ships: magic (0, 0, uint8 type, dims), big-endian sizes."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture()
def fake_fashion(tmp_path) -> Path:
    """12 random 28x28 images of each of the 10 classes, in Fashion-MNIST's t10k files."""
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(10), 12)
    rng.shuffle(labels)
    root = tmp_path / "fashion"
    root.mkdir()
    _write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (len(labels), 28, 28)))
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", labels)
    return root


def _run(capsys, *args: str) -> str:
    assert cli.main(["demo", *args]) == 0
    return capsys.readouterr().out


def _printed(out: str) -> dict[str, dict]:
    """file name -> {"classes": [...], "per_class": n, "total": n} from the command's summary."""
    found = {}
    for match in re.finditer(r"^  (\S+\.zip): (\d+) classes x (\d+) images = (\d+)\n"
                             r"    classes: (.*)$", out, re.MULTILINE):
        name, n_classes, per_class, total, classes = match.groups()
        found[name] = {"classes": classes.split(", "), "per_class": int(per_class),
                       "total": int(total)}
        assert len(found[name]["classes"]) == int(n_classes)
    return found


def _zip_classes(path: Path, prefix: str = "") -> dict[str, int]:
    """class name ('_' read as a space) -> images, checking that every member decodes."""
    counts: dict[str, int] = {}
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        for name in archive.namelist():
            assert name.startswith(prefix), name
            folder, _ = name[len(prefix):].split("/")
            with Image.open(io.BytesIO(archive.read(name))) as image:
                image.load()
            counts[folder.replace("_", " ")] = counts.get(folder.replace("_", " "), 0) + 1
    return counts


def _ingest(path: Path, store: Path):
    return ingest_dataset(path, store, IngestLimits(), filename=path.name,
                          content_type="application/zip")


def test_demo_is_registered_and_agrees_with_the_benchmark():
    choices = cli.build_parser()._subparsers._group_actions[0].choices
    assert "demo" in choices
    assert demo.FASHION_CLASSES == FASHION_CLASSES  # the idx files' label order
    assert demo.CIFAR_TAR == default_shared_data() / "cifar10-subset.tar"


def test_demo_writes_valid_files_holding_what_it_prints(tmp_path, capsys, fake_fashion):
    out_dir = tmp_path / "out"
    out = _run(capsys, "--out", str(out_dir), "--fashion-mnist", str(fake_fashion),
               "--classes", "trouser,ankle boot,bag", "--per-class", "10",
               "--suite-source", "photos", "--suite-per-class", "4")
    assert sorted(p.name for p in out_dir.iterdir()) == ["cat.jpg", "clothes.zip", "suite.zip"]
    printed = _printed(out)
    assert printed["clothes.zip"] == {"classes": ["ankle boot", "bag", "trouser"], "per_class": 10,
                                   "total": 30}
    assert printed["suite.zip"] == {"classes": sorted(demo.PHOTO_CLASSES), "per_class": 4,
                                    "total": 24}
    assert "cat.jpg: a 451x300 JPEG" in out and str(fake_fashion) in out

    with Image.open(out_dir / "cat.jpg") as cat:
        assert cat.format == "JPEG" and cat.size == (451, 300)
        cat.load()
    clothes = _zip_classes(out_dir / "clothes.zip")
    assert clothes == {name: 10 for name in ("ankle boot", "bag", "trouser")}
    assert _zip_classes(out_dir / "suite.zip", prefix="test/") == \
        {name: 4 for name in demo.PHOTO_CLASSES}

    # what the server does with them: clothes is split by the server (a fifth held out), the
    # suite is test-only, with its classes as printed
    stored = _ingest(out_dir / "clothes.zip", tmp_path / "store")
    assert stored.classnames == printed["clothes.zip"]["classes"] and stored.split == "auto"
    assert stored.test_counts == {name: 2 for name in clothes} and stored.n_train == 24
    suite = _ingest(out_dir / "suite.zip", tmp_path / "store")
    assert suite.classnames == printed["suite.zip"]["classes"]
    assert suite.n_train == 0 and suite.n_test == 24


def test_demo_is_deterministic(tmp_path, capsys, fake_fashion):
    args = ["--fashion-mnist", str(fake_fashion), "--per-class", "5", "--suite-source", "photos",
            "--suite-per-class", "3"]
    _run(capsys, "--out", str(tmp_path / "a"), *args)
    _run(capsys, "--out", str(tmp_path / "b"), *args)
    for name in ("cat.jpg", "clothes.zip", "suite.zip"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    _run(capsys, "--out", str(tmp_path / "c"), *args, "--seed", "1")
    assert (tmp_path / "c" / "clothes.zip").read_bytes() != (tmp_path / "a" / "clothes.zip").read_bytes()


def test_missing_fashion_mnist_names_the_package_and_writes_nothing(tmp_path):
    out_dir = tmp_path / "out"
    with pytest.raises(SystemExit, match="apt-get install dataset-fashion-mnist"):
        cli.main(["demo", "--out", str(out_dir), "--fashion-mnist", str(tmp_path / "none")])
    assert not out_dir.exists()


def test_bad_options_say_what_is_allowed(tmp_path, fake_fashion):
    base = ["demo", "--out", str(tmp_path / "out"), "--fashion-mnist", str(fake_fashion)]
    with pytest.raises(SystemExit, match="Fashion-MNIST's classes are T-shirt, trouser"):
        cli.main([*base, "--classes", "trouser,cat"])
    with pytest.raises(SystemExit, match="2..1000"):
        cli.main([*base, "--per-class", "1"])
    with pytest.raises(SystemExit, match="--suite-source photos"):
        cli.main([*base, "--suite-source", "cifar10", "--cifar10", str(tmp_path / "no.tar")])
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not FASHION.exists(), reason="apt-get install dataset-fashion-mnist")
def test_the_defaults_on_the_real_data(tmp_path, capsys):
    """What the README's tour uploads: 5 Fashion-MNIST classes x 100, and CIFAR-10 x 30 where
    ../shared/data has it (CI does), else scikit-image's photos x 30."""
    out = _run(capsys, "--out", str(tmp_path))
    printed = _printed(out)
    assert printed["clothes.zip"] == {"classes": sorted(demo.DEFAULT_CLOTHES_CLASSES), "per_class": 100,
                                   "total": 500}
    assert _zip_classes(tmp_path / "clothes.zip") == {name: 100 for name in demo.DEFAULT_CLOTHES_CLASSES}
    cifar = demo.CIFAR_TAR.is_file()
    expected = (["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"] if cifar else sorted(demo.PHOTO_CLASSES))
    assert printed["suite.zip"]["classes"] == expected
    assert _zip_classes(tmp_path / "suite.zip", prefix="test/") == {name: 30 for name in expected}
    assert ("CIFAR-10's test split" in out) == cifar
