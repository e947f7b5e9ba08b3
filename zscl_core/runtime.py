"""Process-wide settings for the processes that run models: torch threads and the C allocator.

The API process (``service.app``), each Celery worker process (``worker.tasks``) and the
serving benchmark (its raw forward and its LitServe peer) call :func:`tune_process` once at
start, so that they all run the model under the same conditions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

import torch

__all__ = ["keep_freed_memory", "tune_process"]

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 ** 2  # glibc's own ceiling for its adaptive threshold (64-bit)
TRIM_THRESHOLD = 1024 ** 3


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD,
                      trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of giving it back to the system.

    Why: a forward pass allocates and frees the same large activation buffers every batch. By
    default glibc serves blocks over 128 KiB with ``mmap`` and returns them with ``munmap`` (and
    trims its heaps), so every batch faults its memory in afresh, and each ``munmap`` interrupts
    the process's other threads. ``benchmarks.serve_bench --model starter`` on 2 CPU cores, at
    concurrency 32: 621 page faults per image served and 0.78x the raw forward's throughput at
    glibc's defaults (``--no-tune-malloc``); 1-2 faults and 0.90-0.96x with this. The cost: the
    process keeps its peak heap (allocations up to ``mmap_threshold`` come from the heap, and
    up to ``trim_threshold`` free bytes stay at its top).

    Args:
        mmap_threshold: bytes; 32 MiB is glibc's own ceiling for its adaptive threshold.
        trim_threshold: bytes, below 2 GiB (a C int).

    Returns:
        True if applied; False where the C library is not glibc (nothing changes there).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (and this mallopt)
        applied = (libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
                   and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1)
    except (OSError, AttributeError, TypeError):
        applied = False
    if not applied:
        logger.info("malloc left at its defaults (not glibc, or mallopt refused the values)")
    return applied


def tune_process(*, torch_threads: int | None, tune_malloc: bool) -> None:
    """Apply the model-running settings (``Settings.torch_threads``, ``Settings.tune_malloc``)
    to this process: once, at its start."""
    if torch_threads:
        torch.set_num_threads(torch_threads)
    if tune_malloc:
        keep_freed_memory()
