"""Dataset ingestion: good layouts are stored content-addressed; every hostile or broken upload is
refused with an error naming the problem, and leaves nothing in the store."""

from __future__ import annotations

import gzip
import hashlib
import json
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from records.ingest import (DatasetTooLarge, IngestLimits, UnsafeArchive, UnsupportedUpload,
                            delete_dataset, evaluation_images, ingest_dataset, load_dataset_dir,
                            read_dataset, remove_stale_temp_dirs)
from tests.helpers.archives import (colour_files, encode, huge_png, stripe_files, tar_info, write_tar,
                                    write_zip, zip_info)
from tests.helpers.synthetic import colour_task, stripe_task
from zscl_core.data import class_name_from_folder
from zscl_core.errors import ConfigError, DatasetError

LIMITS = IngestLimits()
MiB = 1 << 20


def ingest(path, store, limits=LIMITS, content_type="application/zip", filename="data.zip"):
    return ingest_dataset(path, store, limits, filename=filename, content_type=content_type)


def stored_files(dataset) -> dict[str, list[str]]:
    return {f"{split}/{folder.name}": sorted(p.name for p in folder.iterdir())
            for split in ("train", "test") for folder in sorted((dataset.path / split).iterdir())}


# --- good uploads ---------------------------------------------------------------------------


def test_zip_of_class_folders_gets_a_seeded_stratified_split(tmp_path):
    files = colour_files(5, prefix="colours/")  # a wrapper folder, as zip -r makes
    files["__MACOSX/colours/red/._0.png"] = b"resource fork"
    files["colours/red/.DS_Store"] = b"finder"
    upload = write_zip(tmp_path / "up.zip", files)
    store = tmp_path / "store"

    dataset = ingest(upload, store)

    assert dataset.split == "auto" and not dataset.deduplicated
    assert dataset.classnames == ["blue", "green", "red", "yellow"]
    assert dataset.train_counts == {"blue": 4, "green": 4, "red": 4, "yellow": 4}
    assert dataset.test_counts == {"blue": 1, "green": 1, "red": 1, "yellow": 1}
    assert (dataset.n_train, dataset.n_test) == (16, 4)
    assert dataset.path == store / dataset.dataset_id and dataset.dataset_id == dataset.sha256[:16]
    assert sorted(p.name for p in store.iterdir()) == [dataset.dataset_id]  # temp dir gone
    layout = stored_files(dataset)
    assert {k: len(v) for k, v in layout.items()} == {
        **{f"train/{c}": 4 for c in dataset.classnames}, **{f"test/{c}": 1 for c in dataset.classnames}}
    assert all(name.endswith(".png") for names in layout.values() for name in names)
    info = json.loads((dataset.path / "dataset.json").read_text())
    assert info["sha256"] == dataset.sha256 and info["source_filename"] == "data.zip"
    assert info["split_seed"] == 0 and info["test_fraction"] == 0.2

    train, test = load_dataset_dir(dataset.path)
    assert list(train.classnames) == list(test.classnames) == dataset.classnames
    assert (len(train), len(test)) == (16, 4)
    assert sorted(train.labels) == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    image, label = test[0]
    assert image.size == (32, 32) and label == 0

    # the split depends on the seed and the images only: the same content, re-archived in another
    # order under other names, lands on the same id; another seed draws another split
    renamed = {f"{name.split('/')[0]}/img-{i}.png": data
               for i, (name, data) in enumerate(reversed(list(colour_files(5).items())))}
    again = ingest(write_zip(tmp_path / "again.zip", renamed), tmp_path / "store2")
    assert again.dataset_id == dataset.dataset_id and stored_files(again) == layout
    other = ingest(upload, tmp_path / "store3", IngestLimits(split_seed=1))
    assert other.dataset_id != dataset.dataset_id and stored_files(other) != layout
    assert other.n_test == 4


@pytest.mark.parametrize("mode, content_type", [("w:gz", "application/gzip"), ("w", None)])
def test_tar_with_explicit_train_test_split(tmp_path, mode, content_type):
    files = {**stripe_files("train", 4, seed=0), **stripe_files("test", 2, seed=1)}
    upload = write_tar(tmp_path / "up.bin", files, mode=mode)  # no telling suffix: content decides

    dataset = ingest(upload, tmp_path / "store", content_type=content_type, filename="stripes.tgz")

    assert dataset.split == "explicit"
    assert dataset.classnames == ["horizontal stripes", "vertical stripes"]  # '_' reads as a space
    assert dataset.class_folders == ["horizontal_stripes", "vertical_stripes"]
    assert dataset.train_counts == {"horizontal stripes": 4, "vertical stripes": 4}
    assert dataset.test_counts == {"horizontal stripes": 2, "vertical stripes": 2}
    train, test = load_dataset_dir(dataset.path)
    assert (len(train), len(test)) == (8, 4)
    assert list(train.classnames) == ["horizontal stripes", "vertical stripes"]


