"""Watching the event loop: the one thread that every request of an API process passes through.

When the loop stalls, every request of the process waits, cheap or not (a GET of a job record
once took over 10 s on a loaded machine, and nothing in the process's own logs said why). A
stall has two causes that look the same from outside: work on the loop's thread (a blocking
call in a coroutine, or another thread holding Python's lock), or the process getting no CPU
(an overloaded machine). So :class:`LoopWatch` measures each stall and, past
:data:`REPORT_AFTER_S`, logs a warning with what tells them apart: the CPU time the process got
during the stall beside its wall time, the machine's load average, and the stack of the loop's
thread as a watchdog thread saw it while the stall lasted. Every lag is also a histogram in
``/metrics`` (``zscl_event_loop_lag_seconds``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable

__all__ = ["LoopWatch", "REPORT_AFTER_S", "TICK_S"]

logger = logging.getLogger(__name__)

TICK_S = 0.1  # how often the loop beats
REPORT_AFTER_S = 1.0  # a beat this much late is logged as a stall


class LoopWatch:
    """Beats on the event loop every ``tick_s``; a beat late by ``report_after_s`` or more is a
    stall, logged with its facts. ``on_lag`` (the metrics' histogram) gets every beat's lag.

    Run :meth:`run` as a task on the loop to watch; cancelling it stops the watchdog thread."""

    def __init__(self, on_lag: Callable[[float], None] | None = None, *, tick_s: float = TICK_S,
                 report_after_s: float = REPORT_AFTER_S):
        self.on_lag = on_lag
        self.tick_s = tick_s
        self.report_after_s = report_after_s
        self.stalls = 0
        self._due = 0.0  # when the next beat is due (monotonic)
        self._loop_thread: int | None = None
        self._seen: str | None = None  # the loop thread's stack, as the watchdog saw it in a stall

    async def run(self) -> None:
        """Beat until cancelled; meanwhile a daemon thread looks at the loop's thread whenever a
        beat is overdue."""
        self._loop_thread = threading.get_ident()
        stop = threading.Event()
        threading.Thread(target=self._watchdog, args=(stop,), name="zscl-loop-watch",
                         daemon=True).start()
        try:
            while True:
                wall, cpu = time.monotonic(), time.process_time()
                self._due = wall + self.tick_s
                self._seen = None
                await asyncio.sleep(self.tick_s)
                lag = max(0.0, time.monotonic() - self._due)
                if self.on_lag is not None:
                    self.on_lag(lag)
                if lag >= self.report_after_s:
                    self._report(lag, time.monotonic() - wall, time.process_time() - cpu)
        finally:
            stop.set()

    def _watchdog(self, stop: threading.Event) -> None:
        while not stop.wait(self.tick_s):
            if self._seen is None and time.monotonic() - self._due >= self.report_after_s / 2:
                frame = sys._current_frames().get(self._loop_thread)  # noqa: SLF001 - the one API
                self._seen = "".join(traceback.format_stack(frame)) if frame else "(not found)"

    def _report(self, lag: float, wall: float, cpu: float) -> None:
        self.stalls += 1
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
        logger.warning(
            "event loop stalled %.1f s (every request of this process waited); in those %.1f s "
            "the process got %.1f s of CPU, on %d cores with load average %s (little CPU and a "
            "high load: the machine starved it; otherwise see what the loop's thread was "
            "doing). Its thread during the stall:\n%s",
            lag, wall, cpu, os.cpu_count() or 0, load, self._seen or "(not caught)")
