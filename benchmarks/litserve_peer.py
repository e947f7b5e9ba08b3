"""The serving benchmark's peer: the same model and request path behind LitServe.

``benchmarks.serve_bench`` starts this as a subprocess, as it starts ``zscl serve``, and sends it
the same multipart requests. It serves ``POST /v1/classify`` (fields ``images``, ``labels``
comma-separated, ``templates``, ``top_k``) with what the service runs per request: the version
loaded and warmed by ``service.serving.load_served``, images decoded by
``records.imaging.preprocess_images`` with the version's preprocessing, text heads from a
``zscl_core.HeadCache``, one batched ``ServedModel.encode_images`` per batch and the service's
ranking (``service.batching.rank``). LitServe does the rest: HTTP (its own uvicorn process), the
queue and the dynamic batching (``max_batch_size``, ``batch_timeout``), in its inference worker
process.

    python -m benchmarks.litserve_peer VERSION_DIR --port 8001 [--threads 1] [--batch 32]
                                       [--wait-ms 5]

Not a product: no auth, limits or error mapping; a bench needs none.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import litserve as ls
import torch

from records.imaging import preprocess_images
from records.runtime import tune_process
from records.settings import Settings
from service.batching import rank
from service.serving import load_served
from zscl_core import DEFAULT_TEMPLATES, HeadCache

logger = logging.getLogger("benchmarks.litserve_peer")

MAX_IMAGE_PIXELS = 40_000_000  # the service's default cap, checked while decoding as it does


class ClassifyAPI(ls.LitAPI):
    """Zero-shot classification of multipart uploads, batched by LitServe."""

    def __init__(self, version_dir: Path, *, threads: int, max_batch_size: int,
                 batch_timeout: float):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout,
                         api_path="/v1/classify")
        self.version_dir = version_dir
        self.threads = threads

    def setup(self, device) -> None:
        # the inference worker process runs under the service's settings, as the raw forward does
        tune_process(torch_threads=self.threads, tune_malloc=Settings().tune_malloc)
        self.served = load_served(self.version_dir, self.version_dir.name, 1, "cpu")
        self.heads = HeadCache()

    def decode_request(self, request):  # a starlette FormData: LitServe parses multipart
        started = time.perf_counter()
        uploads = request.getlist("images")
        files = [(u.filename or f"image-{i}", u.file.read()) for i, u in enumerate(uploads)]
        labels = [label.strip() for label in request["labels"].split(",")]
        templates = request.getlist("templates") or list(DEFAULT_TEMPLATES)
        pixels = preprocess_images(files, self.served.preprocess, max_pixels=MAX_IMAGE_PIXELS)
        head = self.heads.get_or_build(HeadCache.key(self.served.version, labels, templates),
                                       lambda: self.served.build_head(labels, templates))
        return {"names": [name for name, _ in files], "labels": labels, "pixels": pixels,
                "head": head, "top_k": int(request.get("top_k", 5)), "started": started}

    def batch(self, inputs: list[dict]) -> list[dict]:
        return inputs  # one forward over every image in predict; heads differ per request

    @torch.inference_mode()
    def predict(self, jobs: list[dict]) -> list[dict]:
        features = self.served.encode_images(torch.cat([job["pixels"] for job in jobs]))
        for job, part in zip(jobs, features.split([len(job["pixels"]) for job in jobs])):
            job["ranked"] = rank(self.served, part, job["head"], job["top_k"])
        return jobs

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, job: dict) -> dict:
        results = [{"image": name, "labels": [{"label": job["labels"][i], "probability": p}
                                               for i, p in ranked]}
                   for name, ranked in zip(job["names"], job["ranked"])]
        return {"model_version": self.served.version, "results": results,
                "time_ms": (time.perf_counter() - job["started"]) * 1000}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version_dir", type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the worker")
    parser.add_argument("--batch", type=int, default=32, help="LitServe's max_batch_size")
    parser.add_argument("--wait-ms", type=float, default=5.0, help="LitServe's batch_timeout")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    api = ClassifyAPI(args.version_dir, threads=args.threads, max_batch_size=args.batch,
                      batch_timeout=args.wait_ms / 1000)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, timeout=120)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
