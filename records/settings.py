"""One settings object per process, read from the environment (prefix ``ZSCL_``).

Bad values fail at startup with a message naming the variable, never at the first request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


# default micro-batch sizes (see batch_max_size)
CPU_BATCH = 8
GPU_BATCH = 128
MAX_AUTO_API_WORKERS = 8   # API processes per GPU when ZSCL_API_WORKERS is unset (see api_processes)
MAX_AUTO_DATA_WORKERS = 8  # DataLoader processes per training job on a GPU (see loader_workers)


class Settings(BaseSettings):
    """Everything the API (and the worker) needs to know, with safe embedded defaults."""

    model_config = SettingsConfigDict(env_prefix="ZSCL_", env_file=None, extra="ignore",
                                      validate_default=True)

    # storage
    data_dir: Path = Path("./var")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite under data_dir")
    broker_url: str | None = Field(None, description="Celery broker; default embedded SQLite (kombu sqla)")
    redis_url: str | None = Field(None, description="set for distributed mode (pub/sub notifications)")

    # model
    model: str = Field("starter", min_length=1,
                       description="'starter', an open_clip name, a config JSON path or a version dir")
    pretrained: str | None = None
    device: str = "cpu"

    # auth
    admin_key: SecretStr | None = None
    inference_key: SecretStr | None = None

    # limits
    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(40_000_000, gt=0)
    max_labels: int = Field(2_000, gt=0)
    max_batch_images: int = Field(64, gt=0)
    max_templates: int = Field(64, gt=0)
    max_prompts: int = Field(1024, gt=0, description="labels x templates one classify request "
                             "may ask to encode: the work a head-cache miss can cost (about 4.5 s "
                             "on 2 CPU cores with the starter)")
    max_embed_texts: int = Field(256, gt=0, description="texts one POST /v1/embeddings request "
                                 "may ask to encode (each one text-tower pass, no templates)")

    # micro-batching and inference
    batch_max_size: int | None = Field(None, gt=0, description="images per forward; default "
                                       "8 on CPU (where small batches run fastest, and leave "
                                       "room to pipeline), 128 on a GPU")
    inference_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="precision of the served towers; auto: bfloat16 on CUDA, float32 "
        "elsewhere (heads and ranking stay float32)")
    api_workers: int | None = Field(None, gt=0, description="HTTP processes `zscl serve` runs "
                                    "(each parses, decodes and batches for itself); default 1 on "
                                    "CPU, min(8, cores // 2) on a GPU")
    batch_max_wait_ms: float = Field(5.0, ge=0)
    queue_max: int = Field(512, gt=0, description="images waiting for inference before 429")
    torch_threads: int | None = Field(None, gt=0)
    tune_malloc: bool = Field(True, description="keep freed memory in glibc's heap instead of "
                              "returning it after every forward (zscl_core.runtime)")
    head_cache_size: int = Field(128, gt=0)
    # serve each version's image tower as a frozen TorchScript graph (service.serving)
    trace_images: bool = True

    # hot-swap
    reconcile_interval_s: float = Field(1.0, gt=0)

    # datasets and update jobs
    max_dataset_bytes: int = Field(512 * 1024 * 1024, gt=0, description="largest dataset archive")
    max_dataset_files: int = Field(50_000, gt=0)
    max_dataset_total_bytes: int = Field(2 * 1024 ** 3, gt=0, description="uncompressed")
    max_compression_ratio: float = Field(100.0, gt=1)
    min_images_per_class: int = Field(2, ge=1)
    reference_dir: Path | None = Field(None, description="a folder of unlabelled images to "
                                       "distil on; overrides reference_images")
    reference_images: Literal["task", "photos", "both"] = Field(
        "photos", description="without reference_dir: distil on crops of the photos "
        "scikit-image ships ('photos', chosen by `zscl bench updates`, see docs), on the train "
        "images of the job's dataset and the learned ones ('task'), or on both")
    data_workers: int | None = Field(None, ge=0, description="DataLoader processes that decode "
                                     "and augment a job's images; default 0 (the training "
                                     "thread) on CPU, min(8, cores - 2) on a GPU")
    job_soft_time_limit_s: int = Field(6 * 3600, gt=0)
    job_hard_time_limit_s: int = Field(6 * 3600 + 300, gt=0)
    job_heartbeat_timeout_s: float = Field(60.0, gt=0, description="a running job without a "
                                           "heartbeat for this long is failed (worker lost)")
    start_worker: bool = Field(True, description="embedded mode: `zscl serve` also starts one "
                               "worker process")

    # feedback (records.feedback): classified images kept so that users can correct the answers
    feedback_max_bytes: int = Field(2 * 1024 ** 3, gt=0, description="bytes of kept images; "
                                    "past it, classify still answers but keeps no more images")
    feedback_retention_days: float = Field(30.0, gt=0, description="a kept prediction nobody "
                                           "answered is deleted with its image after this long")
    feedback_purge_interval_s: float = Field(600.0, gt=0, description="how often each API "
                                             "process purges expired predictions")

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    # HTTP limits a reverse proxy would set (zscl_cli.http_limits; the body's in
    # service.api.middleware); per API process
    http_max_head_bytes: int = Field(32 * 1024, gt=0, description="request line and headers "
                                     "together; a larger head is refused with 431")
    http_max_headers: int = Field(100, gt=0, description="header fields per request; more is 431")
    http_max_target_bytes: int = Field(8 * 1024, gt=0, description="the request target (path and "
                                       "query); a longer one is 414")
    http_head_timeout_s: float = Field(30.0, gt=0, description="a request line and its headers "
                                       "must arrive within this; else 408 (slowloris)")
    http_keepalive_timeout_s: float = Field(5.0, gt=0, description="an idle kept-alive "
                                            "connection is closed after this")
    http_body_timeout_s: float = Field(30.0, gt=0, description="a request body may keep the app "
                                       "waiting this long, plus 1 s per http_body_min_rate bytes "
                                       "it brought; else 408")
    http_body_min_rate: int = Field(1024, gt=0, description="bytes/s a slow body must average "
                                    "after http_body_timeout_s")
    http_max_connections: int = Field(1024, gt=0, description="open connections (or requests in "
                                      "progress) per API process; over it, 503")

    # text-head builds (service.head_builder): labels not in the head cache, label-set warm-ups
    # and swap re-warms, on threads apart from those serving cached labels; per API process
    head_builders: int = Field(1, gt=0, description="text heads built at once, each on a thread "
                               "of its own (a 1,000-label head is seconds of text-tower work)")
    head_build_queue: int = Field(4, ge=0, description="head builds that may wait for a builder; "
                                  "beyond head_builders + this, classify with labels not in the "
                                  "head cache and PUT /v1/label-sets answer 429 with Retry-After")
    head_build_nice: int = Field(10, ge=0, le=19, description="how much lower the builders' CPU "
                                 "priority is (Linux nice increment), so that cached requests' "
                                 "decoding and inference win the cores; 0 keeps it equal")
    tokenize_apart: int = Field(256, ge=0, description="prompt lists this long or longer are "
                                "tokenized in a child process of each API process, away from "
                                "its Python lock, where the tokenizer works in Python (open_clip's "
                                "SimpleTokenizer; service.tokenizing); 0: always in the process")

    # a job whose worker was lost (killed, restarted, machine gone: no heartbeat for
    # job_heartbeat_timeout_s) runs again from its start this many times before it fails
    job_max_retries: int = Field(1, ge=0, description="retries of a job interrupted by a lost "
                                 "worker (records.jobs.reap_stale); 0: it fails at once")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in ("cpu", "auto") and not value.startswith("cuda") and value != "mps":
            raise ValueError("ZSCL_DEVICE must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("ZSCL_REDIS_URL must start with redis://, rediss:// or unix:// "
                             "(leave it unset for embedded mode)")
        return value or None

    @field_validator("admin_key", "inference_key")
    @classmethod
    def _key_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 8:
            raise ValueError("API keys must be at least 8 characters (e.g. `openssl rand -hex 16`)")
        return value

    @model_validator(mode="after")
    def _derived_urls(self) -> Settings:
        data_dir = self.data_dir.expanduser().resolve()
        object.__setattr__(self, "data_dir", data_dir)
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{data_dir / 'zscl.sqlite'}")
        if not self.broker_url:
            object.__setattr__(self, "broker_url", f"sqla+sqlite:///{data_dir / 'broker.sqlite'}")
        return self

    @property
    def versions_dir(self) -> Path:
        """Where the model version directories are kept."""
        return self.data_dir / "versions"

    @property
    def datasets_dir(self) -> Path:
        """Where uploaded datasets are kept."""
        return self.data_dir / "datasets"

    @property
    def feedback_dir(self) -> Path:
        """Where kept feedback images are stored."""
        return self.data_dir / "feedback"

    def ingest_limits(self):
        """The dataset upload limits these settings set, for ``records.ingest``."""
        from .ingest import IngestLimits  # lazy: settings stay cheap to import

        return IngestLimits(max_archive_bytes=self.max_dataset_bytes,
                            max_files=self.max_dataset_files,
                            max_total_bytes=self.max_dataset_total_bytes,
                            max_compression_ratio=self.max_compression_ratio,
                            max_image_pixels=self.max_image_pixels,
                            min_images_per_class=self.min_images_per_class)

    @property
    def distributed(self) -> bool:
        """Whether jobs go through Redis and Celery (a Redis URL is set)."""
        return self.redis_url is not None

    @property
    def torch_device(self) -> str:
        """The concrete device: 'auto' picks CUDA when it is available."""
        if self.device != "auto":
            return self.device
        import torch  # lazy: settings stay cheap to import
        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def max_batch(self) -> int:
        """``batch_max_size``, or the device's default (CPU_BATCH / GPU_BATCH)."""
        if self.batch_max_size is not None:
            return self.batch_max_size
        return CPU_BATCH if self.torch_device == "cpu" else GPU_BATCH

    @property
    def served_dtype(self) -> str:
        """``inference_dtype`` resolved: 'auto' is bfloat16 on CUDA and float32 elsewhere."""
        if self.inference_dtype != "auto":
            return self.inference_dtype
        return "bfloat16" if self.torch_device.startswith("cuda") else "float32"

    @property
    def api_processes(self) -> int:
        """``api_workers``, or the device's default: 1 on CPU (the model's threads use the cores),
        ``min(8, cores // 2)`` on a GPU (HTTP parsing and decoding then bound the throughput)."""
        if self.api_workers is not None:
            return self.api_workers
        if not self.torch_device.startswith("cuda"):
            return 1
        return max(1, min(MAX_AUTO_API_WORKERS, (os.cpu_count() or 2) // 2))

    @property
    def loader_workers(self) -> int:
        """``data_workers``, or the device's default: 0 on CPU (decoding on the training thread;
        extra processes would take the cores the model trains on), ``min(8, cores - 2)`` on a GPU."""
        if self.data_workers is not None:
            return self.data_workers
        if not self.torch_device.startswith("cuda"):
            return 0
        return max(1, min(MAX_AUTO_DATA_WORKERS, (os.cpu_count() or 2) - 2))

    def ensure_dirs(self) -> None:
        """Create the data directories if they are missing."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        os.makedirs(self.data_dir, exist_ok=True)
