"""The app factory. Startup is non-blocking: the model loads in the background and
``/readyz`` answers 503 until it is loaded and warmed (LitServe's pattern).

One app is one API process. `zscl serve` may run several on one port (uvicorn's workers, each
calling :func:`create_app` with no argument); each then loads the served version, follows the
pointer and batches for itself, and they meet only in the database (and Redis, when
distributed) and in the metrics files (``service.metrics``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
from collections.abc import AsyncIterator

from fastapi import FastAPI
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from records.errors import SchemaMismatch
from records.settings import Settings
from zscl_core import ZSCLError
from zscl_core.runtime import tune_process

from .api.errors import install_error_handlers
from .api.main import UNCAPPED_ROUTES, api_router, health_router
from .api.middleware import BodyTimeout, ServiceMiddleware
from .bootstrap import bootstrap
from .container import Services, build_services
from .logs import background_logging
from .loop_watch import LoopWatch
from .metrics import SYNC_INTERVAL_S, Metrics

__all__ = ["create_app", "PROCESS_HEADER"]

PROCESS_HEADER = "X-Process-Id"

logger = logging.getLogger(__name__)


async def _start_serving(services: Services) -> None:
    """Bootstrap the pointer, load the served version, then follow the pointer forever."""
    settings, holder = services.settings, services.holder
    try:
        holder.phase = f"bootstrapping ZSCL_MODEL={settings.model}"
        await _in_daemon_thread(lambda: bootstrap(settings, services.engine))
    except SchemaMismatch as exc:  # e.g. a newer release's database: serve nothing from it
        holder.last_error = str(exc)
        logger.error("refusing to serve: %s", exc)
        return
    except (ZSCLError, OSError, SQLAlchemyError) as exc:  # e.g. an unknown model: say so on /readyz
        holder.last_error = f"could not bootstrap ZSCL_MODEL={settings.model!r}: {exc}"
        logger.error("%s; waiting for a version to be activated", holder.last_error)
    await holder.sync("startup")
    loops = [holder.reconcile_forever(settings.reconcile_interval_s), _reap_forever(services),
             _purge_feedback_forever(services)]
    if settings.redis_url:
        loops.append(holder.listen_forever(settings.redis_url))
    await asyncio.gather(*loops)


async def _reap_forever(services: Services) -> None:
    """Requeue (while they have retries left) or fail jobs whose worker died (no heartbeat), so
    they never stay 'running' forever."""
    from records import jobs
    from records.ingest import remove_stale_temp_dirs
    from jobqueue import send_requeued

    settings = services.settings

    def reap() -> None:
        with services.sessions() as session:
            reaped = jobs.reap_stale(session, settings.job_heartbeat_timeout_s,
                                     settings.job_max_retries)
        send_requeued(services.celery, services.sessions, reaped.requeued)

    if settings.datasets_dir.is_dir():
        await asyncio.to_thread(remove_stale_temp_dirs, settings.datasets_dir)
    interval = max(1.0, settings.job_heartbeat_timeout_s / 4)
    while True:
        try:
            await asyncio.to_thread(reap)
        except OperationalError as exc:  # database busy or briefly away: try again next time
            logger.warning("job reaper: %s", exc)
        await asyncio.sleep(interval)


async def _purge_feedback_forever(services: Services) -> None:
    """Delete kept predictions nobody answered once their retention is over, and keep the live
    accuracy in the metrics current for answers other processes took."""
    while True:
        try:
            purged = await asyncio.to_thread(services.feedback.purge)
            if purged:
                logger.info("feedback: purged %d expired prediction(s)", purged)
            await asyncio.to_thread(services.feedback.refresh_metrics)
        except (OperationalError, OSError) as exc:  # busy database, a file gone: next time
            logger.warning("feedback purge: %s", exc)
        await asyncio.sleep(services.settings.feedback_purge_interval_s)


async def _sync_metrics_forever(metrics: Metrics) -> None:
    """With several API processes, copy this one's head-cache counts and queue depth into the
    shared metrics now and then: a scrape is answered by one process, which reads the others'
    files only."""
    while True:
        metrics.sync()
        await asyncio.sleep(SYNC_INTERVAL_S)


async def _in_daemon_thread(fn):
    """Run ``fn`` in a daemon thread: Ctrl-C during a long first bootstrap (building the
    starter model) exits at once instead of waiting for it; version writes are atomic."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(method, value) -> None:
        if not future.done():
            method(value)

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting coroutine, which decides
            outcome = (future.set_exception, exc)
        else:
            outcome = (future.set_result, result)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop closed meanwhile: the app is shutting down
            pass

    threading.Thread(target=run, name="zscl-bootstrap", daemon=True).start()
    return await future


def _log_failure(what: str, task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s stopped: %s", what, task.exception(), exc_info=task.exception())


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    with background_logging():  # no request waits on the log's reader (service/logs.py)
        async with _serving(app):
            yield


@contextlib.asynccontextmanager
async def _serving(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    settings = services.settings
    tune_process(torch_threads=settings.torch_threads, tune_malloc=settings.tune_malloc)
    services.batcher.start()
    serving = asyncio.create_task(_start_serving(services), name="zscl-serving")
    serving.add_done_callback(functools.partial(_log_failure, "model serving"))
    watch = asyncio.create_task(LoopWatch(services.metrics.loop_lag.observe).run(),
                                name="zscl-loop-watch")
    watch.add_done_callback(functools.partial(_log_failure, "the event-loop watch"))
    tasks = [serving, watch]
    if services.metrics.shared:
        tasks.append(asyncio.create_task(_sync_metrics_forever(services.metrics), name="zscl-metrics"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        # a task that failed has logged why (_log_failure); shutting down goes on regardless
        await asyncio.gather(*tasks, return_exceptions=True)
        await services.batcher.stop()
        if services.holder.tokenizers is not None:
            await asyncio.to_thread(services.holder.tokenizers.close)
        services.engine.dispose()


class _ProcessHeader:
    """Adds ``X-Process-Id``, the id of the API process that answered: with several behind one
    port, a client (and the tests) can see how the requests spread."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_pid(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[PROCESS_HEADER] = str(os.getpid())
            await send(message)

        await self.app(scope, receive, send_with_pid)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app for ``settings`` (default: read from the ``ZSCL_`` environment, as each
    of `zscl serve`'s API processes does: ``uvicorn --factory service.app:create_app``)."""
    settings = settings or Settings()
    services = build_services(settings)
    app = FastAPI(title="zscl-serve", version="1", lifespan=_lifespan,
                  description="CLIP zero-shot image classification that keeps learning (ZSCL).")
    app.state.services = services
    app.add_middleware(ServiceMiddleware, holder=services.holder, metrics=services.metrics,
                       max_body_bytes=settings.max_upload_bytes, uncapped=UNCAPPED_ROUTES,
                       body_timeout=BodyTimeout(settings.http_body_timeout_s,
                                                settings.http_body_min_rate))
    app.add_middleware(_ProcessHeader)
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(api_router)
    return app