def test_csv_manifest_with_jpegs_and_auto_split(tmp_path):
    items, labels, names = colour_task(4, seed=3)
    files = {f"imgs/{i}.jpg": encode(image, "JPEG") for i, image in enumerate(items)}
    rows = "\n".join(f"imgs/{i}.jpg,{names[label]}" for i, label in enumerate(labels))
    files["manifest.csv"] = f"path,label\n{rows}\n".encode()
    upload = write_zip(tmp_path / "up.zip", {f"wrap/{k}": v for k, v in files.items()})

    dataset = ingest(upload, tmp_path / "store")

    assert dataset.split == "auto" and dataset.classnames == sorted(names)
    assert (dataset.n_train, dataset.n_test) == (12, 4)  # 4 per class: 3 train + 1 test
    assert all(name.endswith(".jpg") for names_ in stored_files(dataset).values() for name in names_)


def test_jsonl_manifest_with_explicit_split_and_spaces_in_labels(tmp_path):
    items, labels, names = stripe_task(3, seed=4)
    files, lines = {}, []
    for i, (image, label) in enumerate(zip(items, labels)):
        files[f"{i}.png"] = encode(image)
        lines.append(json.dumps({"path": f"{i}.png", "label": names[label],
                                 "split": "test" if i % 3 == 0 else "train"}))
    files["manifest.jsonl"] = "\n".join(lines).encode()

    dataset = ingest(write_zip(tmp_path / "up.zip", files), tmp_path / "store")

    assert dataset.split == "explicit"
    assert dataset.classnames == ["horizontal stripes", "vertical stripes"]
    assert dataset.train_counts == {"horizontal stripes": 2, "vertical stripes": 2}
    assert dataset.test_counts == {"horizontal stripes": 1, "vertical stripes": 1}


def class_by_content(files: dict[str, bytes]) -> dict[str, str]:
    """{stored file stem: class name} of uploaded ``[split/]class/image`` files: a stored image is
    named by its content digest, so this checks labels against what was uploaded, not the tree."""
    return {hashlib.sha256(data).hexdigest()[:32]: class_name_from_folder(name.split("/")[-2])
            for name, data in files.items()}


def labelled(images) -> dict[str, str]:
    return {Path(item).stem: images.classnames[label] for item, label in zip(images.items, images.labels)}


def test_evaluation_images_are_every_image_of_a_suite_and_the_test_split_otherwise(tmp_path):
    train_files, test_files = stripe_files("train", 4, seed=0), stripe_files("test", 2, seed=1)
    upload = write_tar(tmp_path / "up.tgz", {**train_files, **test_files})
    dataset = ingest(upload, tmp_path / "store", content_type="application/gzip")

    suite = evaluation_images(dataset.path, suite=True)
    held_out = evaluation_images(dataset.path, suite=False)

    assert (len(suite), len(held_out)) == (12, 4)
    assert list(suite.classnames) == list(held_out.classnames) == ["horizontal stripes", "vertical stripes"]
    assert len(set(suite.items)) == 12 and labelled(suite) == class_by_content({**train_files, **test_files})
    assert labelled(held_out) == class_by_content(test_files)
    assert all(Path(item).parent.parent.name == "test" for item in held_out.items)
    # train then test, each by class then file name: the same order on every call
    assert list(suite.labels) == [0] * 4 + [1] * 4 + [0] * 2 + [1] * 2
    assert list(evaluation_images(dataset.path, suite=True).items) == list(suite.items)
    image, label = evaluation_images(dataset.path, suite=True, transform=lambda im: im.size)[11]
    assert image == (32, 32) and label == 1


def test_auto_split_suite_evaluates_on_all_its_images(tmp_path):
    files = colour_files(5)
    dataset = ingest(write_zip(tmp_path / "up.zip", files), tmp_path / "store")

    suite = evaluation_images(dataset.path, suite=True)

    assert (dataset.n_train, dataset.n_test, len(suite)) == (16, 4, 20)
    assert labelled(suite) == class_by_content(files)
    assert len(evaluation_images(dataset.path, suite=False)) == 4


def _bare_test(tmp):
    return stripe_files("test", 3, seed=2)


def _wrapped_bare_test(tmp):
    return {f"my-suite/{name}": data for name, data in stripe_files("test", 3, seed=2).items()}


