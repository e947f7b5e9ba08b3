"""The serving benchmark's peer: the same model and request path behind LitServe.

``benchmarks.serve_bench`` starts this as a subprocess, as it starts ``zscl serve``, and sends it
the same multipart requests. It serves ``POST /v1/classify`` (fields ``images``, ``labels``
comma-separated, ``templates``, ``top_k``) with what the service runs per request: the version
loaded and warmed by ``service.serving.load_served``, images decoded by
``service.imaging.preprocess_images`` with the version's request transform (uint8 pixels where
it splits, scaled on the device as the service's are), text heads from a
``zscl_core.HeadCache``, batched ``ServedModel.encode_images`` on the service's path to and from
the device (``service.batching.to_device``/``to_host``) and the service's ranking
(``service.batching.rank``). LitServe's ``max_batch_size`` counts requests, the service's images:
a batch of many-image requests is encoded in forwards of at most ``--batch`` images (the service
fills a forward with whole requests up to that size).
LitServe does the rest: HTTP (its own uvicorn processes), the queue (``fast_queue``: ZeroMQ) and
the dynamic batching (``max_batch_size`` requests, ``batch_timeout``), in its inference worker
processes (``workers_per_device``), each of which, with ``--stats-dir``, keeps its count of
forwards and images in a file there (``"<forwards> <images>"``) for the bench's mean batch.

    python -m benchmarks.litserve_peer VERSION_DIR --port 8001 [--device cpu] [--dtype float32]
        [--threads 1] [--batch 32] [--wait-ms 5] [--workers 1] [--fast-queue] [--stats-dir DIR]

Not a product: no auth, limits or error mapping; a bench needs none.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import time
from pathlib import Path

import litserve as ls
import torch

from records.settings import Settings
from service import batching
from service.batching import rank
from service.imaging import preprocess_images
from service.serving import load_served
from zscl_core import DEFAULT_TEMPLATES, HeadCache
from zscl_core.runtime import tune_process

logger = logging.getLogger("benchmarks.litserve_peer")

MAX_IMAGE_PIXELS = 40_000_000  # the service's default cap, checked while decoding as it does


class ClassifyAPI(ls.LitAPI):
    """Zero-shot classification of multipart uploads, batched by LitServe."""

    def __init__(self, version_dir: Path, *, threads: int | None, max_batch_size: int,
                 batch_timeout: float, dtype: str = "float32", stats_dir: Path | None = None):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout,
                         api_path="/v1/classify")
        self.version_dir = version_dir
        self.threads = threads
        self.dtype = dtype
        self.stats_dir = stats_dir

    def setup(self, device) -> None:
        # the inference worker process runs under the service's settings, as the raw forward does
        tune_process(torch_threads=self.threads, tune_malloc=Settings().tune_malloc)
        kwargs = {}
        if "dtype" in inspect.signature(load_served).parameters:  # the served precision
            kwargs["dtype"] = _dtype_argument(self.dtype)
        self.served = load_served(self.version_dir, self.version_dir.name, 1, device, **kwargs)
        self.forward = _service_forward(self.served)
        self.heads = HeadCache()
        self.forwards = self.images = 0
        self._stats = (os.open(self.stats_dir / str(os.getpid()), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                       if self.stats_dir else None)

    def decode_request(self, request):  # a starlette FormData: LitServe parses multipart
        started = time.perf_counter()
        uploads = request.getlist("images")
        files = [(u.filename or f"image-{i}", u.file.read()) for i, u in enumerate(uploads)]
        labels = [label.strip() for label in request["labels"].split(",")]
        templates = request.getlist("templates") or list(DEFAULT_TEMPLATES)
        pixels = preprocess_images(files, self.served.request_transform, max_pixels=MAX_IMAGE_PIXELS)
        head = self.heads.get_or_build(HeadCache.key(self.served.version, labels, templates),
                                       lambda: self.served.build_head(labels, templates))
        return {"names": [name for name, _ in files], "labels": labels, "pixels": pixels,
                "head": head, "top_k": int(request.get("top_k", 5)), "started": started}

    def batch(self, inputs: list[dict]) -> list[dict]:
        return inputs  # one forward over every image in predict; heads differ per request

    @torch.inference_mode()
    def predict(self, jobs: list[dict]) -> list[dict]:
        pixels = torch.cat([job["pixels"] for job in jobs])
        # LitServe batches requests; the service's max batch counts images: forward as many
        chunks = pixels.split(self.max_batch_size)
        features = torch.cat([self.forward(chunk) for chunk in chunks])
        for job, part in zip(jobs, features.split([len(job["pixels"]) for job in jobs])):
            job["ranked"] = rank(self.served, part, job["head"], job["top_k"])
        self._count(len(chunks), len(pixels))
        return jobs

    def _count(self, forwards: int, images: int) -> None:
        self.forwards += forwards
        self.images += images
        if self._stats is not None:  # one short write, in place: the bench may read it any time
            os.pwrite(self._stats, f"{self.forwards} {self.images}".ljust(40).encode(), 0)

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, job: dict) -> dict:
        results = [{"image": name, "labels": [{"label": job["labels"][i], "probability": p}
                                               for i, p in ranked]}
                   for name, ranked in zip(job["names"], job["ranked"])]
        return {"model_version": self.served.version, "results": results,
                "time_ms": (time.perf_counter() - job["started"]) * 1000}


def _service_forward(served):
    """The service's inference path from pixels to features: on CUDA staged in pinned memory and
    copied back to the host once per forward (``service.batching``, where it has them)."""
    if hasattr(batching, "to_device") and hasattr(batching, "to_host"):
        return lambda pixels: batching.to_host(served.encode_images(batching.to_device([pixels], served.device)))
    return served.encode_images


def _dtype_argument(dtype: str):
    """``dtype`` as ``load_served`` takes it: a name, or a torch.dtype where its annotation names
    only that."""
    annotation = str(inspect.signature(load_served).parameters["dtype"].annotation)
    return getattr(torch, dtype) if "torch.dtype" in annotation and "str" not in annotation else dtype


def litserve_device(device: str) -> tuple[str, int | list[int]]:
    """LitServe's (accelerator, devices) for a torch device name: cpu, cuda or cuda:N."""
    if device == "cpu":
        return "cpu", 1
    if device.startswith("cuda"):
        return "cuda", [int(device.partition(":")[2] or 0)]
    raise SystemExit(f"unsupported device {device!r}: use cpu, cuda or cuda:N")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version_dir", type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32", help="the served precision")
    parser.add_argument("--threads", type=int, help="torch threads of each worker (default: torch's)")
    parser.add_argument("--batch", type=int, default=32,
                        help="LitServe's max_batch_size (requests), and the most images per forward")
    parser.add_argument("--wait-ms", type=float, default=5.0, help="LitServe's batch_timeout")
    parser.add_argument("--workers", type=int, default=1, help="LitServe's workers_per_device")
    parser.add_argument("--fast-queue", action="store_true", help="LitServe's ZeroMQ queue")
    parser.add_argument("--stats-dir", type=Path, help="where each worker counts its forwards")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    api = ClassifyAPI(args.version_dir, threads=args.threads, max_batch_size=args.batch,
                      batch_timeout=args.wait_ms / 1000, dtype=args.dtype, stats_dir=args.stats_dir)
    accelerator, devices = litserve_device(args.device)
    options = {}
    if args.fast_queue:
        if "fast_queue" in inspect.signature(ls.LitServer.__init__).parameters:
            options["fast_queue"] = True
        else:
            logger.warning("this litserve (%s) has no fast_queue: its default queue serves",
                           getattr(ls, "__version__", "?"))
    server = ls.LitServer(api, accelerator=accelerator, devices=devices,
                          workers_per_device=args.workers, timeout=120, **options)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
