"""Head-cache misses (new labels: seconds of text-tower work) never hold up cached requests.

A real server of the colour CLIP (tests/helpers/colour.py) with a text tower 4x wider and twice
as deep as the tiny one, so that a head of 1,000 new labels takes about a second to build on one
torch thread, and answers that stay fixed by construction (a red image is "red").
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import threading
import time
import uuid

import httpx
import pytest

from service.app import create_app
from tests.helpers import ADMIN
from tests.helpers.colour import COLOUR_LABELS, live_app, make_colour_clip, make_settings, png_bytes
from tests.helpers.processes import JOB_STALL_S, REQUEST_TIMEOUT_S, wait_progressing, wait_until
from tests.helpers.synthetic import TINY_CFG, TINY_PREPROCESS
from zscl_core import save_version

SLOW_TEXT = {**TINY_CFG, "text_cfg": {**TINY_CFG["text_cfg"], "width": 256, "layers": 4, "heads": 4}}
VERSION = "v-slow-text"
RED = ("r.png", png_bytes("red"))


@pytest.fixture(scope="module")
def slow_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("slow-text")
    config = root / "slow-text-clip.json"
    config.write_text(json.dumps({"model_cfg": SLOW_TEXT, "preprocess_cfg": TINY_PREPROCESS}))
    loaded = make_colour_clip(config)
    save_version(root / "versions", loaded.model, loaded.spec, version_id=VERSION,
                 metadata={"source": "test"})
    return root


@pytest.fixture()
def slow_dir(tmp_path, slow_store):
    shutil.copytree(slow_store / "versions", tmp_path / "versions")
    return tmp_path


@contextlib.contextmanager
def serving(data_dir, **overrides):
    """A real uvicorn server of the slow-text colour app in a thread, ready; yields (url, app)."""
    app = create_app(make_settings(data_dir, model=str(data_dir / "versions" / VERSION), **overrides))
    with live_app(app) as url:
        yield url, app


# eight templates make a head eight times the work (about 8 s on one idle thread): a build that
# must still be running while the test sends more requests, however slowly a loaded machine
# sends them (8,000 prompts: the servers that use it raise max_prompts to 10,000)
EIGHT = tuple(f"{prefix} {{}}." for prefix in ("a", "the", "one", "some", "this", "that", "my", "your"))


def new_labels(n: int = 1000) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"thing {i} {tag}" for i in range(n)]


def classify(client: httpx.Client, labels: list[str], templates=("a photo of a {}.",)) -> httpx.Response:
    files = [("images", (RED[0], RED[1], "image/png"))]
    return client.post("/v1/classify", files=files,
                       data={"labels": ",".join(labels), "templates": list(templates)})


def cached(client: httpx.Client) -> float:
    """One cached-label request's latency in seconds (it must answer "red")."""
    started = time.perf_counter()
    response = classify(client, COLOUR_LABELS.split(","))
    seconds = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["labels"][0]["label"] == "red"
    return seconds


def in_background(url: str, labels: list[str], results: list, **kwargs) -> threading.Thread:
    """A classify request on a thread of its own; its answer is appended to ``results``. No
    deadline of its own: queued behind other builds on a loaded machine it may wait minutes,
    and :func:`wait_answered` waits for it as long as the builds move on."""
    def send() -> None:
        with httpx.Client(base_url=url, timeout=None) as client:
            results.append(classify(client, labels, **kwargs))

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def wait_answered(threads: list[threading.Thread], answers: list, builder) -> None:
    """Until every request of ``threads`` has ended, however long that takes, as long as
    something moves (a build ends, an answer arrives); a hang fails after JOB_STALL_S."""
    def poll() -> tuple[bool, tuple[int, int, int]]:
        ended = not any(thread.is_alive() for thread in threads)
        return ended, (len(answers), builder.pending, builder.built)

    wait_progressing(poll, JOB_STALL_S, 0.05, "the heavy requests answered")


