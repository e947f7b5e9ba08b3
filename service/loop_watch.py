"""Watching the event loop: the one thread that every request of an API process passes through.

When the loop stalls, every request of the process waits, cheap or not (a GET of a job record
once took over 10 s on a loaded machine, and nothing in the process's own logs said why). A
stall has causes that look the same from outside: work on the loop's thread, a blocking call
there, the process's other threads holding Python's lock, or the process getting no CPU (an
overloaded machine). So :class:`LoopWatch` measures each stall and, past
:data:`REPORT_AFTER_S`, logs a warning with what tells them apart: the CPU time the loop's
thread and the whole process got during the stall beside its wall time, the load average, and
the stack of the loop's thread as a watchdog thread saw it during that stall. Every beat's lag
is also a histogram in ``/metrics`` (``zscl_event_loop_lag_seconds``).
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

__all__ = ["LoopWatch", "REPORT_AFTER_S", "TICK_S", "FULL_REPORT_EVERY_S"]

logger = logging.getLogger(__name__)

TICK_S = 0.1  # how often the loop beats
REPORT_AFTER_S = 1.0  # a beat this much late is logged as a stall
FULL_REPORT_EVERY_S = 60.0  # at most one stall report with its stack this often; others one line


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (a container's)
    except AttributeError:  # not Linux
        return os.cpu_count() or 0


def _cause(lag: float, loop_cpu: float, process_cpu: float) -> str:
    if loop_cpu >= lag / 2:
        return "the loop's thread was busy: see its stack"
    if process_cpu - loop_cpu >= lag / 2:
        return ("the loop's thread waited while the process's other threads ran (for Python's "
                "lock, or on them)")
    return "a blocking call on the loop's thread, or the machine gave the process no CPU (see the load)"


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
        self._due = 0.0  # when the current beat is due (monotonic), set on the loop's thread
        self._loop_thread: int | None = None
        # (the beat's due time, the loop thread's stack): what the watchdog saw of that beat
        self._seen: tuple[float, str] | None = None
        self._last_full = -FULL_REPORT_EVERY_S

    async def run(self) -> None:
        """Beat until cancelled; meanwhile a daemon thread looks at the loop's thread whenever a
        beat is overdue."""
        self._loop_thread = threading.get_ident()
        stop = threading.Event()
        watchdog = threading.Thread(target=self._watchdog, args=(stop,), name="zscl-loop-watch",
                                    daemon=True)
        watchdog.start()
        try:
            while True:
                wall, cpu, own = time.monotonic(), time.process_time(), time.thread_time()
                self._due = due = wall + self.tick_s
                await asyncio.sleep(self.tick_s)
                lag = max(0.0, time.monotonic() - due)
                self._observe(lag)
                if lag >= self.report_after_s:
                    seen = self._seen
                    self._report(lag, time.monotonic() - wall, time.thread_time() - own,
                                 time.process_time() - cpu,
                                 seen[1] if seen and seen[0] == due else None)
        finally:
            stop.set()

    def _observe(self, lag: float) -> None:
        if self.on_lag is None:
            return
        try:
            self.on_lag(lag)
        except Exception:  # noqa: BLE001 - a metrics failure must not end the watch
            logger.exception("loop watch: recording the lag failed; lags are no longer recorded")
            self.on_lag = None

    def _watchdog(self, stop: threading.Event) -> None:
        while not stop.wait(self.tick_s):
            due = self._due
            if (self._seen is None or self._seen[0] != due) \
                    and time.monotonic() - due >= self.report_after_s / 2:
                frame = sys._current_frames().get(self._loop_thread)
                self._seen = (due, "".join(traceback.format_stack(frame)) if frame else "(not found)")

    def _report(self, lag: float, wall: float, loop_cpu: float, process_cpu: float,
                stack: str | None) -> None:
        self.stalls += 1
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
        facts = (f"event loop stalled {lag:.1f} s (every request of this process waited): in "
                 f"those {wall:.1f} s its thread got {loop_cpu:.1f} s of CPU and the process "
                 f"{process_cpu:.1f} s, on {_cores()} cores with load average {load}: "
                 f"{_cause(lag, loop_cpu, process_cpu)}")
        now = time.monotonic()
        if now - self._last_full < FULL_REPORT_EVERY_S:
            logger.warning("%s (stack shown at most once a minute)", facts)
            return
        self._last_full = now
        logger.warning("%s. Its thread during the stall:\n%s", facts,
                       stack or "(not caught: the watchdog got no CPU or no lock during it)")
