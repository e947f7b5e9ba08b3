"""Benchmark protocols. ``mtil``: the multi-domain task-incremental sequence of the ZSCL paper."""

from .mtil import (ALL_METHODS, BenchConfig, MTILResult, ProgressEvent, PreparedTask, prepare_task,
                   run_mtil)

__all__ = ["ALL_METHODS", "BenchConfig", "MTILResult", "ProgressEvent", "PreparedTask",
           "prepare_task", "run_mtil"]