def _all_test_manifest(tmp):
    files, rows = {}, ["path,label,split"]
    for index, (name, data) in enumerate(stripe_files("test", 3, seed=2).items()):
        files[f"images/{index}.png"] = data
        rows.append(f"images/{index}.png,{name.split('/')[1].replace('_', ' ')},test")
    return {**files, "manifest.csv": "\n".join(rows).encode()}


@pytest.mark.parametrize("layout", [_bare_test, _wrapped_bare_test, _all_test_manifest])
def test_a_bare_test_split_is_stored_with_no_train_images(tmp_path, layout):
    files = layout(tmp_path)

    dataset = ingest(write_zip(tmp_path / "up.zip", files), tmp_path / "store")

    assert dataset.split == "explicit"
    assert (dataset.n_train, dataset.n_test) == (0, 6)
    assert dataset.train_counts == {"horizontal stripes": 0, "vertical stripes": 0}
    assert dataset.test_counts == {"horizontal stripes": 3, "vertical stripes": 3}
    train, test = load_dataset_dir(dataset.path)
    assert (len(train), len(test)) == (0, 6)
    assert list(train.classnames) == list(test.classnames) == ["horizontal stripes", "vertical stripes"]
    suite = evaluation_images(dataset.path, suite=True)
    assert list(suite.labels) == [0, 0, 0, 1, 1, 1]
    assert labelled(suite) == class_by_content(stripe_files("test", 3, seed=2))
    assert len(evaluation_images(dataset.path, suite=False)) == 6


def test_identical_content_is_stored_once(tmp_path):
    store = tmp_path / "store"
    files = colour_files(5)
    first = ingest(write_zip(tmp_path / "a.zip", files), store, filename="a.zip")
    second = ingest(write_zip(tmp_path / "b.zip", files), store, filename="b.zip")
    as_tar = ingest(write_tar(tmp_path / "c.tgz", files), store, content_type="application/x-tar")

    assert not first.deduplicated and second.deduplicated and as_tar.deduplicated
    assert first.dataset_id == second.dataset_id == as_tar.dataset_id
    assert second.path == first.path and second.source_filename == "a.zip"  # the stored copy
    assert sorted(p.name for p in store.iterdir()) == [first.dataset_id]
    assert read_dataset(first.path).n_train == 16


def test_delete_dataset_and_stale_temp_cleanup(tmp_path):
    store = tmp_path / "store"
    dataset = ingest(write_zip(tmp_path / "a.zip", colour_files(5)), store)
    with pytest.raises(DatasetError, match="not a dataset id"):
        delete_dataset(store, "../etc")
    assert delete_dataset(store, dataset.dataset_id) is True
    assert delete_dataset(store, dataset.dataset_id) is False
    assert list(store.iterdir()) == []

    (store / ".tmp-left-by-a-killed-process").mkdir()  # unlocked: its owner is gone
    assert remove_stale_temp_dirs(store) == 1
    assert list(store.iterdir()) == []


def test_limits_are_validated():
    with pytest.raises(ConfigError, match="test_fraction"):
        IngestLimits(test_fraction=1.0)
    with pytest.raises(ConfigError, match="min_classes"):
        IngestLimits(min_classes=1)


# --- bad uploads: refused, named, nothing stored ----------------------------------------------


def _zip(files, extra=()):
    return lambda tmp: (write_zip(tmp / "up.zip", files, list(extra)), "application/zip", LIMITS)


def _tar(files, extra=(), limits=LIMITS):
    return lambda tmp: (write_tar(tmp / "up.tgz", files, list(extra)), "application/gzip", limits)


GOOD = colour_files(3)
ZEROS = bytes(50 * MiB)  # 50 MB of zeros: deflates/gzips to about 50 kB
BIG_FILES = IngestLimits(max_file_bytes=200 * MiB, max_total_bytes=1024 * MiB)


def _with(**changes):
    files = dict(GOOD)
    for name, data in changes.items():
        if data is None:
            files = {k: v for k, v in files.items() if not k.startswith(name)}
        else:
            files[name] = data
    return files


def _zip_lying_about_size(tmp):
    """A member of 3 MB of zeros whose headers claim 1000 bytes: never expands past the claim."""
    path = write_zip(tmp / "up.zip", _with(**{"red/liar.png": bytes(3 * MiB)}))
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = next(i for i in _find_all(data, signature) if b"red/liar.png" in data[i:i + 80])
        data[at + offset:at + offset + 4] = (1000).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path, "application/zip", LIMITS


def _find_all(data: bytes, needle: bytes):
    at = data.find(needle)
    while at != -1:
        yield at
        at = data.find(needle, at + 1)


