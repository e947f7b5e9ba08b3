"""The event-loop watch (service/loop_watch.py): a stall is measured, and logged with what tells
its causes apart: the CPU the loop's thread and the process got beside the wall time, and where
the loop's thread was."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time

from service import loop_watch
from service.loop_watch import LoopWatch


def blocking_call_on_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # a blocking call in a coroutine: the bug the watch exists to name


def busy_on_the_loop(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def waits_for_another_thread(seconds: float) -> None:
    # another thread computes in Python (holding the interpreter's lock most of the time) while
    # the loop's thread only waits for it
    other = threading.Thread(target=busy_on_the_loop, args=(seconds,))
    other.start()
    other.join()


async def watched(block, seconds: float, watch: LoopWatch) -> None:
    task = asyncio.create_task(watch.run())
    await asyncio.sleep(0.35)  # a few beats first
    block(seconds)
    await asyncio.sleep(0.35)  # the late beat lands, is measured and reported
    task.cancel()


def stall_reports(caplog, block, seconds: float) -> tuple[LoopWatch, list[str]]:
    watch = LoopWatch(tick_s=0.05, report_after_s=0.5)
    with caplog.at_level(logging.WARNING, logger="service.loop_watch"):
        asyncio.run(watched(block, seconds, watch))
    return watch, [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]


def figures(message: str) -> tuple[float, float]:
    """The loop thread's and the process's CPU seconds a report gives."""
    found = re.search(r"its thread got ([\d.]+) s of CPU and the process ([\d.]+) s", message)
    return float(found.group(1)), float(found.group(2))


def test_a_blocking_call_on_the_loop_is_logged_with_its_stack_and_no_cpu(caplog, monkeypatch):
    monkeypatch.setattr(loop_watch, "FULL_REPORT_EVERY_S", 0.0)
    watch, reports = stall_reports(caplog, blocking_call_on_the_loop, 1.2)
    assert watch.stalls >= 1
    [report] = [m for m in reports if "blocking_call_on_the_loop" in m]  # where the loop was
    loop_cpu, _ = figures(report)
    assert loop_cpu < 0.5 and "a blocking call on the loop's thread" in report


def test_work_on_the_loop_shows_as_the_loop_threads_cpu(caplog, monkeypatch):
    monkeypatch.setattr(loop_watch, "FULL_REPORT_EVERY_S", 0.0)
    _, reports = stall_reports(caplog, busy_on_the_loop, 1.0)
    [report] = [m for m in reports if "busy_on_the_loop" in m]
    loop_cpu, process_cpu = figures(report)
    assert loop_cpu >= 0.9 and process_cpu >= loop_cpu
    assert "the loop's thread was busy" in report


def test_waiting_while_another_thread_runs_shows_as_the_process_cpu_not_the_loops(caplog, monkeypatch):
    monkeypatch.setattr(loop_watch, "FULL_REPORT_EVERY_S", 0.0)
    _, reports = stall_reports(caplog, waits_for_another_thread, 1.0)
    [report] = [m for m in reports if "waits_for_another_thread" in m]
    loop_cpu, process_cpu = figures(report)
    assert loop_cpu < 0.5 and process_cpu >= 0.9
    assert "other threads ran" in report


def test_the_stack_is_shown_at_most_once_a_minute(caplog):
    async def two_stalls(watch: LoopWatch) -> None:
        task = asyncio.create_task(watch.run())
        await asyncio.sleep(0.2)
        for _ in range(2):
            blocking_call_on_the_loop(0.8)
            await asyncio.sleep(0.2)
        task.cancel()

    watch = LoopWatch(tick_s=0.05, report_after_s=0.5)
    with caplog.at_level(logging.WARNING, logger="service.loop_watch"):
        asyncio.run(two_stalls(watch))
    reports = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert watch.stalls == len(reports) >= 2
    assert sum("Its thread during the stall" in m for m in reports) == 1
    assert "stack shown at most once a minute" in reports[-1]


def test_a_healthy_loop_reports_nothing_and_the_watchdog_ends_with_the_watch(caplog):
    lags: list[float] = []
    watch = LoopWatch(lags.append, tick_s=0.05, report_after_s=5.0)
    with caplog.at_level(logging.WARNING, logger="service.loop_watch"):
        asyncio.run(watched(lambda s: None, 0, watch))
    assert watch.stalls == 0 and len(lags) >= 5
    assert not [r for r in caplog.records if "stalled" in r.getMessage()]
    time.sleep(0.2)  # one watchdog tick
    assert not [t for t in threading.enumerate() if t.name == "zscl-loop-watch"]


def test_a_failing_lag_recorder_does_not_end_the_watch(caplog):
    def broken(lag: float) -> None:
        raise OSError("no space left on device")

    watch = LoopWatch(broken, tick_s=0.05, report_after_s=0.5)
    with caplog.at_level(logging.WARNING, logger="service.loop_watch"):
        asyncio.run(watched(blocking_call_on_the_loop, 0.8, watch))
    assert watch.stalls == 1 and watch.on_lag is None  # still watching, no longer recording
    assert any("recording the lag failed" in r.getMessage() for r in caplog.records)


def test_the_served_app_exports_its_loop_lag(client):
    time.sleep(0.5)  # the app's loop beats meanwhile, on the test client's thread
    text = client.get("/metrics").text
    counts = [line for line in text.splitlines() if line.startswith("zscl_event_loop_lag_seconds_count")]
    assert counts and float(counts[0].split()[-1]) >= 1, text[:2000]
