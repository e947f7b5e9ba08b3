"""The head builder on its own: one build per head, a bound, abandonment, a lower priority."""

from __future__ import annotations

import os
import sys
import threading

import pytest
import torch

from records.errors import QueueFull
from service.head_builder import HeadBuilder
from zscl_core import HeadCache, WorkAbandoned


class Gated:
    """An encode function that blocks until released, then returns a known head; counts calls
    and can honour ``should_stop`` as build_head does (checked before each "chunk")."""

    def __init__(self, value: float, chunks: int = 1):
        self.value = value
        self.chunks = chunks
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.nice: int | None = None

    def __call__(self, should_stop) -> torch.Tensor:
        self.calls += 1
        if sys.platform == "linux":
            self.nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        self.started.set()
        for done in range(self.chunks):
            if should_stop():
                raise WorkAbandoned(f"text encoding stopped after {done} of {self.chunks} chunks")
            assert self.release.wait(10)
        return torch.full((2, 3), self.value)


def key(name: str):
    return HeadCache.key("v1", [name], ["{}"])


def test_callers_missing_the_same_head_share_one_build_and_it_is_cached():
    cache = HeadCache(8)
    builder = HeadBuilder(cache, threads=1, queue_max=0, nice=0)
    encode = Gated(1.0)
    first = builder.submit(key("cat"), encode)
    assert encode.started.wait(10)
    second = builder.submit(key("cat"), Gated(2.0))  # would be refused if it were a new build
    assert second is first
    encode.release.set()
    assert torch.equal(first.result(10), torch.full((2, 3), 1.0))
    assert encode.calls == 1
    assert key("cat") in cache and builder.pending == 0 and builder.built == 1


def test_a_new_build_beyond_threads_plus_queue_is_refused_with_a_retry_delay():
    builder = HeadBuilder(HeadCache(8), threads=1, queue_max=1, nice=0)
    running, waiting, swap = Gated(1.0), Gated(2.0), Gated(4.0)
    builder.submit(key("a"), running)
    builder.submit(key("b"), waiting)
    with pytest.raises(QueueFull, match="ZSCL_HEAD_BUILD_QUEUE=1") as refused:
        builder.submit(key("c"), Gated(3.0))
    assert refused.value.retry_after_s >= 1
    builder.submit(key("a"), Gated(0.0))  # joining a build in progress is never refused
    swapped = builder.submit(key("d"), swap, admit=False)  # the service's own work: never refused
    assert builder.pending == 3
    for encode in (running, waiting, swap):
        encode.release.set()
    assert torch.equal(swapped.result(10), torch.full((2, 3), 4.0))
    assert builder.pending == 0 and running.calls == 1
    room = Gated(3.0)
    room.release.set()
    assert torch.equal(builder.submit(key("c"), room).result(10), torch.full((2, 3), 3.0))


def test_a_build_stops_once_every_caller_has_gone_and_a_later_caller_starts_afresh():
    cache = HeadCache(8)
    builder = HeadBuilder(cache, threads=1, queue_max=2, nice=0)
    encode = Gated(1.0, chunks=3)
    left, stays = threading.Event(), threading.Event()
    first = builder.submit(key("cat"), encode, left)
    assert encode.started.wait(10)
    builder.submit(key("cat"), encode, stays)
    left.set()
    encode.release.set()  # chunk after chunk: one caller still waits, so the build goes on
    assert torch.equal(first.result(10), torch.full((2, 3), 1.0))

    gone, again = threading.Event(), Gated(2.0, chunks=3)
    abandoned = builder.submit(key("dog"), again, gone)
    assert again.started.wait(10)
    gone.set()
    again.release.set()
    with pytest.raises(WorkAbandoned, match="stopped after"):
        abandoned.result(10)
    assert key("dog") not in cache and builder.pending == 0
    fresh = Gated(3.0)
    fresh.release.set()
    assert torch.equal(builder.submit(key("dog"), fresh).result(10), torch.full((2, 3), 3.0))


@pytest.mark.skipif(sys.platform != "linux", reason="a per-thread nice value is Linux's")
def test_builds_run_at_a_lower_priority_than_the_process():
    builder = HeadBuilder(HeadCache(8), threads=1, queue_max=0, nice=5)
    encode = Gated(1.0)
    encode.release.set()
    builder.submit(key("cat"), encode).result(10)
    assert encode.nice == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)