def _raw(data: bytes, content_type: str, limits=LIMITS):
    def build(tmp):
        path = tmp / "upload"
        path.write_bytes(data)
        return path, content_type, limits
    return build


BAD = {
    "dotdot": (_zip(GOOD, [(zipfile.ZipInfo("../evil.png"), GOOD["red/0.png"])]),
               UnsafeArchive, r"'\.\./evil\.png' has a '\.\.' path component"),
    "dotdot-tar": (_tar({**GOOD, "red/../../evil.png": GOOD["red/0.png"]}),
                   UnsafeArchive, r"'red/\.\./\.\./evil\.png' has a '\.\.'"),
    "absolute": (_zip(GOOD, [(zipfile.ZipInfo("/etc/evil.png"), GOOD["red/0.png"])]),
                 UnsafeArchive, r"'/etc/evil\.png' has an absolute path"),
    "absolute-tar": (_tar({**GOOD, "/tmp/evil.png": GOOD["red/0.png"]}),
                     UnsafeArchive, r"'/tmp/evil\.png' has an absolute path"),
    "zip-symlink": (_zip(GOOD, [(zip_info("red/link.png", stat.S_IFLNK | 0o777), b"/etc/passwd")]),
                    UnsafeArchive, r"'red/link\.png' is a symbolic link"),
    "zip-fifo": (_zip(GOOD, [(zip_info("red/pipe", stat.S_IFIFO | 0o644), b"")]),
                 UnsafeArchive, r"'red/pipe' is not a regular file"),
    "tar-symlink": (_tar(GOOD, [tar_info("red/link.png", tarfile.SYMTYPE, "/etc/passwd")]),
                    UnsafeArchive, r"'red/link\.png' is a symbolic link \(to '/etc/passwd'\)"),
    "tar-hardlink": (_tar(GOOD, [tar_info("red/hard.png", tarfile.LNKTYPE, "red/0.png")]),
                     UnsafeArchive, r"'red/hard\.png' is a hard link"),
    "tar-device": (_tar(GOOD, [tar_info("red/null", tarfile.CHRTYPE)]),
                   UnsafeArchive, r"'red/null' is a device or FIFO"),
    "tar-fifo": (_tar(GOOD, [tar_info("red/pipe", tarfile.FIFOTYPE)]),
                 UnsafeArchive, r"'red/pipe' is a device or FIFO"),
    "zip-bomb": (lambda tmp: (write_zip(tmp / "up.zip", _with(**{"red/zeros.png": ZEROS})),
                              "application/zip", BIG_FILES),
                 DatasetTooLarge, r"'red/zeros\.png' expands \d+ times, more than the limit of 100"),
    "gzip-bomb": (_tar(_with(**{"red/zeros.png": ZEROS}), limits=BIG_FILES),
                  DatasetTooLarge, r"the gzip stream expands past \d+ bytes"),
    "file-too-big": (_tar(_with(**{"red/zeros.png": ZEROS})),
                     DatasetTooLarge, r"'red/zeros\.png' is 52428800 bytes, more than the per-file limit"),
    "zip-lying-size": (_zip_lying_about_size,
                       DatasetError, r"member 'red/liar\.png' of the zip cannot be extracted \(Bad CRC-32"),
    "too-many-files": (lambda tmp: (write_zip(tmp / "up.zip", GOOD), None, IngestLimits(max_files=5)),
                       DatasetTooLarge, r"the zip has 12 entries, more than the limit of 5"),
    "too-many-files-tar": (_tar(GOOD, limits=IngestLimits(max_files=5)),
                           DatasetTooLarge, r"more than 5 entries"),
    "archive-too-big": (lambda tmp: (write_zip(tmp / "up.zip", GOOD), None, IngestLimits(max_archive_bytes=1000)),
                        DatasetTooLarge, r"the upload is \d+ bytes, more than the limit of 1000"),
    "non-image": (_zip(_with(**{"green/notes.txt": b"these are my notes"})),
                  DatasetError, r"'green/notes\.txt' is not an image"),
    "top-level-file": (_zip(_with(**{"README.md": b"# my data"})),
                       DatasetError, r"'README\.md' is at the top level"),
    "one-class": (_zip({k: v for k, v in GOOD.items() if k.startswith("red/")}),
                  DatasetError, r"found 1 class\(es\) \('red'\); a dataset needs at least 2"),
    "empty-class": (_zip(GOOD, [(zipfile.ZipInfo("purple/"), b"")]),
                    DatasetError, r"class folder 'purple' is empty"),
    "too-few-images": (_zip(_with(**{"red/": None, "red/0.png": GOOD["red/0.png"],
                                     "red/1.png": GOOD["red/1.png"]})),
                       DatasetError, r"class 'red' has 2 distinct image\(s\); the automatic split needs at least 3"),
    "truncated-jpeg": (_zip(_with(**{"blue/cut.jpg": encode(colour_task(1, 9)[0][0], "JPEG")[:400]})),
                       DatasetError, r"'blue/cut\.jpg' is truncated or corrupt"),
    "pixel-cap": (lambda tmp: (write_zip(tmp / "up.zip", _with(**{"blue/big.png": huge_png(4000, 4000)})),
                               None, IngestLimits(max_image_pixels=1_000_000)),
                  DatasetTooLarge, r"'blue/big\.png' has 4000x4000 = 16000000 pixels, more than the "
                                   r"limit of 1000000"),
    # past twice Pillow's own MAX_IMAGE_PIXELS, Image.open refuses the header itself
    "decompression-bomb": (_zip(_with(**{"blue/bomb.png": huge_png(100_000, 100_000)})),
                           DatasetTooLarge, r"'blue/bomb\.png' has 10000000000 pixels, more than the "
                                            r"limit of 40000000"),
    "between-pillow-limits": (_zip(_with(**{"blue/big.png": huge_png(10_000, 10_000)})),
                              DatasetTooLarge, r"'blue/big\.png' has 10000x10000 = 100000000 pixels"),
    "same-image-two-labels": (_zip(_with(**{"green/copy.png": GOOD["red/0.png"]})),
                              DatasetError, r"'(red/0|green/copy)\.png' .* are the same image with two labels"),
    "train-without-test": (_tar(stripe_files("train", 3, 0)),
                           DatasetError, r"only a 'train/' folder; a train split without a test split "
                                         r"can never be evaluated: add test/<class>/ folders"),
    "manifest-all-train": (
        _zip({"a.png": GOOD["red/0.png"], "b.png": GOOD["blue/6.png"],
              "manifest.csv": b"path,label,split\na.png,red,train\nb.png,blue,train\n"}),
        DatasetError, r"every row of manifest\.csv has split 'train'; a train split without a test"),
    "test-beside-class-folders": (_zip({**stripe_files("test", 2, 0), **GOOD}),
                                  DatasetError, r"top-level folders \[.*'test'.*\]; an explicit split "
                                                r"needs exactly 'train/' and 'test/' \(or 'test/' alone"),
    "test-only-one-class": (_tar({k: v for k, v in stripe_files("test", 2, 0).items() if "/vertical" in k}),
                            DatasetError, r"found 1 class\(es\) \('vertical stripes'\)"),
    "class-missing-from-test": (
        _tar({**stripe_files("train", 3, 0),
              **{k: v for k, v in stripe_files("test", 1, 1).items() if "/vertical" in k}}),
        DatasetError, r"class 'horizontal_stripes' has no test images; add at least one"),
    "manifest-unlisted": (_zip({**GOOD, "manifest.csv": b"path,label\nred/0.png,red\nblue/6.png,blue\n"}),
                          DatasetError, r"is in the archive but not in manifest\.csv"),
    "manifest-missing-path": (_zip({"a.png": GOOD["red/0.png"], "manifest.csv": b"path,label\nb.png,red\n"}),
                              DatasetError, r"manifest\.csv line 2: 'b\.png' is not in the archive"),
    "manifest-dotdot": (_zip({"a.png": GOOD["red/0.png"], "manifest.csv": b"path,label\n../a.png,red\n"}),
                        UnsafeArchive, r"manifest\.csv line 2: member '\.\./a\.png' has a '\.\.'"),
    "text-content-type": (_raw(b"hello, I am not an archive\n", "text/plain; charset=utf-8"),
                          UnsupportedUpload, r"content type 'text/plain' is not an archive"),
    "text-claiming-zip": (_raw(b"hello, I am not an archive\n", "application/zip"),
                          UnsupportedUpload, r"not a zip or tar archive"),
    "gzipped-text": (_raw(gzip.compress(b"just some text\n" * 100), "application/gzip"),
                     UnsupportedUpload, r"gzip-compressed but does not contain a tar"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_upload_is_refused_and_leaves_nothing(tmp_path, case):
    build, error, message = BAD[case]
    upload, content_type, limits = build(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    (store / "keep.txt").write_text("not ours")  # the store's other contents stay untouched

    with pytest.raises(error, match=message):
        ingest(upload, store, limits, content_type=content_type)

    assert sorted(p.name for p in store.iterdir()) == ["keep.txt"]

