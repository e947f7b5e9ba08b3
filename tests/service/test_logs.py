"""service/logs.py: logging only enqueues; one thread writes, and drops what a stuck reader
cannot take, counted."""

from __future__ import annotations

import logging
import os
import re
import threading

from uvicorn.logging import AccessFormatter

from service.logs import background_logging

RECORDS = 1000
CAPACITY = 100


class Keep(logging.Handler):
    def __init__(self, level=logging.NOTSET):
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def _full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is full: the next blocking write to it waits for a reader."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    return read_end, write_end


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _only(log: logging.Logger, *handlers: logging.Handler):
    """Give ``log`` only ``handlers`` and level INFO; returns what :func:`_restore` puts back
    (earlier tests' uvicorn servers and pytest leave handlers and levels of their own on these
    loggers; ``setLevel``, not the attribute, so that the loggers' cached levels are cleared)."""
    saved = log.handlers, log.level, log.propagate
    log.handlers, log.propagate = list(handlers), False
    log.setLevel(logging.INFO)
    return saved


def _restore(log: logging.Logger, saved) -> None:
    log.handlers, level, log.propagate = saved
    log.setLevel(level)


def test_an_access_log_nobody_reads_never_holds_up_logging_and_the_drops_are_counted(capsys):
    # uvicorn's access log, on a pipe whose reader is stuck; the root logger keeps the rest
    read_end, write_end = _full_pipe()
    stream = os.fdopen(write_end, "w", buffering=1)
    access_handler = logging.StreamHandler(stream)
    access_handler.setFormatter(AccessFormatter('%(client_addr)s "%(request_line)s" %(status_code)s',
                                                use_colors=False))
    access, root, kept = logging.getLogger("uvicorn.access"), logging.getLogger(), Keep()
    saved_access, saved_root = _only(access, access_handler), _only(root, kept)
    done = threading.Event()
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(_read_all(read_end)), daemon=True)

    def log_all():
        for i in range(RECORDS):  # the arguments uvicorn's access log gives
            access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", f"/livez?n={i}", "1.1", 200)
        done.set()

    try:
        with background_logging(capacity=CAPACITY, stop_timeout_s=30):
            threading.Thread(target=log_all, daemon=True).start()
            try:
                # without the queue, the first record waits on the full pipe for good
                assert done.wait(timeout=30), "logging waited on the pipe's reader"
            finally:
                reader.start()  # whatever happened: the writer must be able to finish
        assert "handle" not in vars(access_handler)  # it writes directly again
    finally:
        _restore(access, saved_access)
        _restore(root, saved_root)
        stream.close()  # the reader sees the end
        reader.join(timeout=30)
        os.close(read_end)
    written = [int(n) for n in re.findall(r'"GET /livez\?n=(\d+) HTTP/1.1" 200', out[0].decode())]
    reports = [r.getMessage() for r in kept.records]
    dropped = [int(m.group(1)) for r in reports if (m := re.match(r"(\d+) log records were dropped", r))]
    # the writer took at most one record before it blocked and the queue held CAPACITY; all
    # the others were counted and reported, through the root logger, in one line
    assert len(dropped) == 1 and len(written) + dropped[0] == RECORDS, (len(written), reports)
    assert len(written) <= CAPACITY + 1
    assert written == sorted(set(written))  # in the order logged
    assert "Logging error" not in capsys.readouterr().err


def test_records_arrive_in_order_the_handlers_level_is_read_live_and_nesting_wraps_once():
    keep = Keep(level=logging.WARNING)
    access = logging.getLogger("uvicorn.access")
    saved = _only(access, keep)
    try:
        with background_logging():
            wrapped = vars(keep)["handle"]
            with background_logging():  # an enclosing call's queue is not wrapped again
                assert vars(keep)["handle"] is wrapped
                for i in range(50):
                    access.warning("w%d", i)
                access.info("below the handler's level")
                keep.setLevel(logging.INFO)  # as caplog.set_level does, while wrapped
                access.info("at the handler's new level")
        assert [r.getMessage() for r in keep.records] == \
            [f"w{i}" for i in range(50)] + ["at the handler's new level"]  # written by the end
        assert access.handlers == [keep] and "handle" not in vars(keep)
    finally:
        _restore(access, saved)


def test_a_queued_record_holds_its_traceback_as_text_not_the_frames():
    keep = Keep()
    root = logging.getLogger()
    saved = _only(root, keep)
    try:
        with background_logging():
            try:
                raise ValueError("boom")
            except ValueError:
                logging.getLogger("x").exception("failed with %s", {"a": 1})
        (record,) = keep.records
        assert record.exc_info is None and "ValueError: boom" in record.exc_text
        assert record.getMessage() == "failed with {'a': 1}"  # rendered when it was logged
        assert "ValueError: boom" in logging.Formatter().format(record)
    finally:
        _restore(root, saved)
