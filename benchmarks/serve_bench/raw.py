"""The raw forward: the served model's batched image forward and ranking in-process, at the
served precision, on a thread of its own: the ceiling the service can approach."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _dtype_argument(function: Callable, dtype: str):
    """``dtype`` as ``function``'s ``dtype`` parameter takes it: a name, or a torch.dtype where
    its annotation names only that."""
    import torch

    annotation = str(inspect.signature(function).parameters["dtype"].annotation)
    return getattr(torch, dtype) if "torch.dtype" in annotation and "str" not in annotation else dtype


def load_raw(version_dir: Path, device: str, dtype: str, trace_images: bool):
    """The version as the service loads it, at the served precision where ``load_served`` takes
    one (before it did, the service served float32 too)."""
    from service.serving import load_served

    kwargs = {"trace_images": trace_images}
    if "dtype" in inspect.signature(load_served).parameters:
        kwargs["dtype"] = _dtype_argument(load_served, dtype)
    return load_served(version_dir, version_dir.name, 1, device, **kwargs)


def service_forward(served) -> Callable:
    """The service's inference thread's path from a batch of pixels to features: on CUDA the
    pixels staged in pinned memory and the features copied back to the host, once per batch
    (``service.batching.to_device``/``to_host``, where this version of the service has them)."""
    from service import batching

    if hasattr(batching, "to_device") and hasattr(batching, "to_host"):
        return lambda pixels: batching.to_host(served.encode_images(batching.to_device([pixels], served.device)))
    return served.encode_images


def tower_dtype(served) -> str:
    """The precision the image tower holds its weights in, e.g. 'bfloat16'."""
    tower = getattr(served.model, "visual", served.model)
    return str(next(tower.parameters()).dtype).removeprefix("torch.")


def raw_forward(served, pixels, head, seconds: float) -> dict:
    """The in-process batched forward + ranking with a cached head, for ``seconds``: one
    measurement part, each batch's time as its latency.

    It runs on a thread of its own, as the service's forward runs on its inference thread
    (where the process is left at glibc's malloc defaults, see ``zscl_core.runtime``, the main
    thread's heap made the same forward ~35% slower than a thread's here). On CUDA every batch
    ends with a synchronisation: its time is the device's, not the launch's."""
    import torch

    from service.batching import rank  # the service's own ranking

    cuda = str(served.device).startswith("cuda")
    forward = service_forward(served)

    def step():
        rank(served, forward(pixels), head, 3)
        if cuda:
            torch.cuda.synchronize(served.device)

    def measure() -> dict:
        for _ in range(3 if cuda else 1):  # CUDA: kernels chosen and memory pooled first
            step()
        times: list[float] = []
        cpu, started = time.process_time(), time.perf_counter()
        while time.perf_counter() - started < seconds or len(times) < 3:
            begun = time.perf_counter()
            step()
            times.append(time.perf_counter() - begun)
        return {"images": len(times) * len(pixels), "requests": len(times), "latencies": times,
                "wall_s": time.perf_counter() - started, "errors": 0,
                "batches": (len(times), len(times) * len(pixels)),
                "cpu_s": time.process_time() - cpu}  # torch's threads too; the clients idle

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-forward") as pool:
        return pool.submit(measure).result()
