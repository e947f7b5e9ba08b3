"""Liveness, readiness (503 until a model is loaded and warmed) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from ...schemas import HealthOut
from ..deps import READ_ACCESS, ServicesDep

router = APIRouter(tags=["health"])


@router.get("/livez", response_model=HealthOut, summary="The process is up")
async def livez() -> HealthOut:
    """Answer 200 while the process runs: the liveness probe."""
    return HealthOut(status="ok")


@router.get("/readyz", response_model=HealthOut, summary="A model is loaded, warmed and served",
            responses={503: {"model": HealthOut, "description": "still loading (or failed to load)"}})
async def readyz(services: ServicesDep):
    """Answer 200 once a model serves requests, 503 with Retry-After until then: the readiness probe."""
    served = services.holder.current
    if served is None:
        return JSONResponse(HealthOut(status="loading", detail=services.holder.last_error or services.holder.phase).model_dump(),
                            status_code=503, headers={"Retry-After": "1"})
    return HealthOut(status="ready", model_version=served.version)


@router.get("/metrics", dependencies=READ_ACCESS, response_class=Response,
            summary="Prometheus metrics, of every API process of the server")
async def metrics(services: ServicesDep) -> Response:
    """Prometheus text for a scraper: requests, latency, batches, swaps, head cache, feedback."""
    # on a worker thread: with several API processes it reads every process's metric files
    return Response(await run_in_threadpool(services.metrics.render), media_type=CONTENT_TYPE_LATEST)
