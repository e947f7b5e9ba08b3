"""benchmarks.heavy_bench: its report from known figures, and one real run on the tiny CLIP whose
figures must be complete and sane."""

import pytest

from benchmarks import heavy_bench


def test_the_report_names_both_phases_and_their_ratio():
    result = {"config": {"model": "tiny", "cpus": 2, "image_size": 64, "heavy": 16, "labels": 1000,
                         "rounds": 3, "seconds": 20.0},
              "idle": heavy_bench._row([0.010, 0.020, 0.030]),
              "busy": heavy_bench._row([0.015, 0.025, 0.045]),
              "heavy": {"answered": 7, "answered_p50_s": 12.5, "refused": 40, "retry_after_s": 3,
                        "failed": []}}
    result["p99_ratio"] = result["busy"]["p99_ms"] / result["idle"]["p99_ms"]
    assert result["idle"]["p50_ms"] == pytest.approx(20.0) and result["busy"]["max_ms"] == pytest.approx(45.0)
    report = heavy_bench.format_report(result)
    assert "with 16 heavy clients" in report
    assert f"p99 busy / idle: {result['p99_ratio']:.2f}x" in report
    assert "7 answered (p50 12.5 s), 40 refused with 429 (Retry-After 3 s), 0 failed" in report


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_tiny_run_gives_every_figure():
    result = heavy_bench.run(["--model", "tiny", "--rounds", "1", "--idle-requests", "10",
                              "--seconds", "2", "--drain-s", "0.5", "--heavy", "4", "--labels", "200",
                              "--image-size", "64"])
    assert result["idle"]["n"] == 10 and result["busy"]["n"] > 0
    for phase in ("idle", "busy"):
        assert 0 < result[phase]["p50_ms"] <= result[phase]["p99_ms"] <= result[phase]["max_ms"]
    assert result["p99_ratio"] > 0
    heavy = result["heavy"]
    assert heavy["answered"] + heavy["refused"] >= 1 and heavy["failed"] == []
