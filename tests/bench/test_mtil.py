"""End to end: `zscl bench mtil --quick` on the tiny model and two synthetic image-folder tasks."""

import json

import pytest

from zscl_bench.cli import main
from zscl_bench.runner import ALL_METHODS
from zscl_core import summarize


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, tiny_config_path, task_folders):
    out = tmp_path_factory.mktemp("bench-out")
    colours, stripes = task_folders
    status = main(["mtil", "--quick", "--model", str(tiny_config_path),
                   "--task", f"colours={colours}", "--task", f"stripes={stripes}",
                   "--steps", "3", "--reference-count", "8", "--no-progress",
                   "--out", str(out), "--cache-dir", str(out / "cache")])
    return status, out, json.loads((out / "results.json").read_text())


def test_quick_run_writes_matrices_and_agreeing_metrics(quick_run):
    status, _, record = quick_run
    assert status == 0
    assert [t["name"] for t in record["tasks"]] == ["colours", "stripes"]
    assert set(record["matrices"]) == set(ALL_METHODS)
    for method, matrix in record["matrices"].items():
        assert len(matrix) == 3 and all(len(row) == 2 for row in matrix), method
        assert all(0.0 <= v <= 100.0 for row in matrix for v in row), method
        expected = summarize(matrix)
        assert record["metrics"][method] == pytest.approx(expected), method
        assert set(record["metrics"][method]) == {"transfer", "avg", "last"}


def test_every_method_starts_from_the_same_initial_row(quick_run):
    _, _, record = quick_run
    row0 = record["matrices"]["zero_shot"][0]
    for matrix in record["matrices"].values():
        assert matrix[0] == row0
    # zero-shot never trains: every stage is the initial model
    assert all(row == row0 for row in record["matrices"]["zero_shot"])


def test_quick_run_records_config_split_and_plots(quick_run):
    _, out, record = quick_run
    colours = record["tasks"][0]
    # 4 classes x 12 train images, a fifth of each class held out for validation
    assert colours["classes"] == 4 and colours["train"] == 48 and colours["test"] == 24
    assert colours["val"] == 4 * round(12 * 0.2) and colours["train_used"] == 48 - colours["val"]
    assert record["config"]["steps"] == 3
    assert set(record["learning_rates"]) == {"colours", "stripes"}
    assert record["timing"]["total_s"] > 0
    for name in ["matrices.png", "per_dataset.png"] + [f"matrix_{m}.png" for m in ALL_METHODS]:
        assert (out / name).stat().st_size > 1000, name
