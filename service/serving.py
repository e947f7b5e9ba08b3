"""The served model and its zero-downtime hot-swap.

A :class:`ServedModel` is one loaded, warmed version with everything a request needs (model,
transform, tokenizer, id). :class:`ModelHolder` owns the single reference to the current one:
a swap loads and warms the new version off the request path, then replaces that reference.
A request reads the reference once and uses that object throughout, so image features and the
text head always come from the same version, and in-flight requests finish on the old model.

Text heads are built on threads of their own (:class:`~service.head_builder.HeadBuilder`,
bounded), never on the threads that decode cached requests' images, reap jobs or swap models.
They are built ahead of requests where that is known to pay: a stored label set's head when it
is stored (:meth:`ModelHolder.warm_head`), and after a swap, the old version's most recently used
heads for the new version, before the swap call returns.

Precision (``ZSCL_INFERENCE_DTYPE``): each tower is cast where it still agrees with float32
(:mod:`service.precision`). Image features and text heads always come out float32, and heads are
kept on the host, where requests rank.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker
from torch import nn

from records import registry
from records.errors import NotReady
from zscl_core import DEFAULT_TEMPLATES, HeadCache, ZSCLError, build_head, load_version

from .head_builder import HeadBuilder
from .pixels import DevicePreprocess, split_preprocess
from .precision import (AGREEMENT_COSINE, image_features, lower_precision_, min_cosine, probe_inputs,
                        resolve_dtype)
from .tokenizing import TokenizerProcess

__all__ = ["ServedModel", "load_served", "frozen_image_encoder", "image_features", "lower_precision_",
           "resolve_dtype", "ModelHolder"]

logger = logging.getLogger(__name__)

WARMUP_TEMPLATES = ("a photo of a {}.",)
RETRY_FIRST_S = 1.0  # a version that failed to load (files still arriving?) is retried with
RETRY_MAX_S = 60.0   # exponential back-off, so a fixed version is picked up without a restart
REWARM_HEADS = 16    # heads rebuilt for a new version after a swap, the most recently used first


class _Miss(Exception):
    """A head that is not cached (see :meth:`ModelHolder.head`)."""


def _report_miss() -> torch.Tensor:
    raise _Miss


@dataclass(eq=False)
class ServedModel:
    """One loaded version. Immutable once published; compared by identity."""

    version: str
    generation: int
    model: nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable
    device: str
    logit_scale: float
    loaded_at: float = field(default_factory=time.time)
    image_graph: torch.jit.ScriptModule | None = None  # see frozen_image_encoder
    image_dtype: torch.dtype = torch.float32  # the towers' weights (see lower_precision_)
    text_dtype: torch.dtype = torch.float32
    # the eval transform split at its ToTensor: requests stop at uint8 images, and the batch is
    # scaled and normalised on the device (service.pixels); None: the transform runs whole
    device_preprocess: DevicePreprocess | None = None

    @property
    def request_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """What a request applies to each decoded image: uint8 pixels where the transform
        splits, the whole transform otherwise (:meth:`encode_images` takes either)."""
        return self.device_preprocess or self.preprocess

    @property
    def image_graph_input(self) -> torch.dtype:
        """What :attr:`image_graph` takes: :attr:`request_transform`'s pixels, uint8 where the
        transform splits."""
        return torch.float32 if self.device_preprocess is None else torch.uint8

    @property
    def precision(self) -> str:
        """The towers' precision in words, e.g. 'bfloat16 (image tower float32)'."""
        image, text = (str(d).removeprefix("torch.") for d in (self.image_dtype, self.text_dtype))
        return image if image == text else f"{text} (image tower {image})"

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Float32 image features of a preprocessed batch, normalised in float32, (n, dim), on
        the model's device (the batcher copies them to the host, once per batch). Pixels as
        :attr:`request_transform` gives them run through :attr:`image_graph` where there is
        one (uint8 ones with their scaling inside it); float pixels where requests send uint8
        ones (the whole transform's output) run on the eager model."""
        if pixels.device != torch.device(self.device):  # else no call: each one lets go of
            # Python's lock, and may wait to win it back from the event loop
            pixels = pixels.to(self.device, non_blocking=True)
        if self.image_graph is not None and pixels.dtype == self.image_graph_input:
            return self.image_graph(pixels)
        if pixels.dtype == torch.uint8:
            pixels = self.device_preprocess.finish(pixels)
        return image_features(self.model, pixels, self.image_dtype)

    @torch.inference_mode()
    def build_head(self, classnames, templates, should_stop=None) -> torch.Tensor:
        """The labels' text head, (dim, classes): encoded on the model's device, returned as a
        float32 copy on the host, where requests rank (and what the head cache keeps)."""
        head = build_head(self.model, self.tokenizer, classnames, templates, device=self.device,
                          should_stop=should_stop)
        return head.to("cpu", torch.float32)


class _EncodeImage(nn.Module):
    """:func:`image_features` in ``dtype``; with ``finish``, of uint8 pixels, scaled and
    normalised first as :meth:`DevicePreprocess.finish` does."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, finish: DevicePreprocess | None = None):
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.finish = finish

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.finish is not None:  # traced into the graph, its mean and std as constants
            pixels = self.finish.finish(pixels)
        return image_features(self.model, pixels, self.dtype)


def _graph_agrees(graph: torch.Tensor, eager: torch.Tensor, dtype: torch.dtype) -> bool:
    """Float32: to 1e-4. Reduced precision: to the cosine a reduced tower keeps to float32
    (freezing folds BatchNorm into convolution weights in that precision; the starter's image
    tower in bfloat16 kept 0.998)."""
    if dtype == torch.float32:
        return torch.allclose(graph, eager, atol=1e-4)
    return min_cosine(graph, eager) >= AGREEMENT_COSINE


def frozen_image_encoder(model: nn.Module, example: torch.Tensor,
                         dtype: torch.dtype = torch.float32,
                         finish: DevicePreprocess | None = None) -> torch.jit.ScriptModule | None:
    """:func:`image_features` in ``dtype`` traced and frozen into a TorchScript graph, or None if
    it cannot be (logged); with ``finish``, the graph takes uint8 pixels (``example``'s dtype)
    and scales and normalises them itself. Why: the graph runs its whole forward inside torch,
    without taking Python's lock between layers, so the inference thread no longer waits on the
    threads that parse HTTP and decode images (on 2 CPU cores an eager 16-image forward slowed
    from ~115 ms to 160-230 ms beside one busy Python thread). The scaling inside it is for the
    same reason: run as four calls of their own, each gave the lock away and waited to win it
    back from the event loop, 1-10 ms per 8-image batch on the starter (see docs/serving.md).
    The graph is checked against the eager model on two batch sizes before it is used, with a
    tolerance for ``dtype`` (:func:`_graph_agrees`)."""
    try:
        eager_encoder = _EncodeImage(model, dtype, finish).eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            graph = torch.jit.freeze(torch.jit.trace(eager_encoder, example, check_trace=False))
            for n in (1, 3):
                seeded = torch.Generator().manual_seed(n)
                pixels = (torch.randint(0, 256, (n, *example.shape[1:]), dtype=torch.uint8, generator=seeded)
                          if example.dtype == torch.uint8 else
                          torch.randn(n, *example.shape[1:], generator=seeded)).to(example.device)
                if not _graph_agrees(graph(pixels), eager_encoder(pixels), dtype):
                    raise RuntimeError(f"traced features differ from eager ones at batch {n}")
        return graph
    except Exception as exc:  # noqa: BLE001 - any tracing failure just means: stay eager
        logger.warning("image tower not traced (%s); serving the eager model", exc)
        return None


def load_served(path: Path, version: str, generation: int, device: str, *,
                dtype: str | torch.dtype = "float32", trace_images: bool = True) -> ServedModel:
    """Load a saved version and warm it (one image and one text forward) so its first request
    pays no lazy-initialisation cost. Blocking: call it in a thread.

    Args:
        path, version, generation: the saved version and what the pointer calls it.
        device: where the model runs.
        dtype: the towers' precision, 'float32', 'bfloat16' or 'float16'; each tower gets it
            where it agrees with float32 (:func:`lower_precision_`), and keeps float32 otherwise.
        trace_images: encode images with :func:`frozen_image_encoder`.
    """
    dtype = resolve_dtype(dtype)
    loaded = load_version(path, device=device)
    model = loaded.model.eval()
    # from the float32 parameter (KEEP_FLOAT32 keeps it so anyway)
    scale = float(model.logit_scale.detach().exp().clamp(max=100)) if hasattr(model, "logit_scale") else 100.0
    served = ServedModel(version, generation, model, loaded.preprocess_val, loaded.tokenizer,
                         str(device), scale)
    if dtype != torch.float32:
        served.image_dtype, served.text_dtype, _ = lower_precision_(
            model, dtype, *probe_inputs(served.preprocess, served.tokenizer, served.device))
    served.device_preprocess = split_preprocess(served.preprocess)
    if trace_images:  # for what requests send: uint8 pixels where the transform splits
        blank = served.request_transform(Image.new("RGB", (64, 64))).unsqueeze(0).to(device)
        served.image_graph = frozen_image_encoder(model, blank, served.image_dtype,
                                                  served.device_preprocess)
    # warm the path requests take (uint8 pixels where the transform splits)
    served.encode_images(torch.stack([served.request_transform(Image.new("RGB", (64, 64)))]))
    served.build_head(["warm-up"], WARMUP_TEMPLATES)
    return served


class ModelHolder:
    """Holds the served model and keeps it in line with the durable pointer.

    Args:
        session_factory: opens database sessions (the pointer and version rows).
        device: where models are loaded.
        head_cache_size: text heads kept per process (keyed by version, labels, templates).
        head_builders, head_build_queue, head_build_nice: the :class:`HeadBuilder` that builds
            every head (its ``threads``, ``queue_max`` and ``nice``).
        rewarm_heads: after a swap, this many of the old version's most recently used heads
            are rebuilt for the new version.
        dtype: the towers' precision ('float32', 'bfloat16', 'float16'; see :func:`load_served`).
        trace_images: encode images with a frozen TorchScript graph of each version
            (:func:`frozen_image_encoder`).
        on_swap: called as ``on_swap(old, new, trigger)`` after each swap (metrics).
        on_failure: called as ``on_failure(version, error)`` when a version fails to load.
        on_head_built: called as ``on_head_built(cause, seconds)`` after each head built for
            the cache; cause is "request", "label_set" or "swap" (metrics).
        tokenizers: where each loaded version's long prompt lists are tokenized
            (:class:`service.tokenizing.TokenizerProcess`); None: in this process.
    """

    def __init__(self, session_factory: sessionmaker[Session], device: str, *,
                 head_cache_size: int = 128, rewarm_heads: int = REWARM_HEADS,
                 head_builders: int = 1, head_build_queue: int = 4, head_build_nice: int = 10,
                 dtype: str | torch.dtype = "float32", trace_images: bool = True,
                 on_swap: Callable[[ServedModel | None, ServedModel, str], None] | None = None,
                 on_failure: Callable[[str, Exception], None] | None = None,
                 on_head_built: Callable[[str, float], None] | None = None,
                 tokenizers: TokenizerProcess | None = None):
        self._sessions = session_factory
        self.tokenizers = tokenizers
        self.device = device
        self.heads = HeadCache(head_cache_size)
        self.builder = HeadBuilder(self.heads, threads=head_builders, queue_max=head_build_queue,
                                   nice=head_build_nice)
        self.rewarm_heads = rewarm_heads
        self.dtype = resolve_dtype(dtype)  # fails here, at startup, on a bad name
        self.trace_images = trace_images
        self._current: ServedModel | None = None
        self._lock = asyncio.Lock()
        self._on_swap = on_swap
        self._on_failure = on_failure
        self._on_head_built = on_head_built
        self._failed: dict[tuple[str, int], tuple[float, float]] = {}  # -> (retry at, delay)
        self.last_error: str | None = None
        self.phase: str | None = "starting"  # what /readyz reports while nothing is served

    @property
    def current(self) -> ServedModel | None:
        """The served model, or None while none is ready (``/readyz``); requests use :meth:`require`."""
        return self._current

    def require(self) -> ServedModel:
        """The served model, for one request to use throughout; 503 while none is ready."""
        served = self._current
        if served is None:
            hint = f" (last error: {self.last_error})" if self.last_error else ""
            raise NotReady(f"the model is still loading; retry shortly{hint}")
        return served

    async def head(self, served: ServedModel, classnames, templates,
                   gone: threading.Event | None = None,
                   on_miss: Callable[[], None] | None = None) -> torch.Tensor:
        """The text head of ``served`` for these labels: from the LRU cache at once, else built
        by :attr:`builder` (sharing a build in progress for the same head; ``QueueFull`` when
        the builder is full), ``on_miss()`` called first. The build stops between chunks of
        prompts (``WorkAbandoned``) once ``gone`` is set, and that of every other request
        waiting for it."""
        key = HeadCache.key(served.version, classnames, templates)
        try:
            return self.heads.get_or_build(key, _report_miss)  # counts the hit or the miss
        except _Miss:
            pass
        if on_miss is not None:
            on_miss()
        return await self.builder.get(
            key, partial(self._build_head, served, classnames, templates, "request"), gone)

    def warm_head(self, classnames, templates=None) -> bool:
        """Build and cache the served version's head for these labels (no or empty templates:
        the defaults, as classify uses them), so that their first request finds it cached.
        It is built by :attr:`builder` (``QueueFull`` when that is full); this thread waits.
        Blocking: never call it on the event loop; errors propagate. False when no version is
        served yet or it was cached."""
        served = self._current
        if served is None:
            return False
        templates = list(templates) if templates else list(DEFAULT_TEMPLATES)
        key = HeadCache.key(served.version, classnames, templates)
        if key in self.heads:
            return False
        self.builder.submit(key, partial(self._build_head, served, classnames, templates,
                                         "label_set")).result()
        return True

    def _build_head(self, served: ServedModel, classnames, templates, cause: str,
                    should_stop=None) -> torch.Tensor:
        started = time.perf_counter()
        head = served.build_head(classnames, templates, should_stop)
        if self._on_head_built:
            self._on_head_built(cause, time.perf_counter() - started)
        return head

    async def _rewarm(self, old: ServedModel | None, new: ServedModel) -> None:
        """Rebuild the old version's most recently used heads for ``new`` on :attr:`builder`
        (never refused), one at a time, the most recent first, stopping if ``new`` stops being
        served meanwhile. A failure is logged and ends the rebuilding: requests then build what
        they need, as without it."""
        if old is None:
            return
        started, built = time.perf_counter(), 0
        for _, classnames, templates in self.heads.recent(old.version, self.rewarm_heads):
            if self._current is not new:
                break
            key = HeadCache.key(new.version, classnames, templates)
            if key in self.heads:
                continue
            try:
                await self.builder.get(key, partial(self._build_head, new, classnames, templates,
                                                    "swap"), admit=False)
                built += 1
            except (ZSCLError, RuntimeError, ValueError) as exc:
                logger.warning("rebuilding cached heads for %s stopped: %s", new.version, exc)
                break
        if built:
            logger.info("rebuilt %d cached text heads for %s in %.2fs", built, new.version,
                        time.perf_counter() - started)

    def _load(self, path: Path, version: str, generation: int) -> ServedModel:
        """:func:`load_served` with this holder's settings; its long prompt lists go to the
        tokenizer process, if there is one. Blocking: call it in a thread."""
        served = load_served(path, version, generation, self.device, dtype=self.dtype,
                             trace_images=self.trace_images)
        if self.tokenizers is not None:  # not yet published: nothing else holds it
            served.tokenizer = self.tokenizers.wrap(version, served.tokenizer)
        return served

    def _read_pointer(self) -> tuple[str | None, int, str | None]:
        with self._sessions() as session:
            version, generation = registry.get_serving(session)
            path = registry.get_version(session, version).path if version else None
        return version, generation, path

    async def sync(self, trigger: str) -> bool:
        """Serve the version the pointer names, loading it if needed; True when it swapped.

        Loading runs in a worker thread; a version that fails to load is logged once, retried
        with back-off, and the current model keeps serving meanwhile.
        After a swap, the old version's most recently used heads are rebuilt for the new one (by
        the head builder, the new version already serving) before this returns.
        """
        async with self._lock:
            version, generation, path = await asyncio.to_thread(self._read_pointer)
            current = self._current
            if version is None or (current is not None and current.version == version):
                return False
            failure = self._failed.get((version, generation))
            if failure is not None and time.monotonic() < failure[0]:
                return False  # failed recently: wait for the back-off before trying again
            started = time.perf_counter()
            if current is None:
                self.phase = f"loading version {version}"
            try:
                new = await asyncio.to_thread(self._load, Path(path), version, generation)
            except (ZSCLError, OSError, RuntimeError) as exc:
                delay = min(failure[1] * 2, RETRY_MAX_S) if failure else RETRY_FIRST_S
                self._failed[(version, generation)] = (time.monotonic() + delay, delay)
                self.last_error = f"version {version}: {exc}"
                (logger.error if failure is None else logger.debug)(
                    "could not load version %s (generation %d): %s; still serving %s; retrying "
                    "in %.0fs", version, generation, exc, current.version if current else "nothing", delay)
                if self._on_failure and failure is None:
                    self._on_failure(version, exc)
                return False
            self._failed.pop((version, generation), None)
            self._current = new
            self.last_error = None
            logger.info("now serving %s (generation %d, via %s, loaded in %.2fs) in %s",
                        version, generation, trigger, time.perf_counter() - started, new.precision)
            if self._on_swap:
                self._on_swap(current, new, trigger)
            await self._rewarm(current, new)
            return True

    async def activate(self, version_id: str) -> tuple[ServedModel, int, str | None]:
        """Load and warm ``version_id``, then point serving at it and swap (admin activate).

        The version is loaded before the pointer moves, so a version that cannot be loaded is
        refused (its error propagates) and nothing changes anywhere.
        Like :meth:`sync`, it returns once the old version's most used heads are rebuilt.

        Returns:
            (the served model, the pointer's new generation, the version served before).
        """
        async with self._lock:
            def load() -> ServedModel:
                with self._sessions() as session:
                    path = registry.get_version(session, version_id).path
                return self._load(Path(path), version_id, 0)

            def move_pointer() -> int:
                with self._sessions() as session:
                    registry.activate(session, version_id)
                    return registry.get_serving(session)[1]

            current = self._current
            new = current if current is not None and current.version == version_id \
                else await asyncio.to_thread(load)
            generation = await asyncio.to_thread(move_pointer)
            if new is not current:
                new.generation = generation  # not yet published: no request holds it
                self._current = new
                self.last_error = None
                logger.info("now serving %s (generation %d, via api) in %s", version_id,
                            generation, new.precision)
                if self._on_swap:
                    self._on_swap(current, new, "api")
                await self._rewarm(current, new)
            return new, generation, (current.version if current else None)

    async def reconcile_forever(self, interval_s: float) -> None:
        """Re-read the pointer every ``interval_s``: how a process that missed a message
        (or runs beside a worker in embedded mode) converges."""
        while True:
            try:
                await self.sync("reconcile")
            except Exception:  # keep reconciling whatever one round hit (e.g. DB locked)
                logger.exception("reconcile round failed; retrying in %.1fs", interval_s)
            await asyncio.sleep(interval_s)

    async def listen_forever(self, redis_url: str, channel: str = registry.CHANNEL,
                             retry_s: float = 0.5, max_retry_s: float = 10.0) -> None:
        """Follow Redis pub/sub pointer notifications (distributed mode), reconnecting forever
        with exponential back-off; reconcile covers whatever is missed meanwhile."""
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        delay = retry_s
        while True:
            client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(channel)
                    logger.info("listening for model changes on %s", channel)
                    delay = retry_s
                    await self.sync("pubsub")  # anything published while we were away
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            await self.sync("pubsub")
            except (RedisError, OSError) as exc:
                logger.warning("pub/sub connection lost (%s); reconnecting in %.1fs", exc, delay)
            finally:
                await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_retry_s)
