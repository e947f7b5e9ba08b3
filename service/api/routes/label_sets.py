"""Label sets: ``PUT/GET/DELETE /v1/label-sets/{name}`` (changes need the admin key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from records import label_sets

from ...classify import check_label_set
from ...feedback import checked_policy
from ...schemas import LabelSetIn, LabelSetOut
from .. import API_V1
from ..deps import READ_ACCESS, ServicesDep, SessionDep, require_admin

router = APIRouter(prefix=f"{API_V1}/label-sets", tags=["label sets"])

Name = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


def _out(row) -> LabelSetOut:
    return LabelSetOut(name=row.name, classnames=row.classnames, templates=row.templates,
                       source=row.source, updated_at=row.updated_at,
                       keep_images=bool(row.keep_images), auto_update=row.auto_update)


@router.get("", dependencies=READ_ACCESS,
            response_model=list[LabelSetOut], summary="Every label set")
def list_all(session: SessionDep) -> list[LabelSetOut]:
    """List the stored label sets, which classify requests can name instead of listing labels."""
    return [_out(row) for row in label_sets.list_label_sets(session)]


@router.get("/{name}", dependencies=READ_ACCESS,
            response_model=LabelSetOut, summary="One label set")
def get_one(name: Name, session: SessionDep) -> LabelSetOut:
    """Show one label set: its labels, templates and feedback settings."""
    return _out(label_sets.get_label_set(session, name))


@router.put("/{name}", response_model=LabelSetOut, dependencies=[Depends(require_admin)],
            summary="Create or replace a label set",
            description="Refused (422) unless classify would accept the labels and templates: "
                        "a stored set is always usable. The served model's head for the set is "
                        "built before it is stored, so its first classify finds it cached. "
                        "`keep_images` and `auto_update` turn on the feedback loop "
                        "(docs/updates.md).")
def put_one(name: Name, body: LabelSetIn, session: SessionDep, services: ServicesDep) -> LabelSetOut:
    """Store a named list of labels (and templates) that classify requests can then name."""
    classnames, templates = check_label_set(body.classnames, body.templates,
                                            services.classifier.limits)
    policy = (checked_policy(body.auto_update.model_dump())
              if body.auto_update is not None else None)
    services.holder.warm_head(classnames, templates)  # fails before anything is stored
    return _out(label_sets.put_label_set(session, name, classnames, templates, body.source,
                                         keep_images=body.keep_images, auto_update=policy))


@router.delete("/{name}", status_code=204, dependencies=[Depends(require_admin)],
               summary="Delete a label set")
def delete_one(name: Name, session: SessionDep) -> None:
    """Delete a label set, so that classify no longer accepts its name."""
    label_sets.delete_label_set(session, name)
