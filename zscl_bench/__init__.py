"""zscl_bench: the mini-MTIL benchmark of ZSCL against its baselines, on real images.

``python -m zscl_bench mtil`` (or ``zscl bench mtil``) runs it; the library parts are the task
loaders (:mod:`zscl_bench.tasks`), the protocol (:mod:`zscl_bench.runner.mtil`) and the figures
(:mod:`zscl_bench.plots`).
"""

from .runner import ALL_METHODS, BenchConfig, MTILResult, prepare_task, run_mtil
from .tasks import BUILTIN_TASKS, DEFAULT_SEQUENCE, LoadOptions, Task, load_task

__all__ = ["ALL_METHODS", "BenchConfig", "MTILResult", "prepare_task", "run_mtil",
           "BUILTIN_TASKS", "DEFAULT_SEQUENCE", "LoadOptions", "Task", "load_task"]
