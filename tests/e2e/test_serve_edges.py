"""`zscl serve` at its edges, all real processes and real sockets: a client that leaves mid-body,
oversized and slow requests a reverse proxy would cut off, and an embedded worker whose
`zscl serve` was killed mid-training."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ADMIN, ADMIN_KEY
from tests.helpers.archives import stripes_zip, write_reference_dir
from tests.helpers.processes import (REPO, REQUEST_TIMEOUT_S, START_DEADLINE_S, STOP_DEADLINE_S, Stack,
                                     kill_session, session_processes, wait_until)
from tests.helpers.synthetic import FAST_HPARAMS

pytestmark = pytest.mark.slow


def _stack(data_dir: Path, tmp_path: Path, **env: str) -> Stack:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("ZSCL_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    base.update({"ZSCL_DATA_DIR": str(data_dir), "ZSCL_ADMIN_KEY": ADMIN_KEY,
                 "ZSCL_MODEL": str(data_dir / "versions" / "v-colour"), "ZSCL_TORCH_THREADS": "1",
                 "ZSCL_API_WORKERS": "1", "ZSCL_START_WORKER": "false", **env})
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    return Stack(data_dir, base, logs)


@contextlib.contextmanager
def _serving(data_dir: Path, tmp_path: Path, **env: str) -> Iterator[Stack]:
    stack = _stack(data_dir, tmp_path, **env)
    try:
        stack.api()
        yield stack
    except BaseException:
        print(stack.log_tail())
        print("\n".join(stack.slow_answers))
        raise
    finally:
        stack.close()
        for proc in stack.procs:
            kill_session(proc.pid)


@pytest.fixture()
def served(data_dir, tmp_path):
    """A running `zscl serve` (one API process, no worker) of the colour model; its Stack."""
    with _serving(data_dir, tmp_path) as stack:
        yield stack


def _requests_by_status(url: str, route: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=REQUEST_TIMEOUT_S).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "zscl_http_requests_total" and sample.labels["route"] == route:
                status = sample.labels["status"]
                counts[status] = counts.get(status, 0) + sample.value
    return counts


def _send_half_and_close(port: int, head: str, declared: int) -> None:
    """The request line and headers of a body of ``declared`` bytes, half of it, then close."""
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT_S) as conn:
        conn.sendall(head.format(length=declared).encode() + b"x" * (declared // 2))
        time.sleep(0.3)  # let the server read the half before the connection goes


# -- a client that disconnects mid-body -------------------------------------------------------

def test_a_client_gone_mid_body_is_a_499_without_a_traceback(served):
    boundary = "zsclboundary"
    classify = ("POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; "
                "filename=\"r.png\"\r\nContent-Type: image/png\r\n\r\n")
    upload = ("POST /v1/datasets?name=gone HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
              f"Content-Type: application/zip\r\nX-API-Key: {ADMIN['X-API-Key']}\r\n\r\n")
    _send_half_and_close(served.port, classify, 200_000)
    _send_half_and_close(served.port, upload, 400_000)

    def counted() -> bool:
        return (_requests_by_status(served.url, "/v1/classify").get("499") == 1
                and _requests_by_status(served.url, "/v1/datasets").get("499") == 1)

    deadline = time.monotonic() + START_DEADLINE_S
    while not counted() and time.monotonic() < deadline:
        time.sleep(0.2)
    classify_counts = _requests_by_status(served.url, "/v1/classify")
    upload_counts = _requests_by_status(served.url, "/v1/datasets")
    assert classify_counts == {"499": 1.0}, classify_counts
    assert upload_counts == {"499": 1.0}, upload_counts
    # the API's log is written by a thread of its own (service/logs.py): it may lag the metrics
    wait_until(lambda: (served.logs / "api.log").read_text().count("client disconnected") >= 2,
               START_DEADLINE_S, 0.1, "both disconnects logged")
    log = (served.logs / "api.log").read_text()
    assert "Traceback" not in log, log
    assert log.count("client disconnected") == 2, log
    # the server is fine: a whole request still gets its answer
    assert httpx.get(f"{served.url}/readyz", timeout=REQUEST_TIMEOUT_S).status_code == 200


# -- limits a reverse proxy would set ---------------------------------------------------------

# these timings are what the tests below check (the limits, and a cheap request's latency while
# attackers send), not patience: they stay fixed
HEAD_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
KEEPALIVE_S = 1.0
CUT_OFF_WITHIN_S = 10.0   # generous for a loaded machine; without the limits: never
FAST_S = 3.0              # a cheap request while attackers send (it took 24 s before the limits)


def _status_line(answer: bytes) -> str:
    return answer.split(b"\r\n", 1)[0].decode(errors="replace")


def _request(port: int, raw: bytes) -> str:
    """Send ``raw``; the status line of the answer (empty when the server just closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT_S) as conn:
        conn.sendall(raw)
        try:
            return _status_line(conn.recv(65536))
        except ConnectionResetError:
            return ""


