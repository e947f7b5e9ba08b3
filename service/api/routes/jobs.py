"""Update jobs: create (202), list, get, events (paginated and as server-sent events), cancel."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from starlette.responses import JSONResponse

from records import jobs
from records.tables import TERMINAL_STATES

from ...job_schemas import JobEventOut, JobEventsOut, JobIn, JobOut
from ...updates import submit_job
from .. import API_V1
from ..deps import READ_ACCESS, ServicesDep, SessionDep, require_admin

router = APIRouter(prefix=f"{API_V1}/jobs", tags=["jobs"])

JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]
#: a row offset or an event id: SQL's 64-bit integers (SQLite overflows past them)
RowIndex = Annotated[int, Query(ge=0, le=2**63 - 1)]


@router.post("", status_code=202, response_model=JobOut, dependencies=[Depends(require_admin)],
             summary="Start an update on a dataset",
             responses={200: {"description": "a job with this idempotency key exists"}})
def create(body: JobIn, services: ServicesDep,
           idempotency_key: Annotated[str | None, Header(max_length=128)] = None):
    """Queue an update of the served model on a dataset; its gate decides whether the result is served."""
    job, created = submit_job(services.sessions, services.settings, services.celery, body,
                              idempotency_key=body.idempotency_key or idempotency_key)
    return JSONResponse(JobOut(**jobs.job_summary(job)).model_dump(mode="json"),
                        status_code=202 if created else 200)


@router.get("", dependencies=READ_ACCESS,
            response_model=list[JobOut], summary="Jobs, newest first")
def list_all(session: SessionDep, limit: Annotated[int, Query(ge=1, le=500)] = 50,
             offset: RowIndex = 0) -> list[JobOut]:
    """List recent update jobs with their state and progress."""
    return [JobOut(**jobs.job_summary(j)) for j in jobs.list_jobs(session, limit=limit, offset=offset)]


@router.get("/{job_id}", dependencies=READ_ACCESS,
            response_model=JobOut, summary="One job: state, progress, losses, ETA, report")
def get_one(job_id: JobId, session: SessionDep) -> JobOut:
    """Show one update job, with the gate's report once it has run."""
    return JobOut(**jobs.job_summary(jobs.get_job(session, job_id)))


@router.get("/{job_id}/events", dependencies=READ_ACCESS,
            response_model=JobEventsOut, summary="A job's events, oldest first")
def events(job_id: JobId, session: SessionDep, after: RowIndex = 0,
           limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> JobEventsOut:
    """Page through a job's event log (states, progress, gate results) with after=."""
    jobs.get_job(session, job_id)
    rows = jobs.list_events(session, job_id, after=after, limit=limit)
    return JobEventsOut(events=[JobEventOut(id=r.id, at=r.at, kind=r.kind, data=r.data) for r in rows],
                        next_after=rows[-1].id if rows else after)


@router.get("/{job_id}/events/stream", dependencies=READ_ACCESS,
            summary="A job's events as server-sent events",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def stream(job_id: JobId, services: ServicesDep, after: RowIndex = 0,
                 poll_s: Annotated[float, Query(gt=0, le=10)] = 0.5) -> StreamingResponse:
    """Follow a job live: its events as server-sent events, then an end event once it finishes."""
    # Every database read runs on the threadpool of the sync routes, never on the event loop: a
    # read the database makes wait (a busy disk, a lock) would stall every other request. Not
    # asyncio's default executor: its few threads (cores + 4) also load models and decode images.
    def check() -> None:
        with services.sessions() as session:
            jobs.get_job(session, job_id)  # an unknown job is a 404 before the stream starts

    def page(cursor: int):
        with services.sessions() as session:
            rows = jobs.list_events(session, job_id, after=cursor, limit=500)
            state = jobs.get_job(session, job_id).state
            return [(r.id, r.kind, r.data, r.at.isoformat()) for r in rows], state

    await run_in_threadpool(check)

    async def generate():
        cursor = after
        while True:
            rows, state = await run_in_threadpool(page, cursor)
            for event_id, kind, data, at in rows:
                cursor = event_id
                yield f"id: {event_id}\nevent: {kind}\ndata: {json.dumps({**data, 'at': at})}\n\n"
            if state in TERMINAL_STATES and not rows:
                yield f"event: end\ndata: {json.dumps({'state': state})}\n\n"
                return
            await asyncio.sleep(poll_s)

    return StreamingResponse(generate(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


@router.post("/{job_id}/cancel", response_model=JobOut, dependencies=[Depends(require_admin)],
             summary="Cancel a job (a running one stops at its next check)")
def cancel(job_id: JobId, session: SessionDep) -> JobOut:
    """Stop a job: a queued one never runs, a running one stops at its next check."""
    return JobOut(**jobs.job_summary(jobs.request_cancel(session, job_id)))
