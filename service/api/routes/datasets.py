"""Datasets: ``POST /v1/datasets`` (an archive as the request body), list, get, delete, suite flag."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from records import datasets
from records.errors import PayloadTooLarge
from records.ingest import upload_spool

from ...job_schemas import DatasetOut, SuiteIn
from .. import API_V1
from ..deps import READ_ACCESS, ServicesDep, SessionDep, require_admin

router = APIRouter(prefix=f"{API_V1}/datasets", tags=["datasets"])

#: (method, path) of the routes exempt from the request-body cap: the upload streams to disk
#: under its own cap (ZSCL_MAX_DATASET_BYTES) and the ingestion budgets
UNCAPPED = frozenset({("POST", f"{API_V1}/datasets")})

DatasetId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]

_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "description": "the archive itself (zip, tar, tar.gz) as the body, e.g. "
                       "`curl --data-binary @pets.zip -H 'Content-Type: application/zip'`",
        "content": {t: {"schema": {"type": "string", "format": "binary"}}
                    for t in ("application/zip", "application/x-tar", "application/gzip")},
    }
}


@router.post("", status_code=201, response_model=DatasetOut, dependencies=[Depends(require_admin)],
             summary="Upload a labelled dataset", openapi_extra=_UPLOAD_DOC,
             responses={200: {"description": "the same content was uploaded before"},
                        413: {"description": "over a byte, file-count or compression cap"},
                        422: {"description": "not a valid dataset (the message names the problem)"}})
async def upload(request: Request, services: ServicesDep,
                 name: Annotated[str, Query(min_length=1, max_length=128,
                                            pattern=r"^[A-Za-z0-9_.:-]+$")],
                 suite: bool = False,
                 test_fraction: Annotated[float, Query(gt=0, lt=1)] = 0.2,
                 seed: Annotated[int, Query(ge=0)] = 0):
    """Store an archive of labelled class folders as a dataset to train on or evaluate with."""
    settings = services.settings
    limit = settings.max_dataset_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"the archive is {int(length)} bytes; the limit is {limit} "
                              f"(ZSCL_MAX_DATASET_BYTES)")
    # the spool is locked while it exists: start-up removes only the spools of dead processes
    async with _spool(settings.datasets_dir) as (spool, fh):
        await _spool_body(request, fh, limit)
        row, created = await run_in_threadpool(
            datasets.add_dataset, services.sessions, settings, spool, name=name, suite=suite,
            content_type=request.headers.get("content-type"), test_fraction=test_fraction,
            seed=seed)
    body = datasets.dataset_out(row)
    return JSONResponse(DatasetOut(**body).model_dump(mode="json"), status_code=201 if created else 200)


# The spool's disk work runs on worker threads, never on the event loop: a write or an unlink
# that the disk makes wait (the kernel throttles a writer while too much waits to go to disk)
# would stall every other request meanwhile.

@contextlib.asynccontextmanager
async def _spool(store_root: pathlib.Path) -> AsyncIterator[tuple[pathlib.Path, BinaryIO]]:
    """:func:`records.ingest.upload_spool`, created, locked and removed on a worker thread."""
    spool = upload_spool(store_root)
    opened = await run_in_threadpool(spool.__enter__)
    try:
        yield opened
    finally:
        await run_in_threadpool(spool.__exit__, None, None, None)


async def _spool_body(request: Request, fh: BinaryIO, limit: int) -> None:
    """Write the request body to ``fh`` as it comes, each piece on a worker thread; refuse it
    past ``limit`` bytes."""
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"the archive is larger than the limit of {limit} bytes "
                                  f"(ZSCL_MAX_DATASET_BYTES)")
        await run_in_threadpool(fh.write, chunk)
    await run_in_threadpool(fh.flush)


@router.get("", dependencies=READ_ACCESS, response_model=list[DatasetOut], summary="Every dataset")
def list_all(session: SessionDep) -> list[DatasetOut]:
    """List the stored datasets with their classes and split sizes, to pick one for a job."""
    return [DatasetOut(**datasets.dataset_out(row)) for row in datasets.list_datasets(session)]


@router.get("/{dataset_id}", dependencies=READ_ACCESS,
            response_model=DatasetOut, summary="One dataset")
def get_one(dataset_id: DatasetId, session: SessionDep) -> DatasetOut:
    """Show one dataset: its classes, split sizes, and whether gates evaluate on it."""
    return DatasetOut(**datasets.dataset_out(datasets.get_dataset(session, dataset_id)))


@router.put("/{dataset_id}/suite", response_model=DatasetOut, dependencies=[Depends(require_admin)],
            summary="Register (or unregister) a dataset as a zero-shot evaluation suite")
def set_suite(dataset_id: DatasetId, body: SuiteIn, session: SessionDep) -> DatasetOut:
    """Mark a dataset as a suite that every gate checks for forgetting, or unmark it."""
    return DatasetOut(**datasets.dataset_out(datasets.set_suite(session, dataset_id, body.suite)))


@router.delete("/{dataset_id}", status_code=204, dependencies=[Depends(require_admin)],
               summary="Delete a dataset no job uses")
def delete_one(dataset_id: DatasetId, session: SessionDep, services: ServicesDep) -> None:
    """Delete a dataset and its images, once no job refers to it."""
    datasets.delete(session, services.settings, dataset_id)
