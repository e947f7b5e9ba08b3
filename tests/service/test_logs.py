"""service/logs.py: logging only enqueues; one thread writes, and drops what a stuck reader
cannot take, counted."""

from __future__ import annotations

import logging
import os
import re
import threading

from service.logs import background_logging

RECORDS = 1000
CAPACITY = 100


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


def test_logging_never_waits_on_a_stuck_reader_and_counts_what_it_dropped():
    read_end, write_end = _full_pipe()
    stream = os.fdopen(write_end, "w", buffering=1)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("record %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    level, root.level = root.level, logging.INFO
    done = threading.Event()
    try:
        with background_logging(capacity=CAPACITY, stop_timeout_s=30):
            assert handler not in root.handlers  # behind the queue while inside

            def log_all():
                for i in range(RECORDS):
                    logging.getLogger("some.module").info("%d", i)
                done.set()

            threading.Thread(target=log_all, daemon=True).start()
            # without the queue the first record waits on the full pipe for good
            assert done.wait(timeout=30), "logging waited on the pipe's reader"
            reader = threading.Thread(target=lambda: out.append(_read_all(read_end)), daemon=True)
            out: list[bytes] = []
            reader.start()
        assert handler in root.handlers  # put back once everything queued was written
    finally:
        root.removeHandler(handler)
        root.level = level
        stream.close()  # the reader sees the end
    reader.join(timeout=30)
    text = out[0].decode().lstrip("x")
    written = re.findall(r"^record (\d+)$", text, re.MULTILINE)
    dropped = [int(n) for n in re.findall(r"^record (\d+) log records were dropped", text, re.MULTILINE)]
    # the writer took at most one record before it blocked and the queue holds CAPACITY
    # (shared with pytest's own handlers on the root logger): everything else is counted, once,
    # as dropped, and what was written came in the order it was logged
    assert len(dropped) == 1 and len(written) + dropped[0] == RECORDS
    assert len(written) <= CAPACITY + 1
    numbers = [int(n) for n in written]
    assert numbers == sorted(set(numbers))


def test_records_reach_their_handler_in_order_and_the_handlers_are_put_back():
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    keep = Keep(level=logging.WARNING)
    access = logging.getLogger("uvicorn.access")
    # only this handler (earlier tests' uvicorn servers leave theirs on uvicorn's loggers)
    handlers, access.handlers = access.handlers, [keep]
    level, access.level = access.level, logging.INFO
    try:
        # the inner call finds the handlers behind the outer one's queue and leaves them there
        with background_logging(), background_logging():
            assert [stand_in.target for stand_in in access.handlers] == [keep]  # one queue
            for i in range(50):
                access.warning("w%d", i)
            access.info("below the handler's level")
        assert seen == [f"w{i}" for i in range(50)]  # written by the time the block ends
        assert access.handlers == [keep]
    finally:
        access.handlers = handlers
        access.level = level
