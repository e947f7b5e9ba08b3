"""benchmarks.serve_bench: its pure parts against hand-computed values, and one real run on the
CPU (the service, the raw forward and the LitServe peer, two client processes, request sizes 1
and 4) whose figures must be complete and sane."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from benchmarks import serve_bench


def test_percentile_interpolates_as_numpy_does():
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    for q in (0, 25, 50, 90, 99, 100):
        assert serve_bench.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert serve_bench.percentile([], 50) is None


def test_summarise_pools_rounds():
    parts = [{"images": 8, "requests": 2, "wall_s": 1.0, "latencies": [0.01, 0.03], "errors": 0,
              "batches": (2, 8), "faults": 4},
             {"images": 12, "requests": 3, "wall_s": 1.0, "latencies": [0.02, 0.02, 0.02], "errors": 1,
              "batches": (1, 12), "faults": 6}]
    row = serve_bench.summarise(parts, 4)
    assert row["img_s"] == 10.0 and row["req_s"] == 2.5
    assert row["p50_ms"] == pytest.approx(20.0)
    assert row["mean_batch"] == pytest.approx(20 / 3)
    assert row["faults_per_image"] == pytest.approx(0.5)
    assert row["errors"] == 1
    del parts[1]["batches"]  # one round without forwards known: the mean is unknown
    assert serve_bench.summarise(parts, 4)["mean_batch"] is None


def test_synthetic_jpegs_are_jpegs_of_the_size_asked():
    images = serve_bench.synthetic_jpegs(48, 3)
    assert len(set(images)) == 3
    for data in images:
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG" and image.size == (48, 48)


def test_a_request_carries_its_images_and_frames_its_body():
    images = [b"\xff\xd8one", b"\xff\xd8two", b"\xff\xd8three"]
    request = serve_bench.multipart_request("h:1", images, ["cat", "dog"])
    head, body = request.split(b"\r\n\r\n", 1)
    assert int(head.split(b"Content-Length: ")[1]) == len(body)
    assert body.count(b'name="images"') == 3 and all(image in body for image in images)
    assert len(serve_bench.request_set("h:1", images, 2)) == 1  # 3 images make one distinct pair


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_tiny_cpu_run_gives_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    result = serve_bench.run(["--model", "tiny", "--device", "cpu", "--concurrency", "4",
                              "--images-per-request", "1,4", "--seconds", "0.5", "--rounds", "1",
                              "--client-procs", "2", "--big-labels", "20", "--json", str(out)])
    config = result["config"]
    assert (config["device"], config["batch"], config["client_procs"]) == ("cpu", 8, 2)
    assert config["served_dtype"] == config["raw_dtype"] == "float32"
    assert [(g["images_per_request"], g["concurrency"]) for g in result["levels"]] == [(1, 4), (4, 4)]
    for level in result["levels"]:
        for name in ("service", "raw", "litserve"):
            row = level[name]
            assert row["img_s"] > 0 and row["errors"] == 0, (name, row)
            assert 0 < row["p50_ms"] <= row["p99_ms"]
            assert 1 <= row["mean_batch"] <= 8
        size = level["images_per_request"]
        assert level["service"]["req_s"] * size == pytest.approx(level["service"]["img_s"])
        assert level["raw"]["mean_batch"] == 8
        assert level["service_over_raw"] == pytest.approx(level["service"]["img_s"] / level["raw"]["img_s"])
        assert level["service_over_litserve"] == pytest.approx(
            level["service"]["img_s"] / level["litserve"]["img_s"])
        assert level["client_ceiling_rps"] > 0 and level["client_ceiling"]["errors"] == 0
    assert result["big_labels"]["miss_ms"] > 0
    assert result["timings_s"]["start-up: service, LitServe and the raw model"] > 0
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert "service/LitServe" in serve_bench.format_report(result)