def _huge_header(port: int, megabytes: int) -> tuple[float, str]:
    """Send a request whose one header is ``megabytes`` long; the seconds until the server
    answered or closed the connection, and its status line (empty if it closed without one)."""
    began = time.monotonic()
    chunk = b"a" * (1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=CUT_OFF_WITHIN_S) as conn:
        try:
            conn.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(megabytes):
                conn.sendall(chunk)
                if time.monotonic() - began > CUT_OFF_WITHIN_S:
                    return float("inf"), "still sending"
            conn.sendall(b"\r\n\r\n")
            answer = _status_line(conn.recv(65536))
        except (BrokenPipeError, ConnectionResetError):
            answer = ""
        except TimeoutError:
            return float("inf"), "no answer"
    return time.monotonic() - began, answer


@pytest.mark.parametrize("processes", ["1", "2"])
def test_oversized_heads_are_refused_at_once_and_cheap_requests_stay_fast(data_dir, tmp_path,
                                                                          processes):
    with _serving(data_dir, tmp_path, ZSCL_API_WORKERS=processes) as stack:
        results: list[tuple[float, str]] = []
        attackers = [threading.Thread(target=lambda: results.append(_huge_header(stack.port, 100)))
                     for _ in range(4)]
        latencies = []
        for attacker in attackers:
            attacker.start()
        while any(a.is_alive() for a in attackers):
            began = time.monotonic()
            assert httpx.get(f"{stack.url}/readyz", timeout=REQUEST_TIMEOUT_S).status_code == 200
            latencies.append(time.monotonic() - began)
        for attacker in attackers:
            attacker.join()
        assert len(results) == 4
        for seconds, answer in results:
            assert seconds < CUT_OFF_WITHIN_S, results
            assert answer in ("", "HTTP/1.1 431 Request Header Fields Too Large"), results
        assert latencies and max(latencies) < FAST_S, latencies

        many = b"".join(b"X-H%d: v\r\n" % i for i in range(101))
        assert _request(stack.port, b"GET /livez HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n") == \
            "HTTP/1.1 431 Request Header Fields Too Large"
        assert _request(stack.port, b"GET /livez?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n") \
            == "HTTP/1.1 414 Request-URI Too Long"
        # under the limits: 99 headers and a body far over one read are a request like any other
        fine = b"".join(b"X-H%d: v\r\n" % i for i in range(98))
        assert _request(stack.port, b"GET /livez HTTP/1.1\r\nHost: x\r\n" + fine + b"\r\n") == \
            "HTTP/1.1 200 OK"
        response = httpx.post(f"{stack.url}/v1/classify", content=b"{" + b" " * 2_000_000 + b"}",
                              headers={"Content-Type": "application/json"}, timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 422, response.text


def _whole_response(conn: socket.socket) -> bytes:
    """One response with a Content-Length, read to its end (it may come in several pieces)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += conn.recv(65536)
    return data


def _until_closed(conn: socket.socket, drip: bytes | None) -> tuple[float, str]:
    """Send ``drip`` a byte a second (or nothing) until the server answers or closes; the
    seconds that took and the status line (empty if it closed without one)."""
    began = time.monotonic()
    conn.settimeout(1.0)
    sent = 0
    while time.monotonic() - began < 2 * CUT_OFF_WITHIN_S:
        try:
            if drip is not None:
                conn.sendall(drip[sent % len(drip):][:1])
                sent += 1
            answer = conn.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
        return time.monotonic() - began, _status_line(answer)
    return float("inf"), "still open"


def test_slow_and_idle_connections_are_closed_within_their_timeouts(data_dir, tmp_path):
    env = {"ZSCL_HTTP_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S), "ZSCL_HTTP_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
           "ZSCL_HTTP_KEEPALIVE_TIMEOUT_S": str(KEEPALIVE_S)}
    with _serving(data_dir, tmp_path, **env) as stack:
        def connect(first: bytes = b"") -> socket.socket:
            conn = socket.create_connection(("127.0.0.1", stack.port), timeout=REQUEST_TIMEOUT_S)
            conn.sendall(first)
            return conn

        def slow_head():
            return _until_closed(connect(b"GET /livez HTTP/1.1\r\n"), b"X-Slow: drip")

        def slow_body():
            head = (b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                    b"Content-Type: application/json\r\n\r\n")
            return _until_closed(connect(head), b" ")

        def idle():
            return _until_closed(connect(), None)

        def idle_after_a_request():
            conn = connect(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _status_line(_whole_response(conn)) == "HTTP/1.1 200 OK"
            return _until_closed(conn, None)

        cases = {"slow head": slow_head, "slow body": slow_body, "idle": idle,
                 "kept alive": idle_after_a_request}
        results = {}
        threads = [threading.Thread(target=lambda n=n, f=f: results.update({n: f()}))
                   for n, f in cases.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        slack = 4.0  # a busy machine's timers and this thread's polling
        assert HEAD_TIMEOUT_S - 0.5 < results["slow head"][0] < HEAD_TIMEOUT_S + slack, results
        assert results["slow head"][1] == "HTTP/1.1 408 Request Timeout", results
        assert BODY_TIMEOUT_S - 0.5 < results["slow body"][0] < BODY_TIMEOUT_S + slack, results
        assert results["slow body"][1] == "HTTP/1.1 408 Request Timeout", results
        assert HEAD_TIMEOUT_S - 0.5 < results["idle"][0] < HEAD_TIMEOUT_S + slack, results
        assert results["idle"][1] == "", results
        assert KEEPALIVE_S - 0.5 < results["kept alive"][0] < KEEPALIVE_S + slack, results
        assert _requests_by_status(stack.url, "/v1/classify") == {"408": 1.0}
        wait_until(lambda: "the body came too slowly" in (stack.logs / "api.log").read_text(),
                   START_DEADLINE_S, 0.1, "the slow body logged")  # by the log's own thread


# -- an embedded worker whose `zscl serve` was killed -----------------------------------------

def test_an_embedded_worker_stops_by_itself_when_zscl_serve_is_killed(data_dir, tmp_path):
    reference = write_reference_dir(tmp_path / "reference")
    with _serving(data_dir, tmp_path, ZSCL_START_WORKER="true",
                  ZSCL_REFERENCE_DIR=str(reference)) as stack:
        serve = stack.procs[0]
        stripes = stack.upload(stripes_zip(), "stripes")
        job = stack.submit(stripes["id"], hparams={**FAST_HPARAMS, "steps": 5000})
        stack.wait_job(job["id"], lambda j: j["step"] > 0, step_s=0.2)  # training started
        workers = set(session_processes(serve.pid)) - {serve.pid}
        assert len(workers) >= 2, workers  # the worker and its pool process, training

        os.kill(serve.pid, signal.SIGKILL)
        serve.wait()
        killed = time.monotonic()
        # it stops by itself (measured: 6 s on 2 busy cores, 0.5 s to notice, then Celery's cold
        # shutdown); the deadline is only a stop's patience, the log line says who stopped it
        wait_until(lambda: not session_processes(serve.pid), STOP_DEADLINE_S, 0.1,
                   "the embedded worker gone after zscl serve was killed")
        print(f"the orphaned worker stopped in {time.monotonic() - killed:.1f} s")
        assert f"zscl serve (pid {serve.pid}) is gone: stopping this worker" in \
            (stack.logs / "api.log").read_text()


def test_start_up_reports_a_worker_left_by_an_earlier_run(data_dir, tmp_path):
    # a worker with no parent watch (as before it existed), named in the pid file as a killed
    # `zscl serve` leaves it
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSCL_")}
    env.update({"ZSCL_DATA_DIR": str(data_dir), "ZSCL_MODEL": str(data_dir / "versions" / "v-colour")})
    leftover = subprocess.Popen([sys.executable, "-m", "zscl_cli", "worker", "--log-level", "WARNING"],
                                cwd=REPO, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (data_dir / "embedded-worker.pid").write_text(f"{leftover.pid}\n")
        with _serving(data_dir, tmp_path, ZSCL_START_WORKER="true") as stack:
            log = (stack.logs / "api.log").read_text()
            assert (f"the worker of an earlier `zscl serve` is still running (pid {leftover.pid})"
                    in log), log
            assert (data_dir / "embedded-worker.pid").read_text().strip() != str(leftover.pid)
        assert not (data_dir / "embedded-worker.pid").exists()  # a clean stop removes it
    finally:
        kill_session(leftover.pid)
        leftover.wait()


# -- a log reader that stops reading ----------------------------------------------------------

def test_requests_are_answered_while_nobody_reads_the_log(data_dir, tmp_path):
    # `zscl serve` with its output a pipe that nobody reads (a stuck log collector): its access
    # log (about 57 bytes a request) fills the pipe's 64 KiB after about 1,150 requests. Before
    # service/logs.py every request from then on waited on the write (none was answered after
    # request 1,044 in one run): here the client's patience, REQUEST_TIMEOUT_S, runs out
    stack = _stack(data_dir, tmp_path)
    logged = bytearray()

    def read_log() -> bytes:  # all the server has written so far
        output = stack.procs[0].stdout
        os.set_blocking(output.fileno(), False)
        logged.extend(output.read() or b"")
        return bytes(logged)

    try:
        stack.api(log_level="info", stdout=subprocess.PIPE)
        with httpx.Client(base_url=stack.url, timeout=REQUEST_TIMEOUT_S) as client:
            for _ in range(3000):  # about 170 KiB of access log
                assert client.get("/livez").status_code == 200
        # once read again, the log has every request: the queue (10,000 records) held what the
        # pipe could not (tests/service/test_logs.py: past it, records are dropped and counted)
        wait_until(lambda: read_log().count(b'"GET /livez HTTP/1.1" 200') >= 3000,
                   START_DEADLINE_S, 0.1, "the 3000 requests logged")
    except BaseException:
        print(read_log().decode(errors="replace")[-3000:])
        raise
    finally:
        for proc in stack.procs:
            kill_session(proc.pid)
            proc.wait()
