"""`zscl serve` running two API processes on one port (``ZSCL_API_WORKERS=2``), all real
processes: the first start builds the model once; requests are answered by both processes;
/metrics sums both; an activation reaches both with no failed request; SIGTERM to `zscl serve`
stops every process it started, with one API process as with two."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ADMIN, ADMIN_KEY
from tests.helpers.colour import COLOUR_LABELS, png_bytes
from tests.helpers.processes import (REQUEST_TIMEOUT_S, START_DEADLINE_S, STOP_DEADLINE_S, Stack,
                                     kill_session, session_processes, wait_until)

SWAPPED_RED = "green"  # a red image's answer under v-swapped, by construction (helpers/colour.py)


@dataclass(frozen=True)
class Answer:
    started: float
    done: float
    status: int
    pid: str
    version: str | None = None
    label: str | None = None


class Clients:
    """Threads classifying a red image in a loop, each request on a new connection (so that
    either process may accept it), keeping every answer."""

    def __init__(self, url: str, threads: int = 4):
        self.url = url
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT_S)

    def _run(self) -> None:
        image = png_bytes("red")
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                response = httpx.post(f"{self.url}/v1/classify", files=[("images", ("r.png", image))],
                                      data={"labels": COLOUR_LABELS, "top_k": "1"},
                                      timeout=REQUEST_TIMEOUT_S)
            except httpx.HTTPError:  # refused or cut off: a failed request like any other
                self.answers.append(Answer(started, time.monotonic(), 0, "?"))
                continue
            done, version, label = time.monotonic(), None, None
            if response.status_code == 200:
                body = response.json()
                version, label = body["model_version"], body["results"][0]["labels"][0]["label"]
            self.answers.append(Answer(started, done, response.status_code,
                                       response.headers.get("X-Process-Id", "?"), version, label))

    def pids(self, version: str | None = None, after: float = 0.0) -> set[str]:
        return {a.pid for a in list(self.answers)
                if a.status == 200 and a.done > after and version in (None, a.version)}


def _sample_sum(text: str, name: str, **labels: str) -> float:
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def _version_dirs(data_dir: Path) -> set[str]:
    return {p.name for p in (data_dir / "versions").iterdir() if p.is_dir() and not p.name.startswith(".")}


def _stack(data_dir: Path, tmp_path: Path, **env: str) -> Stack:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("ZSCL_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    base.update({"ZSCL_DATA_DIR": str(data_dir), "ZSCL_ADMIN_KEY": ADMIN_KEY,
                 "ZSCL_RECONCILE_INTERVAL_S": "0.2", **env})
    logs = tmp_path / "logs"
    logs.mkdir()
    return Stack(data_dir, base, logs)


def _close(stack: Stack) -> None:
    stack.close()
    for proc in stack.procs:  # whatever a failed test left behind
        kill_session(proc.pid)


def _stop_with_sigterm(serve) -> None:
    """SIGTERM to `zscl serve` alone: it exits 0, and every process it started goes with it."""
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(timeout=STOP_DEADLINE_S) == 0
    wait_until(lambda: not session_processes(serve.pid), STOP_DEADLINE_S, 0.1,
               "every process of zscl serve gone")


@pytest.mark.slow
def test_two_api_processes_share_the_port_the_swap_and_the_metrics(data_dir, tiny_config_path, tmp_path):
    # ZSCL_MODEL is a config, not a saved version: the first start builds and saves it
    stack = _stack(data_dir, tmp_path, ZSCL_MODEL=str(tiny_config_path), ZSCL_API_WORKERS="2")
    try:
        _check(stack, data_dir)
    except BaseException:
        print(stack.log_tail())
        raise
    finally:
        _close(stack)


@pytest.mark.slow
def test_sigterm_stops_one_api_process_and_the_embedded_worker(data_dir, tmp_path):
    stack = _stack(data_dir, tmp_path, ZSCL_MODEL=str(data_dir / "versions" / "v-colour"),
                   ZSCL_API_WORKERS="1")
    try:
        serve = stack.api()
        assert len(session_processes(serve.pid)) >= 2  # zscl serve and its worker
        _stop_with_sigterm(serve)
    except BaseException:
        print(stack.log_tail())
        raise
    finally:
        _close(stack)


def _check(stack: Stack, data_dir: Path) -> None:
    before = _version_dirs(data_dir)
    serve = stack.api()
    ready: set[str] = set()

    def both_ready() -> bool:
        response = httpx.get(f"{stack.url}/readyz", timeout=REQUEST_TIMEOUT_S)
        if response.status_code == 200:
            ready.add(response.headers["X-Process-Id"])
        return len(ready) == 2

    wait_until(both_ready, START_DEADLINE_S, 0.05, "two API processes ready")
    # 1. the first start built the model once, before the processes started: one new version
    built = _version_dirs(data_dir) - before
    assert len(built) == 1, built
    first = built.pop()
    assert stack.served() == first

    with Clients(stack.url) as clients:
        wait_until(lambda: clients.pids() == ready, START_DEADLINE_S, 0.05,
                   "classify answered by both processes")
        # 2. activate another version while the clients classify: every process follows
        response = httpx.post(f"{stack.url}/v1/models/v-swapped/activate", headers=ADMIN,
                              timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 200, response.text
        activated = time.monotonic()
        # the other process follows at its next reconcile (0.2 s) and a load of the version
        wait_until(lambda: clients.pids("v-swapped", after=activated) == ready, START_DEADLINE_S, 0.02,
                   "both processes serving v-swapped")
        time.sleep(0.5)
    answers = list(clients.answers)
    assert [a for a in answers if a.status != 200] == []
    assert {a.label for a in answers if a.version == "v-swapped"} == {SWAPPED_RED}
    # once a process has answered with v-swapped, whatever it answers later is v-swapped
    for pid in ready:
        swapped = min(a.done for a in answers if a.pid == pid and a.version == "v-swapped")
        assert {a.version for a in answers if a.pid == pid and a.started > swapped} == {"v-swapped"}

    # 3. /metrics, answered by one process, counts what both served
    per_process = collections.Counter(a.pid for a in answers)
    assert set(per_process) == ready and min(per_process.values()) > 0

    def summed() -> tuple[str, str] | None:
        scrape = httpx.get(f"{stack.url}/metrics", timeout=REQUEST_TIMEOUT_S)
        text = scrape.text
        counted = _sample_sum(text, "zscl_http_requests_total", route="/v1/classify", status="200")
        lookups = (_sample_sum(text, "zscl_head_cache_hits_total")
                   + _sample_sum(text, "zscl_head_cache_misses_total"))
        return (text, scrape.headers["X-Process-Id"]) if counted == lookups == len(answers) else None

    text, scraped_by = wait_until(summed, START_DEADLINE_S, 0.2, "/metrics summing both processes")
    assert per_process[scraped_by] < len(answers)
    assert _sample_sum(text, "zscl_model_served", model_version="v-swapped") == 2
    assert _sample_sum(text, "zscl_model_served", model_version=first) == 0
    assert _sample_sum(text, "zscl_model_generation") == 2
    assert _sample_sum(text, "zscl_classified_images_total") == len(answers)

    # 4. SIGTERM to `zscl serve` alone stops both API processes and the embedded worker
    family = session_processes(serve.pid)
    assert {serve.pid, *map(int, ready)} <= set(family) and len(family) >= 4, family
    environ = Path(f"/proc/{min(map(int, ready))}/environ").read_bytes().split(b"\0")
    metrics_dir = Path(next(v for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR="))
                       .split(b"=", 1)[1].decode())
    assert metrics_dir.is_dir()
    _stop_with_sigterm(serve)
    assert not metrics_dir.exists()
