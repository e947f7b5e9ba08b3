"""Power loss at the worst moments: `zscl serve` (its API, its embedded worker and the worker's
job process: every process of its session) is SIGKILLed while a job waits for its worker,
during training, during evaluation, during an upload and during a promotion, and restarted on
the same data dir each time.

Embedded mode, all real processes: SQLite records, the SQLite broker, one data dir for every
run. Each crash point is found by watching for it, never by waiting a fixed time:

0. taken: the worker has taken job J1's message from the broker (kombu's SQLAlchemy transport
   marks a message it delivered invisible: read from broker.sqlite), but J1 is still
   ``queued``: the pool process is loading torch for its first job, which takes seconds. After
   the restart the worker sends the queued J1 again and it runs.
1. training: J1 is ``running`` with 0 < step < total (the API, polled every 20 ms). After the
   restart the reaper requeues it (retry 1 of ZSCL_JOB_MAX_RETRIES=1) and it runs again from
   step 0. (J1's gate cannot pass, so J1 never writes a version.)
2. evaluation: J1's retry is ``evaluating`` (polled every 20 ms; the zero-shot suite has 240
   images, so scoring takes most of a second). After the restart J1 has spent its retry: it
   is ``failed`` (WorkerLost).
3. upload: two uploads at once, on raw sockets: one has sent half of its body (its
   ``.upload-*`` spool holds that half on disk), the other has sent all of a large archive and
   is being ingested (its ``.tmp-*`` build directory has appeared in the datasets dir). Neither
   may leave a file or a row.
4. promotion: job J2 passes a lenient gate and the worker saves its candidate. The processes
   are listed beforehand and killed the moment the candidate's weights file appears in its
   ``.tmp-*`` directory under versions/ (polled every ms; saving the tiny model takes about
   50 ms), so the version is half-written, not yet renamed into place. This is the first write
   of a promotion; the registry rows and the pointer come after it. After the restart J2 is
   retried from its start and promotes a complete version.

After every restart, :func:`_check_whole` (once quiescent: :func:`_settle`):
- no ``.upload-*`` or ``.tmp-*`` entry is left in the datasets or the versions dir;
- the dataset dirs are exactly the dataset rows, each with its dataset.json;
- the version dirs are exactly the version rows, each loading with its checksums verified;
- the serving pointer names one of them, the API serves it, and /v1/classify answers 200;
- every dataset, job, version and label-set row from before the kill is there unchanged, but
  the interrupted job's; no dataset or job is new, and no version but that job's candidate;
- no job is left ``running``, ``evaluating`` or ``queued`` by the dead run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import ADMIN, ADMIN_KEY
from tests.helpers.archives import colours_zip, stripes_zip, write_reference_dir
from tests.helpers.colour import png_bytes
from tests.helpers.processes import (JOB_STALL_S, REQUEST_TIMEOUT_S, START_DEADLINE_S, STOP_DEADLINE_S,
                                     Stack, kill_session, session_processes, wait_progressing,
                                     wait_until)
from tests.helpers.synthetic import FAST_HPARAMS
from zscl_core import load_version
from zscl_core.versions import WEIGHTS_NAME

pytestmark = pytest.mark.slow

# a reaped job's heartbeat is this old: shorter than the e2e stacks' (HEARTBEAT_TIMEOUT_S in
# tests/helpers/processes.py), so that a restart finds its job soon; long enough that a live
# worker (it beats every 2 s; a loaded machine delays a beat, by up to SQLite's 10 s lock wait)
# is not taken for a lost one
REAP_AFTER_S = 20
TERMINAL = {"succeeded", "rejected", "failed", "cancelled"}
HPARAMS = {**FAST_HPARAMS, "steps": 30}
STRICT = {"min_new_task_gain": 100}  # never passed
LENIENT = {"min_new_task_gain": -100, "max_mean_drop": 100, "max_dataset_drop": 100}


def test_sigkill_while_queued_training_evaluating_uploading_and_promoting_leaves_all_whole(
        data_dir, tmp_path):
    stack = _stack(data_dir, tmp_path)
    timings = {}
    try:
        started = time.monotonic()
        serve = stack.api()
        stripes = stack.upload(stripes_zip(), "stripes")["id"]
        stack.upload(colours_zip(n=60), "colours", suite=True)
        _admin("PUT", stack, "/v1/label-sets/colours",
               json={"classnames": ["red", "green", "blue", "yellow"], "templates": ["a {} photo"]})
        timings["first start"] = time.monotonic() - started
        j1 = stack.submit(stripes, hparams=HPARAMS, gate=STRICT)["id"]
        crashes = (lambda s: _crash_when_taken(stack, s, j1), lambda s: _crash_in_training(stack, s, j1),
                   lambda s: _crash_in_evaluation(stack, s, j1), lambda s: _crash_in_uploads(stack, s),
                   lambda s: _crash_in_promotion(stack, s, stripes))
        for name, crash in zip(("taken", "training", "evaluation", "upload", "promotion"), crashes):
            started = time.monotonic()
            serve = crash(serve)
            timings[name] = time.monotonic() - started
    except BaseException:
        print(stack.log_tail())
        raise
    finally:
        stack.close()
        for proc in stack.procs:
            kill_session(proc.pid)
    print("timings (s):", {k: round(v, 1) for k, v in timings.items()})


def _crash_when_taken(stack: Stack, serve, j1: str):
    before = _records(stack)
    assert before["jobs"][j1]["state"] == "queued"
    taken = wait_until(lambda: _taken_messages(stack.data_dir), START_DEADLINE_S, 0.002, "J1 taken")
    _power_loss(serve)  # still queued: J1's events, checked after the evaluation crash, say so
    assert taken == 1
    serve = stack.api()
    _check_whole(stack, before, interrupted={j1})
    return serve


def _crash_in_training(stack: Stack, serve, j1: str):
    _watch_job(stack, j1, lambda j: j["state"] == "running" and 0 < j["step"] < j["total_steps"])
    before = _records(stack)
    _power_loss(serve)
    serve = stack.api()
    requeued = wait_until(lambda: [s for s in _state_events(stack, j1) if s.get("retry")],
                          START_DEADLINE_S, 0.2, "J1 requeued")
    assert {k: v for k, v in requeued[0].items() if k != "reason"} == \
        {"state": "queued", "retry": 1, "max_retries": 1}
    _check_whole(stack, before, interrupted={j1})
    return serve


def _crash_in_evaluation(stack: Stack, serve, j1: str):
    caught = _watch_job(stack, j1, lambda j: j["state"] == "evaluating" or j["state"] in TERMINAL)
    assert caught["state"] == "evaluating", f"J1's evaluation was over before it was seen: {caught}"
    before = _records(stack)
    _power_loss(serve)
    serve = stack.api()
    failed = _settle(stack)[j1]
    assert failed["error"]["type"] == "WorkerLost" and "after 1 retry" in failed["error"]["message"]
    assert [s["state"] for s in _state_events(stack, j1)] == \
        ["queued", "running", "queued", "running", "evaluating", "failed"]
    _check_whole(stack, before, interrupted={j1})
    return serve


def _crash_in_uploads(stack: Stack, serve):
    datasets = stack.data_dir / "datasets"
    before = _records(stack)
    with _upload_half(stack, stripes_zip(n=100, seed=21), "half"), \
            _upload_whole(stack, stripes_zip(n=1000, seed=22), "whole"):
        wait_until(lambda: _entries(datasets, ".tmp-"), START_DEADLINE_S, 0.002, "the large upload ingesting")
        _power_loss(serve)
    assert len(_entries(datasets, ".upload-")) == 2 and len(_entries(datasets, ".tmp-")) == 1
    serve = stack.api()
    _settle(stack)
    _check_whole(stack, before, interrupted=set())
    return serve


def _crash_in_promotion(stack: Stack, serve, dataset_id: str):
    versions = stack.data_dir / "versions"
    j2 = stack.submit(dataset_id, hparams=HPARAMS, gate=LENIENT)["id"]
    _watch_job(stack, j2, lambda j: j["state"] == "evaluating")
    before = _records(stack)
    processes = session_processes(serve.pid)  # listed now: the save lasts some 50 ms
    saving = wait_until(lambda: [p for p in _entries(versions, ".tmp-") if (p / WEIGHTS_NAME).exists()],
                        START_DEADLINE_S, 0.001, "J2's candidate being saved")[0]
    for pid in processes:
        os.kill(pid, signal.SIGKILL)
    _power_loss(serve)
    assert saving.is_dir(), "the kill came after the candidate was renamed into place"
    print("J2's candidate when killed:", sorted(p.name for p in saving.iterdir()))
    serve = stack.api()
    done = _settle(stack)[j2]
    assert done["state"] == "succeeded", done
    assert [s["state"] for s in _state_events(stack, j2)] == \
        ["queued", "running", "evaluating", "queued", "running", "evaluating", "succeeded"]
    after = _check_whole(stack, before, interrupted={j2})
    assert after["serving"] == done["candidate_version"]
    assert after["versions"][after["serving"]]["parent"] == done["base_version"] == before["serving"]
    return serve


# -- the server ----------------------------------------------------------------------------------

def _stack(data_dir: Path, tmp_path: Path) -> Stack:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ZSCL_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({"ZSCL_DATA_DIR": str(data_dir), "ZSCL_ADMIN_KEY": ADMIN_KEY,
                "ZSCL_MODEL": str(data_dir / "versions" / "v-colour"), "ZSCL_TORCH_THREADS": "1",
                "ZSCL_API_WORKERS": "1", "ZSCL_START_WORKER": "true",
                "ZSCL_REFERENCE_DIR": str(write_reference_dir(tmp_path / "reference", n=48)),
                "ZSCL_RECONCILE_INTERVAL_S": "0.5", "ZSCL_JOB_MAX_RETRIES": "1",
                "ZSCL_JOB_HEARTBEAT_TIMEOUT_S": str(REAP_AFTER_S)})
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    return Stack(data_dir, env, logs)


def _power_loss(serve: subprocess.Popen) -> None:
    """SIGKILL every process of `zscl serve`'s session (API, worker, job process), as a power
    loss stops them: none gets to clean up."""
    kill_session(serve.pid)
    serve.wait()
    wait_until(lambda: not session_processes(serve.pid), STOP_DEADLINE_S, 0.05, "every killed process gone")


def _admin(method: str, stack: Stack, path: str, **kwargs):
    response = httpx.request(method, f"{stack.url}{path}", headers=ADMIN,
                             timeout=REQUEST_TIMEOUT_S, **kwargs)
    assert response.status_code < 300, response.text
    return response.json()


def _watch_job(stack: Stack, job_id: str, moment) -> dict:
    return stack.wait_job(job_id, moment, step_s=0.02)


def _taken_messages(data_dir: Path) -> int:
    """Messages the worker has taken from the embedded broker, which keeps them, invisible."""
    uri = f"file:{data_dir / 'broker.sqlite'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=REQUEST_TIMEOUT_S)) as broker:
        return broker.execute("SELECT count(*) FROM kombu_message WHERE visible = 0").fetchone()[0]


def _state_events(stack: Stack, job_id: str) -> list[dict]:
    events = _admin("GET", stack, f"/v1/jobs/{job_id}/events", params={"limit": 1000})["events"]
    return [e["data"] for e in events if e["kind"] == "state"]


# -- uploads cut short ---------------------------------------------------------------------------

def _upload_head(stack: Stack, name: str, length: int) -> bytes:
    return (f"POST /v1/datasets?name={name}&test_fraction=0.25 HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{stack.port}\r\nX-API-Key: {ADMIN_KEY}\r\n"
            f"Content-Type: application/zip\r\nContent-Length: {length}\r\n\r\n").encode()


class _upload_half:
    """Half of an archive sent, the connection held open; entered once the server has spooled
    that half to disk."""

    def __init__(self, stack: Stack, body: bytes, name: str):
        self.stack, self.body, self.name = stack, body, name

    def __enter__(self):
        half = len(self.body) // 2
        self.conn = socket.create_connection(("127.0.0.1", self.stack.port), timeout=REQUEST_TIMEOUT_S)
        self.conn.sendall(_upload_head(self.stack, self.name, len(self.body)) + self.body[:half])
        datasets = self.stack.data_dir / "datasets"
        # written through an 8 KiB buffer: the last bytes of the half may wait in it
        wait_until(lambda: any(p.stat().st_size >= half - 8192 for p in _entries(datasets, ".upload-")),
                   START_DEADLINE_S, 0.01, "the half body spooled")
        return self

    def __exit__(self, *exc):
        self.conn.close()


class _upload_whole(_upload_half):
    """A whole archive sent, the answer never read."""

    def __enter__(self):
        self.conn = socket.create_connection(("127.0.0.1", self.stack.port), timeout=REQUEST_TIMEOUT_S)
        self.conn.sendall(_upload_head(self.stack, self.name, len(self.body)) + self.body)
        return self


def _entries(folder: Path, prefix: str) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.name.startswith(prefix)]
    except FileNotFoundError:  # a file removed meanwhile
        return []


# -- what must hold after a restart --------------------------------------------------------------

def _records(stack: Stack) -> dict:
    """Every row the API shows, by kind and key (a version's ``serving`` flag aside: it is the
    pointer's), with the pointer and the version the API has loaded."""
    models = _admin("GET", stack, "/v1/models")
    return {"serving": models["serving"], "loaded": models["loaded"],
            "datasets": {d["id"]: d for d in _admin("GET", stack, "/v1/datasets")},
            "jobs": {j["id"]: j for j in _admin("GET", stack, "/v1/jobs", params={"limit": 500})},
            "versions": {v["id"]: {k: x for k, x in v.items() if k != "serving"}
                         for v in models["versions"]},
            "label_sets": {s["name"]: s for s in _admin("GET", stack, "/v1/label-sets")}}


def _leftovers(data_dir: Path) -> list[str]:
    return [p.name for folder in ("datasets", "versions") for prefix in (".upload-", ".tmp-")
            for p in _entries(data_dir / folder, prefix)]


def _quiet(stack: Stack) -> tuple[dict | None, tuple]:
    """The records once nothing is left to happen: every job ended, the pointer's version
    loaded, no temporary entry left to clean up; else None. Second, what was seen (the records
    and the entries left), for :func:`wait_progressing` to tell a system still moving."""
    records, left = _records(stack), _leftovers(stack.data_dir)
    quiet = (all(j["state"] in TERMINAL for j in records["jobs"].values())
             and records["loaded"] == records["serving"] and not left)
    return (records if quiet else None), (records, left)


def _settle(stack: Stack) -> dict:
    """The jobs by id, once the restarted system is quiescent (the reaper has found the dead
    run's job, REAP_AFTER_S after its last heartbeat, and its retry has ended). Waited
    for as long as the records change."""
    return wait_progressing(lambda: _quiet(stack), JOB_STALL_S, 0.25, "quiescence after the restart")["jobs"]


def _check_whole(stack: Stack, before: dict, interrupted: set[str]) -> dict:
    """The invariants of the module docstring; the records now."""
    data_dir = stack.data_dir
    try:  # start-up removes what the dead run left, just after it answers
        wait_until(lambda: not _leftovers(data_dir), START_DEADLINE_S, 0.1, "the dead run's files removed")
    except AssertionError:
        raise AssertionError(f"files left by the killed run: {_leftovers(data_dir)}") from None
    now = _records(stack)

    datasets = data_dir / "datasets"
    assert {p.name for p in datasets.iterdir()} == set(now["datasets"]), "dataset dirs != rows"
    assert all((datasets / d / "dataset.json").is_file() for d in now["datasets"])
    versions = data_dir / "versions"
    assert {p.name for p in versions.iterdir()} == set(now["versions"]), "version dirs != rows"
    for version_id in now["versions"]:
        assert load_version(versions / version_id).version == version_id  # checksums verified
    assert now["serving"] in now["versions"]
    wait_until(lambda: stack.served() == now["serving"], START_DEADLINE_S, 0.1, "the API serving the pointer")

    for kind in ("datasets", "versions", "label_sets", "jobs"):
        for key, row in before[kind].items():
            if key not in interrupted:
                assert now[kind].get(key) == row, f"{kind} {key} changed: {row} -> {now[kind].get(key)}"
    assert now["datasets"].keys() == before["datasets"].keys()
    assert now["jobs"].keys() == before["jobs"].keys()
    candidates = {now["jobs"][j]["candidate_version"] for j in interrupted} - {None}
    assert now["versions"].keys() - before["versions"].keys() == candidates

    response = httpx.post(f"{stack.url}/v1/classify", timeout=REQUEST_TIMEOUT_S,
                          files=[("images", ("red.png", png_bytes("red"), "image/png"))],
                          data={"labels": "red,green,blue,yellow"})
    assert response.status_code == 200, response.text
    return now