def build_count(url: str, cause: str = "request") -> float:
    for line in httpx.get(f"{url}/metrics", timeout=REQUEST_TIMEOUT_S).text.splitlines():
        if line.startswith(f'zscl_head_build_seconds_count{{cause="{cause}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_cached_requests_keep_their_latency_while_heavy_builds_run(slow_dir):
    # more heavy requests than asyncio's default pool has threads (min(32, cores + 4)): before
    # the head builder, they filled it and a cached request waited for a whole build
    n_heavy = min(32, (os.cpu_count() or 1) + 4) + 2
    with serving(slow_dir, head_build_queue=n_heavy) as (url, app), \
            httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        builder = app.state.services.holder.builder
        cached(client)  # builds the colour labels' head
        idle = [cached(client) for _ in range(20)]
        heavy: list[httpx.Response] = []
        built = builder.built
        threads = [in_background(url, new_labels(), heavy) for _ in range(n_heavy)]
        # every heavy request sent: its head being built, waiting, or (a slow sender) built
        wait_until(lambda: builder.pending + builder.built - built >= n_heavy, REQUEST_TIMEOUT_S, 0.01,
                   "every heavy request's build submitted")
        busy = []
        while len(busy) < 20 and any(t.is_alive() for t in threads):
            busy.append(cached(client))
        wait_answered(threads, heavy, builder)
        assert len(heavy) == n_heavy and all(r.status_code == 200 for r in heavy), \
            [r.text for r in heavy if r.status_code != 200]
        assert len(busy) >= 10, f"the heavy requests ended before 10 cached ones ({busy})"
    idle_ms, worst_ms = statistics.median(idle) * 1e3, max(busy) * 1e3
    # each heavy head takes over a second of a core: a cached request that waited behind even
    # one build (as every request did once asyncio's default pool was full) would show it. The
    # slack is half a build, not less: on a loaded CI machine a cached request alone has taken
    # 124 ms (3.5 ms idle), which is the machine, not the service.
    assert worst_ms < 2 * idle_ms + 500, f"cached: {idle_ms:.1f} ms idle, up to {worst_ms:.1f} ms busy"


def test_heavy_requests_beyond_the_build_queue_get_429_with_retry_after(slow_dir):
    with serving(slow_dir, head_builders=1, head_build_queue=1, max_prompts=10_000) as (url, app), \
            httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        builder = app.state.services.holder.builder
        cached(client)
        builds = build_count(url)
        first, second = new_labels(), new_labels()
        answers: list[httpx.Response] = []
        threads = [in_background(url, first, answers, templates=EIGHT)]  # long: runs throughout
        wait_until(lambda: builder.pending == 1, REQUEST_TIMEOUT_S, 0.01, "the first build running")
        threads.append(in_background(url, second, answers))
        wait_until(lambda: builder.pending == 2, REQUEST_TIMEOUT_S, 0.01, "the second build waiting")
        # the same head: shares its build
        threads.append(in_background(url, first, answers, templates=EIGHT))

        refused = classify(client, new_labels())
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        assert "ZSCL_HEAD_BUILD_QUEUE" in refused.json()["detail"]
        stored = client.put("/v1/label-sets/many", json={"classnames": new_labels(),
                                                         "templates": ["a {}"]}, headers=ADMIN)
        assert stored.status_code == 429 and "Retry-After" in stored.headers, stored.text
        # cached labels are still answered meanwhile: a bound the test is about, not patience
        # (a loaded CI machine has taken 124 ms for one; waiting for a build adds about 1 s)
        assert cached(client) < 1.0

        wait_answered(threads, answers, builder)
        assert [r.status_code for r in answers] == [200, 200, 200], [r.text for r in answers]
        assert build_count(url) == builds + 2  # the repeated labels were built once
        assert builder.pending == 0
        assert classify(client, new_labels()).status_code == 200  # room again


def test_a_heavy_request_whose_client_disconnects_abandons_its_build(slow_dir):
    # 1,000 labels x 8 templates: about 8 s of building, cut short at its next chunk of prompts
    with serving(slow_dir, max_prompts=10_000) as (url, app):
        builder = app.state.services.holder.builder
        labels = new_labels()
        # the client gives up after 1 s: the disconnect under test, not patience
        with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=url, timeout=1.0) as client:
            classify(client, labels, templates=EIGHT)
        gave_up = time.monotonic()
        wait_until(lambda: builder.pending == 0, REQUEST_TIMEOUT_S, 0.05, "the abandoned build to stop")
        stopping = time.monotonic() - gave_up
        assert build_count(url) == 0  # it ended with no head: abandoned, not finished
        # and promptly: in less than half the time the whole build takes on this machine now
        # (timed next, so that a loaded machine slows both alike)
        with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
            started = time.monotonic()
            assert classify(client, labels, templates=EIGHT).status_code == 200
            whole = time.monotonic() - started
        assert build_count(url) == 1
        assert stopping < whole / 2, \
            f"the abandoned build took {stopping:.1f}s to stop; a whole one {whole:.1f}s"


def test_a_queued_build_whose_client_disconnects_is_dropped_but_a_shared_one_is_kept(slow_dir):
    with serving(slow_dir, head_builders=1, max_prompts=10_000) as (url, app):
        builder = app.state.services.holder.builder
        kept, dropped, shared = new_labels(), new_labels(), new_labels()
        answers: list[httpx.Response] = []
        threads = [in_background(url, kept, answers, templates=EIGHT)]  # long: runs throughout
        wait_until(lambda: builder.pending == 1, REQUEST_TIMEOUT_S, 0.01, "the first build running")
        threads.append(in_background(url, shared, answers))
        wait_until(lambda: builder.pending == 2, REQUEST_TIMEOUT_S, 0.01, "the shared build waiting")
        # two clients give up (after 0.5 s: the disconnect under test) while their builds wait:
        # one alone on its labels, one sharing them with a client that stays
        for labels in (dropped, shared):
            with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=url, timeout=0.5) as client:
                classify(client, labels)
        wait_answered(threads, answers, builder)
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        wait_until(lambda: builder.pending == 0, REQUEST_TIMEOUT_S, 0.05, "the builder idle")
        heads = app.state.services.holder.heads
        templates = ("a photo of a {}.",)
        assert (VERSION, tuple(kept), EIGHT) in heads
        assert (VERSION, tuple(shared), templates) in heads
        assert (VERSION, tuple(dropped), templates) not in heads
        assert build_count(url) == 2
