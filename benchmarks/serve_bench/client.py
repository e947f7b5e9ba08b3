"""The load client: ``--client-procs`` processes (``ClientPool``), each replaying prepared requests
over its share of the keep-alive connections with a minimal asyncio client (``_Connection``,
uvloop where installed); the parent merges their counts and latencies.

Why not httpx: against a trivial endpoint on 2 cores its AsyncClient spent ~920 us of CPU per
request (~1,000 requests/s a process), this client ~21 us with uvloop and ~33 us without.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import re
import select
import subprocess
import sys
import time
from array import array

from .servers import REPO

CHILD_TIMEOUT_S = 120      # beyond a measurement's length, before a silent client process fails

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class _Connection(asyncio.Protocol):
    """One keep-alive connection that sends a prepared request, reads the whole response
    (Content-Length framed) and hands it to its phase, which sends the next or stops."""

    def __init__(self, requests: list[bytes], first: int):
        self.requests, self.next = requests, first
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.phase: _Phase | None = None
        self.need = -1
        self.busy = False
        self.started = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self) -> None:
        self.buffer.clear()
        self.need, self.busy = -1, True
        request = self.requests[self.next % len(self.requests)]
        self.next += 1
        self.started = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = _CONTENT_LENGTH.search(self.buffer, 0, end + 2)
            if length is None:
                raise RuntimeError("a response without Content-Length: this client cannot frame it")
            self.need = end + 4 + int(length.group(1))
        if len(self.buffer) >= self.need:
            self.busy = False
            status = int(self.buffer[9:12])
            self.phase.completed(self, time.perf_counter() - self.started, status)

    def connection_lost(self, exc) -> None:
        if self.phase is not None:
            self.phase.lost(self)


class _Phase:
    """The connections' requests until ``deadline`` (perf_counter; 0: one request each). What
    completes by the deadline counts (``ok``, ``latencies``); requests then in flight are read to
    their end but not counted, so the drain does not lower the rate (``served`` counts every
    success, for the server's own tally)."""

    def __init__(self, connections: list[_Connection], deadline: float):
        self.connections = connections
        self.deadline = deadline
        self.pending = len(connections)
        self.latencies = array("d")
        self.ok = self.served = self.errors = 0
        self.finished = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        for connection in self.connections:
            if connection.transport.is_closing():  # the server closed it since the last phase
                self.errors += 1
                self.pending -= 1
                continue
            connection.phase = self
            connection.send()
        if self.pending:
            await self.finished

    def completed(self, connection: _Connection, latency: float, status: int) -> None:
        in_time = time.perf_counter() <= self.deadline
        if status == 200:
            self.served += 1
            if in_time:
                self.ok += 1
                self.latencies.append(latency)
        else:
            self.errors += 1
        if in_time:
            connection.send()
        else:
            self._retire(connection)

    def lost(self, connection: _Connection) -> None:
        if connection.busy:  # closed under a request: it failed, and this connection is done
            connection.busy = False
            self.errors += 1
            self._retire(connection)

    def _retire(self, connection: _Connection) -> None:
        connection.phase = None
        self.pending -= 1
        if self.pending == 0 and not self.finished.done():
            self.finished.set_result(None)


async def _connect(host: str, port: int, requests: list[bytes], count: int, offset: int) -> list[_Connection]:
    loop = asyncio.get_running_loop()
    connections = []
    for i in range(count):
        _, connection = await loop.create_connection(
            lambda i=i: _Connection(requests, offset + i * 7), host, port)
        connections.append(connection)
    return connections


async def _phase(connections: list[_Connection], deadline: float) -> _Phase:
    phase = _Phase(connections, deadline)
    await phase.run()
    return phase


def _client_job(loop, channel: _Channel, job: dict) -> dict:
    """One measurement in a client process: connect, one warm-up request per connection, say
    ready, wait for go, replay requests for ``job['seconds']``: counts, latencies, and the
    window's monotonic start and end."""
    connections = loop.run_until_complete(_connect(job["host"], job["port"], job["requests"],
                                                   job["connections"], job["offset"]))
    try:
        warm = loop.run_until_complete(_phase(connections, 0.0))
        channel.send(("ready", warm.errors))
        if channel.recv()[0] != "go":
            return {"aborted": True}
        started, deadline = time.monotonic(), time.perf_counter() + job["seconds"]
        phase = loop.run_until_complete(_phase(connections, deadline))
        return {"ok": phase.ok, "served": warm.served + phase.served, "errors": phase.errors,
                "warm_errors": warm.errors, "latencies": phase.latencies.tobytes(),
                "start": started, "end": started + job["seconds"]}
    finally:
        for connection in connections:
            connection.transport.close()
        loop.run_until_complete(asyncio.sleep(0))  # the closes happen now, not at the next job


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def client_process_main() -> None:
    """A client process's loop: pickled jobs on stdin, pickled results on stdout."""
    channel = _Channel(sys.stdin.buffer, sys.stdout.buffer)
    sys.stdout = sys.stderr  # the pipe carries pickles only
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    sets: dict[str, list[bytes]] = {}
    while True:
        try:
            message = channel.recv()
        except EOFError:
            return
        if message[0] == "requests":
            sets[message[1]] = message[2]
        elif message[0] == "run":
            job = dict(message[1], requests=sets[message[1]["key"]])
            try:
                channel.send(("result", _client_job(loop, channel, job)))
            except OSError as exc:  # e.g. connection refused: tell the parent, keep serving
                channel.send(("failed", repr(exc)))


class _Channel:
    """Pickled messages over a pair of pipes."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    def send(self, message) -> None:
        pickle.dump(message, self.writer, protocol=pickle.HIGHEST_PROTOCOL)
        self.writer.flush()

    def recv(self, timeout: float | None = None):
        if timeout is not None and not select.select([self.reader], [], [], timeout)[0]:
            raise TimeoutError(f"no answer from a client process within {timeout:.0f} s")
        return pickle.load(self.reader)


class ClientPool:
    """``procs`` client processes that share each measurement's connections between them.

    Args:
        procs: client processes (each a Python interpreter with its own event loop).
    """

    def __init__(self, procs: int):
        command = [sys.executable, "-c",
                   "from benchmarks.serve_bench import client_process_main; client_process_main()"]
        self.procs = [subprocess.Popen(command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                      for _ in range(procs)]
        self.channels = [_Channel(p.stdout, p.stdin) for p in self.procs]
        self.sent: list[set[str]] = [set() for _ in self.procs]

    def measure(self, host: str, port: int, key: str, requests: list[bytes], connections: int,
                seconds: float, images_per_request: int) -> dict:
        """``connections`` keep-alive connections spread over the processes, replaying
        ``requests`` for ``seconds`` after one warm-up request each: one measurement part."""
        shares = [connections // len(self.procs) + (i < connections % len(self.procs))
                  for i in range(len(self.procs))]
        used = [(i, n) for i, n in enumerate(shares) if n]
        for i, n in used:
            if key not in self.sent[i]:
                self.channels[i].send(("requests", key, requests))
                self.sent[i].add(key)
            self.channels[i].send(("run", {"host": host, "port": port, "key": key, "connections": n,
                                           "seconds": seconds, "offset": i * 131}))
        answers = [self._recv(i, CHILD_TIMEOUT_S) for i, _ in used]
        failed = [answer[1] for answer in answers if answer[0] == "failed"]
        ready = [i for (i, _), answer in zip(used, answers) if answer[0] == "ready"]
        for i in ready:
            self.channels[i].send(("abort",) if failed else ("go",))
        results = [self._recv(i, seconds + CHILD_TIMEOUT_S) for i in ready]
        if failed:
            raise RuntimeError(f"a client process could not run: {failed[0]}")
        results = [r[1] for r in results]
        latencies = array("d")
        for r in results:
            latencies.frombytes(r["latencies"])
        ok = sum(r["ok"] for r in results)
        return {"images": ok * images_per_request, "requests": ok, "latencies": latencies.tolist(),
                "errors": sum(r["errors"] + r["warm_errors"] for r in results),  # warm-ups too
                "served_requests": sum(r["served"] for r in results),
                "wall_s": max(r["end"] for r in results) - min(r["start"] for r in results)}

    def _recv(self, i: int, timeout: float):
        try:
            return self.channels[i].recv(timeout)
        except EOFError:
            raise RuntimeError(f"client process {self.procs[i].pid} exited (its error is on "
                               f"stderr above)") from None

    def close(self) -> None:
        """End the client processes: idle ones leave at once on their stdin's end; one still
        measuring (the bench interrupted) is killed after a moment."""
        for proc in self.procs:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
