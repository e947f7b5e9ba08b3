"""Log records written by a background thread, so that no request waits on the log's reader.

Why: a log handler writes to its stream on the thread that logs, and the API logs on the event
loop (uvicorn's access log, a hot swap's "now serving", the reaper). When whatever reads the
process's output stops reading (a full pipe to a stuck collector, a terminal paused with
Ctrl-S, a disk throttling writers), the write blocks and with it the loop: every request of the
process waits, health probes included. Measured: ``zscl serve`` with its output a pipe that
nobody read stopped answering at request 1,044 (64 KiB of access log), and answered again once
the pipe was read.

:func:`background_logging` sends every handler of the root logger and of uvicorn's loggers
through one bounded queue: logging only enqueues, and one daemon thread writes. The handlers
stay where they are on their loggers (each gets a ``handle`` of its own that enqueues), so
whoever adds or removes handlers meanwhile (uvicorn's logging set-up, pytest) sees its own.
When the queue is full (the reader stuck), records are dropped and counted, rather than hold
the process's memory or its requests; the count goes to the root logger's handlers once a
record is written again.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator

__all__ = ["LOGGERS", "QUEUE_RECORDS", "background_logging"]

logger = logging.getLogger(__name__)

#: the loggers whose handlers write through the queue: the root logger (``zscl serve`` and the
#: API processes log there) and uvicorn's own, which do not propagate to it
LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")
QUEUE_RECORDS = 10_000  # records waiting to be written, at most; past that they are dropped
_PLAIN = (str, int, float, bool, type(None))
_exceptions = logging.Formatter()
_STOP = object()


def _prepare(record: logging.LogRecord) -> logging.LogRecord:
    """``record`` as it may wait in the queue: its traceback rendered to text and let go (it
    holds the failing call's frames, tensors included), and its message rendered now where an
    argument could change meanwhile (uvicorn's access records keep their plain arguments, which
    its formatter takes apart)."""
    if record.exc_info:
        record.exc_text = record.exc_text or _exceptions.formatException(record.exc_info)
        record.exc_info = None
    args = record.args
    if args and not (isinstance(args, tuple) and all(isinstance(a, _PLAIN) for a in args)):
        record.msg, record.args = record.getMessage(), None
    return record


class _Writer:
    """One daemon thread that hands queued records to the handlers they were logged to."""

    def __init__(self, capacity: int):
        self.queue: queue.Queue = queue.Queue(capacity)
        self._dropped = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="zscl-log-writer", daemon=True)
        self._thread.start()

    def put(self, handler: logging.Handler, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait((handler, _prepare(record)))
        except queue.Full:
            with self._lock:
                self._dropped += 1

    def report_dropped(self) -> None:
        """Say how many records were dropped since the last report, if any: to the root
        logger's handlers, directly (the queue may well be full again)."""
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        if not dropped:
            return
        record = logger.makeRecord(logger.name, logging.WARNING, __file__, 0,
                                   "%d log records were dropped: the log's reader did not keep "
                                   "up (no request waited for it)", (dropped,), None)
        for handler in logging.getLogger().handlers:
            if record.levelno >= handler.level:
                type(handler).handle(handler, record)

    def _run(self) -> None:
        while (item := self.queue.get()) is not _STOP:
            try:
                handler, record = item
                type(handler).handle(handler, record)  # its filters, lock and handleError
                self.report_dropped()
            except Exception:  # noqa: BLE001 - a failing handler or filter must not end the writer
                pass
            finally:
                self.queue.task_done()

    def written_out(self, timeout_s: float) -> bool:
        """Whether everything queued got written within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self, timeout_s: float) -> None:
        """Write what is still queued, then end the thread (at most ``timeout_s`` each)."""
        with contextlib.suppress(queue.Full):
            self.queue.put(_STOP, timeout=timeout_s)
            self._thread.join(timeout_s)


def _enqueue(writer: _Writer, handler: logging.Handler, record: logging.LogRecord) -> bool:
    """``handler.handle`` while :func:`background_logging` is in force: its level, then the
    queue (its filters run on the writer thread, with the rest of ``Handler.handle``)."""
    if record.levelno < handler.level:
        return False
    writer.put(handler, record)
    return True


@contextlib.contextmanager
def background_logging(capacity: int = QUEUE_RECORDS, stop_timeout_s: float = 2.0) -> Iterator[None]:
    """While inside, the handlers of :data:`LOGGERS` are written by a background thread. On
    exit they write directly again once everything queued has been written; where it cannot be
    within ``stop_timeout_s`` (the reader is stuck), they stay behind the queue, so that the
    rest of the shutdown does not block on a log line either. Handlers already behind a queue
    (an enclosing call's) are left to it.

    A process whose log reader is stuck for good still cannot flush its output at exit
    (``logging.shutdown``, as Python's own exit, waits on the stream): a process manager's
    SIGKILL after its grace period ends it, as it did before."""
    writer = _Writer(capacity)
    wrapped: list[logging.Handler] = []
    for name in LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if "handle" not in vars(handler):
                handler.handle = lambda record, h=handler: _enqueue(writer, h, record)
                wrapped.append(handler)
    try:
        yield
    finally:
        if writer.written_out(stop_timeout_s):
            for handler in wrapped:  # records logged from now on are written directly...
                vars(handler).pop("handle", None)
            writer.stop(stop_timeout_s)  # ...after those still queued
            writer.report_dropped()
