"""benchmarks.serve_bench: its pure parts against hand-computed values, and one real run on the
CPU (the service, the raw forward and the LitServe peer, two client processes, request sizes 1
and 4) whose figures must be complete and sane."""

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

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
              "batches": (2, 8), "faults": 4, "cpu_s": 0.05},
             {"images": 12, "requests": 3, "wall_s": 1.0, "latencies": [0.02, 0.02, 0.02], "errors": 1,
              "batches": (1, 12), "faults": 6, "cpu_s": 0.09}]
    row = serve_bench.summarise(parts, 4)
    assert row["img_s"] == 10.0 and row["req_s"] == 2.5
    assert row["p50_ms"] == pytest.approx(20.0)
    assert row["mean_batch"] == pytest.approx(20 / 3)
    assert row["faults_per_image"] == pytest.approx(0.5)
    assert row["cpu_ms_per_image"] == pytest.approx(7.0)  # 140 ms over 20 images
    assert row["errors"] == 1
    del parts[1]["batches"]  # one round without forwards known: the mean is unknown
    assert serve_bench.summarise(parts, 4)["mean_batch"] is None
    del parts[0]["cpu_s"]  # likewise the CPU time
    assert serve_bench.summarise(parts, 4)["cpu_ms_per_image"] is None


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
            if sys.platform.startswith("linux"):  # a forward costs CPU time on every side
                assert row["cpu_ms_per_image"] > 0, (name, row)
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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_server_s_cpu_time_counts_its_descendants():
    burn = ("import sys, time\nstarted = time.process_time()\n"
            "while time.process_time() - started < 0.4: pass\n"
            "print('burnt', flush=True)\ntime.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time\n"
                               f"subprocess.Popen([sys.executable, '-c', {burn!r}])\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert parent.stdout.readline().strip() == "burnt"  # the grandchild has spent its 0.4 s
        faults, cpu_s = serve_bench.process_tree(parent.pid)
        assert 0.4 <= cpu_s < 5 and faults > 0
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    assert serve_bench.process_tree(parent.pid) is None  # gone


def _state(pid: int) -> str:
    """A process's state letter from /proc (R, S, T for stopped, ...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_only_the_measured_server_runs_and_the_idle_one_is_continued_after(tmp_path):
    import subprocess
    import time

    def idle_server() -> subprocess.Popen:  # a server with a worker process in its session
        return subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                                 "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                                 "time.sleep(60)"], start_new_session=True)

    servers = serve_bench.Servers.__new__(serve_bench.Servers)
    servers.procs, servers.pause_idle = {"service": idle_server(), "litserve": idle_server()}, True
    try:
        time.sleep(0.5)  # both have started their worker
        groups = {name: [int(p) for p in subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True,
                                                          text=True).stdout.split()]
                  for name, proc in servers.procs.items()}
        assert all(len(pids) == 2 for pids in groups.values()), groups

        def states(name: str) -> set[str]:
            return {_state(pid) for pid in groups[name]}

        with servers.only("service"):
            time.sleep(0.2)
            assert states("litserve") == {"T"} and "T" not in states("service")
        with servers.only("raw"):  # not a server: neither runs
            time.sleep(0.2)
            assert states("litserve") == states("service") == {"T"}
        time.sleep(0.2)
        assert "T" not in states("service") | states("litserve")
        servers.pause_idle = False  # --no-pause
        with servers.only("service"):
            time.sleep(0.2)
            assert "T" not in states("litserve")
    finally:
        for proc in servers.procs.values():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
