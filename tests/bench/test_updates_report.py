"""The product-path benchmark's report: what the final served model keeps, from job records."""

from zscl_bench.updates import plot_updates, summary_table, updates_table


def _row(task, state, rows, s_per_step=1.0):
    return {"method": "zscl", "reference_images": "task", "task": task, "state": state,
            "wall_s": 10.0, "error": None, "metrics": {"drift": 0.01, "s_per_step": s_per_step},
            "report": {"rows": rows}}


def _r(dataset, kind, before, after):
    return {"dataset_id": dataset[:2], "dataset": dataset, "kind": kind, "n": 100,
            "before": before, "after": after, "delta": after - before, "margin": 1.5}


RECORD = {"config": {"suite": "cifar10"}, "arms": {"zscl/task": [
    _row("fashion", "succeeded", [_r("fashion", "new_task", 30.0, 60.0),
                                  _r("cifar10", "suite", 50.0, 51.0)], s_per_step=1.0),
    # rejected: the served model stays, so the final scores are this job's 'before'
    _row("mnist", "rejected", [_r("mnist", "new_task", 10.0, 14.0),
                               _r("fashion", "learned", 60.0, 40.0),
                               _r("cifar10", "suite", 51.0, 30.0)], s_per_step=3.0),
]}}


def test_summary_counts_promotions_and_keeps_the_served_models_scores(tmp_path):
    table = summary_table(RECORD)
    row = table.splitlines()[2]
    assert "| 1/2 |" in row
    assert "+17.0" in row  # mean of the gains +30 and +4
    assert "50.0 → 51.0" in row  # the rejected candidate's 30.0 never served
    assert "fashion 60.0 (60.0)" in row  # the learned task as the final served model has it
    assert row.endswith("| 2.00 |")
    assert "mnist" in updates_table(RECORD) and "rejected" in updates_table(RECORD)
    assert plot_updates(RECORD, tmp_path / "u.png").stat().st_size > 1000
