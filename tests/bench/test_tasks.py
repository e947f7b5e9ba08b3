"""Task loading: image folders, class-balanced subsampling, validation carving, clear errors."""

from collections import Counter

import pytest

from zscl_bench.reference import photo_crops, reference_items
from zscl_bench.report import matrix_table, metrics_table
from zscl_bench.runner.mtil import _carve
from zscl_bench.tasks import (LoadOptions, _balanced, _split, load_cifar10, load_fashion_mnist,
                              load_task, parse_task_spec)
from zscl_core import DatasetError


def test_folder_task_reads_classes_with_spaces_and_subsamples(task_folders, tmp_path):
    _, stripes = task_folders
    task = load_task(f"lines={stripes}", LoadOptions(train_per_class=5, test_per_class=2,
                                                     cache_dir=tmp_path))
    assert task.name == "lines"
    assert task.classnames == ["horizontal stripes", "vertical stripes"]
    assert Counter(task.train.labels) == {0: 5, 1: 5}
    assert Counter(task.test.labels) == {0: 2, 1: 2}


def test_folder_task_without_test_split_says_what_is_missing(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="test"):
        load_task(f"x={tmp_path}", LoadOptions(cache_dir=tmp_path))


def test_task_specs():
    assert parse_task_spec("mnist") == ("mnist", None)
    assert parse_task_spec("mine=/data/x")[1].as_posix() == "/data/x"
    with pytest.raises(DatasetError, match="built-in tasks"):
        parse_task_spec("imagenet")


def test_missing_data_names_the_install_command(tmp_path):
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(LoadOptions(cache_dir=tmp_path), root=tmp_path)
    with pytest.raises(DatasetError, match="cifar10-subset.tar"):
        load_cifar10(LoadOptions(cache_dir=tmp_path, shared_data=tmp_path))


def test_balanced_and_fixed_splits_are_stratified_and_seeded():
    labels = [0] * 10 + [1] * 20
    picked = _balanced(labels, 4, seed=3)
    assert Counter(labels[i] for i in picked) == {0: 4, 1: 4}
    assert picked == _balanced(labels, 4, seed=3) != _balanced(labels, 4, seed=4)
    train, test = _split(labels)
    assert Counter(labels[i] for i in test) == {0: 3, 1: 6}
    assert not set(train) & set(test) and len(train) + len(test) == 30


def test_validation_carve_keeps_every_class_on_both_sides():
    labels = [0] * 2 + [1] * 10
    train, val = _carve(labels, 0.2, seed=0)
    assert Counter(labels[i] for i in val) == {0: 1, 1: 2}
    assert Counter(labels[i] for i in train) == {0: 1, 1: 8}


def test_reference_photo_crops_are_seeded_and_varied(tmp_path):
    a, b = photo_crops(6, seed=1), photo_crops(6, seed=1)
    assert [x.tobytes() for x in a] == [x.tobytes() for x in b]
    assert len({x.tobytes() for x in a}) == 6
    with pytest.raises(DatasetError, match="folder"):
        reference_items(str(tmp_path / "nope"), 4)


def test_tables_show_metrics_and_stages():
    table = metrics_table({"zscl": {"transfer": 50.0, "avg": 60.25, "last": 70.0}})
    assert "| ZSCL | 50.0 | 60.2 | 70.0 |" in table
    rows = matrix_table([[10, 20], [30, 40], [50, 60]], ["a", "b"]).splitlines()
    assert rows[2] == "| 0 (initial) | 10.0 | 20.0 |" and rows[4] == "| 2 (+b) | 50.0 | 60.0 |"
