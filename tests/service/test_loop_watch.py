"""The event-loop watch (service/loop_watch.py): a stall is measured, and logged with what tells
its causes apart: the process's CPU time beside the wall time, and where the loop's thread was."""

from __future__ import annotations

import asyncio
import logging
import time

from service.loop_watch import LoopWatch


def blocking_call_on_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # a blocking call in a coroutine: the bug the watch exists to name


def spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


async def watched(block, seconds: float, watch: LoopWatch) -> None:
    task = asyncio.create_task(watch.run())
    await asyncio.sleep(0.35)  # a few healthy beats first
    block(seconds)
    await asyncio.sleep(0.35)  # the late beat lands, is measured and reported
    task.cancel()


def test_a_blocking_call_on_the_loop_is_logged_with_its_stack_and_little_cpu(caplog):
    lags: list[float] = []
    watch = LoopWatch(lags.append, tick_s=0.05, report_after_s=0.5)
    with caplog.at_level(logging.WARNING, logger="service.loop_watch"):
        asyncio.run(watched(blocking_call_on_the_loop, 1.2, watch))
    assert watch.stalls == 1
    assert max(lags) >= 1.0 and sorted(lags)[-2] < 0.5  # one late beat; the others on time
    [record] = [r for r in caplog.records if "stalled" in r.getMessage()]
    message = record.getMessage()
    assert "blocking_call_on_the_loop" in message  # the watchdog saw where the loop was
    cpu = float(message.split("the process got ")[1].split(" s of CPU")[0])
    assert cpu < 0.5  # sleeping uses none: not starved of CPU, blocked


def test_work_on_the_loop_shows_as_cpu_during_the_stall(caplog):
    watch = LoopWatch(tick_s=0.05, report_after_s=0.5)
    with caplog.at_level(logging.WARNING, logger="service.loop_watch"):
        asyncio.run(watched(spin, 1.0, watch))
    [record] = [r for r in caplog.records if "stalled" in r.getMessage()]
    message = record.getMessage()
    assert "spin" in message
    cpu = float(message.split("the process got ")[1].split(" s of CPU")[0])
    assert cpu >= 0.9


def test_healthy_loop_reports_nothing(caplog):
    lags: list[float] = []
    watch = LoopWatch(lags.append, tick_s=0.05, report_after_s=0.5)
    with caplog.at_level(logging.WARNING, logger="service.loop_watch"):
        asyncio.run(watched(lambda s: None, 0, watch))
    assert watch.stalls == 0 and lags and not [r for r in caplog.records if "stalled" in r.getMessage()]


def test_the_served_app_exports_its_loop_lag(client):
    time.sleep(0.5)  # the app's loop beats meanwhile, on the test client's thread
    text = client.get("/metrics").text
    counts = [line for line in text.splitlines() if line.startswith("zscl_event_loop_lag_seconds_count")]
    assert counts and float(counts[0].split()[-1]) >= 1, text[:2000]
