"""Log records written by a background thread, so that no request waits on the log's reader.

Why: a log handler writes to its stream on the thread that logs, and the API logs on the event
loop (uvicorn's access log, a hot swap's "now serving", the reaper). When whatever reads the
process's output stops reading (a full pipe to a stuck collector, a terminal paused with
Ctrl-S, a disk throttling writers), the write blocks and with it the loop: every request of the
process waits, health probes included. Measured: ``zscl serve`` with its output a pipe that
nobody read stopped answering at request 1,044 (64 KiB of access log), and answered again once
the pipe was read.

:func:`background_logging` puts every handler of the root logger and of uvicorn's loggers behind
one bounded queue: logging only enqueues, and one daemon thread writes. When the queue is full
(the reader stuck), records are dropped and counted, and the writer says how many once it can
write again, rather than hold the process's memory or its requests hostage.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator

__all__ = ["LOGGERS", "QUEUE_RECORDS", "background_logging"]

#: the loggers whose handlers are moved behind the queue: the root logger (``zscl serve`` and
#: the API processes log there) and uvicorn's own, which do not propagate to it
LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")
QUEUE_RECORDS = 10_000  # records waiting to be written, at most; past that they are dropped
_STOP = object()


class _Writer:
    """One daemon thread that hands queued records to the handlers they were logged to."""

    def __init__(self, capacity: int):
        self.queue: queue.Queue = queue.Queue(capacity)
        self.dropped: dict[logging.Handler, int] = {}  # per handler, since its last report
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="zscl-log-writer", daemon=True)
        self._thread.start()

    def put(self, handler: logging.Handler, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait((handler, record))
        except queue.Full:
            with self._lock:
                self.dropped[handler] = self.dropped.get(handler, 0) + 1

    def _run(self) -> None:
        while (item := self.queue.get()) is not _STOP:
            handler, record = item
            handler.handle(record)  # its own filters, lock, errors (handleError) as before
            with self._lock:
                dropped = self.dropped.pop(handler, 0)
            if dropped:
                handler.handle(logging.makeLogRecord({
                    "name": __name__, "levelno": logging.WARNING, "levelname": "WARNING",
                    "msg": "%d log records were dropped: the log's reader did not keep up "
                           "(requests were not held up by it)", "args": (dropped,)}))
            self.queue.task_done()

    def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the queued records to be written, then stop the thread;
        False (the thread left running) where the log's reader is stuck: the process must
        still be able to exit."""
        deadline = time.monotonic() + timeout_s
        while self.queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        self.queue.put(_STOP)
        self._thread.join()
        return True


class _Enqueue(logging.Handler):
    """Stands in for ``target`` on its logger: checks the level, then only enqueues."""

    def __init__(self, target: logging.Handler, writer: _Writer):
        super().__init__(target.level)
        self.target, self.writer = target, writer

    def handle(self, record: logging.LogRecord) -> bool:  # no lock: the queue is thread-safe
        if record.levelno < self.level:
            return False
        self.writer.put(self.target, record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() enqueues
        self.writer.put(self.target, record)


@contextlib.contextmanager
def background_logging(capacity: int = QUEUE_RECORDS, stop_timeout_s: float = 2.0) -> Iterator[None]:
    """While inside, the handlers of :data:`LOGGERS` are written by a background thread; on
    exit the queued records are written and the handlers put back; where they cannot all be
    written within ``stop_timeout_s`` (the reader is stuck), the queue stays in place, so that
    the rest of the shutdown does not block on a log line either. Handlers already behind a queue (an
    enclosing call) are left as they are.

    A process whose log reader is stuck for good still cannot flush its output at exit
    (``logging.shutdown``, as Python's own exit, waits on the stream): a process manager's
    SIGKILL after its grace period ends it, as it did before."""
    writer = _Writer(capacity)
    replaced: list[tuple[logging.Logger, logging.Handler, _Enqueue]] = []
    for name in LOGGERS:
        log = logging.getLogger(name)
        for handler in list(log.handlers):
            if isinstance(handler, _Enqueue):
                continue
            stand_in = _Enqueue(handler, writer)
            log.addHandler(stand_in)
            log.removeHandler(handler)
            replaced.append((log, handler, stand_in))
    try:
        yield
    finally:
        if writer.drain(stop_timeout_s):
            for log, handler, stand_in in replaced:
                log.addHandler(handler)
                log.removeHandler(stand_in)
