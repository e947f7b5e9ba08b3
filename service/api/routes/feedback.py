"""Feedback: answer a kept prediction, list and delete answers, build a dataset from them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from starlette.responses import JSONResponse

from records import datasets, feedback

from ...feedback_schemas import (FeedbackIn, FeedbackList, FeedbackOut, FeedbackSent,
                                 FromFeedbackIn, FromFeedbackOut)
from ...job_schemas import JobOut
from .. import API_V1
from ..deps import READ_ACCESS, ServicesDep, SessionDep, require_admin, require_inference

router = APIRouter(prefix=API_V1, tags=["feedback"])

PredictionId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$")]
_MEDIA = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif",
          "bmp": "image/bmp"}


@router.post("/feedback", response_model=FeedbackSent, status_code=201,
             dependencies=[Depends(require_inference)], summary="Answer a kept prediction",
             responses={200: {"description": "the prediction had an answer; it is replaced"}},
             description="The true label of a prediction that kept its image: a confirmation "
                         "when it is the top label, a correction otherwise. When the answer "
                         "completes its label set's auto-update policy, the job it started is "
                         "in `auto_update_job`.")
async def send(body: FeedbackIn, services: ServicesDep):
    """Record the true label of a kept prediction: what feedback datasets and auto-updates learn from."""
    item, created, job = await run_in_threadpool(services.feedback.send, body.prediction_id,
                                                 body.label)
    out = FeedbackSent(**item, auto_update_job=JobOut(**job) if job else None)
    return JSONResponse(out.model_dump(mode="json"), status_code=201 if created else 200)


@router.get("/feedback", response_model=FeedbackList, dependencies=READ_ACCESS,
            summary="Answers, newest first, with counts and live accuracy per version")
def list_all(session: SessionDep, label_set: Annotated[str | None, Query(max_length=128)] = None,
             limit: Annotated[int, Query(ge=1, le=1000)] = 100,
             offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0) -> FeedbackList:
    """List the answers users gave, with per-label counts and each version's live accuracy."""
    rows = feedback.list_feedback(session, label_set=label_set, limit=limit, offset=offset)
    return FeedbackList(summary=feedback.summarise(session, label_set),
                        items=[FeedbackOut(**feedback.feedback_out(f, p)) for f, p in rows])


@router.get("/feedback/{prediction_id}/image", dependencies=READ_ACCESS,
            summary="The kept image of a prediction", response_class=Response,
            responses={200: {"content": {t: {} for t in _MEDIA.values()}}})
def image(prediction_id: PredictionId, session: SessionDep, services: ServicesDep) -> Response:
    """Return the image a prediction kept, to review its answer."""
    row = feedback.get_prediction(session, prediction_id)
    data = services.feedback.store.read(row.image_sha256)
    return Response(data, media_type=_MEDIA.get(row.image_format, "application/octet-stream"),
                    headers={"Cache-Control": "private, max-age=3600"})


@router.delete("/feedback/{prediction_id}", status_code=204,
               dependencies=[Depends(require_inference)],
               summary="Forget a kept prediction: its answer and its image")
def delete_one(prediction_id: PredictionId, session: SessionDep, services: ServicesDep) -> None:
    """Erase a kept prediction's answer and image, so that no dataset is built from them."""
    feedback.delete_feedback(session, services.feedback.store, prediction_id)


@router.post("/datasets/from-feedback", response_model=FromFeedbackOut, status_code=201,
             dependencies=[Depends(require_admin)], tags=["datasets"],
             summary="Build a dataset from a label set's feedback",
             responses={200: {"description": "the same items made this dataset before"},
                        422: {"description": "too few answers (the message says how many)"}},
             description="Every answered image of the label set whose label is one of its "
                         "classes, the latest answer per image, in classes with at least "
                         "`min_per_class` images; ingested like an upload (same checks, seeded "
                         "split). Ready for POST /v1/jobs.")
def from_feedback(body: FromFeedbackIn, services: ServicesDep):
    """Turn a label set's answered images into a dataset an update job can train on."""
    built = services.feedback.make_dataset(body.label_set, min_per_class=body.min_per_class,
                                           test_fraction=body.test_fraction, seed=body.seed)
    out = FromFeedbackOut(**datasets.dataset_out(built.dataset), items=built.items,
                          per_class=built.per_class, skipped_labels=built.skipped_labels,
                          created=built.created)
    return JSONResponse(out.model_dump(mode="json"), status_code=201 if built.created else 200)
