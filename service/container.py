"""The per-app objects (settings, database, model holder, batcher, metrics), built once."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from records import db
from records.settings import Settings
from zscl_core import HeadCache

from .batching import MicroBatcher
from .classify import Classifier, Limits
from .feedback import FeedbackService
from .embeddings import TEXT_CACHE_ENTRIES, EmbedLimits, Embedder
from .head_builder import HeadBuilder
from .metrics import Metrics
from .serving import ModelHolder
from .tokenizing import TokenizerProcess

__all__ = ["Services", "build_services"]


@dataclass
class Services:
    """Everything a request needs, built once per app by :func:`build_services` (``ServicesDep``)."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    metrics: Metrics
    holder: ModelHolder
    batcher: MicroBatcher
    classifier: Classifier
    celery: Celery  # only sends update jobs; opens no connection until the first send
    feedback: FeedbackService
    embedder: Embedder


def build_services(settings: Settings) -> Services:
    """Wire the service objects; opens no connection and loads no model (that is startup's job)."""
    engine = db.make_engine(settings.database_url)
    sessions = db.make_session_factory(engine)
    metrics = Metrics()
    holder = ModelHolder(sessions, settings.torch_device, head_cache_size=settings.head_cache_size,
                         head_builders=settings.head_builders,
                         head_build_queue=settings.head_build_queue,
                         head_build_nice=settings.head_build_nice,
                         dtype=settings.served_dtype, trace_images=settings.trace_images,
                         on_swap=metrics.on_swap,
                         on_failure=lambda version, exc: metrics.swap_failures.inc(),
                         on_head_built=metrics.on_head_built,
                         tokenizers=(TokenizerProcess(settings.tokenize_apart)
                                     if settings.tokenize_apart else None))
    batcher = MicroBatcher(max_size=settings.max_batch,
                           max_wait_s=settings.batch_max_wait_ms / 1000,
                           queue_max=settings.queue_max, on_batch=metrics.batch_size.observe)
    metrics.watch(holder.heads, lambda: batcher.depth)
    limits = Limits(settings.max_labels, settings.max_batch_images, settings.max_image_pixels,
                    settings.max_templates, settings.max_prompts)
    classifier = Classifier(holder, batcher, sessions, limits)
    # texts to embed get a builder of their own: they never wait behind (or evict) classify's heads
    text_builder = HeadBuilder(HeadCache(TEXT_CACHE_ENTRIES), threads=1,
                               queue_max=settings.head_build_queue, nice=settings.head_build_nice)
    embedder = Embedder(holder, batcher, text_builder,
                        EmbedLimits(settings.max_batch_images, settings.max_image_pixels,
                                    settings.max_embed_texts))
    from jobqueue import create_celery
    celery = create_celery(settings)
    return Services(settings, engine, sessions, metrics, holder, batcher, classifier, celery,
                    feedback=FeedbackService(sessions, settings, celery, metrics),
                    embedder=embedder)
