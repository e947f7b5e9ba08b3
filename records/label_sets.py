"""Label sets: named class names + templates (used by name in classify; tasks register theirs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import NotFound
from .tables import LabelSet

__all__ = ["UNSET", "LabelSetUpdate", "put_label_set", "stage_label_set", "get_label_set",
           "delete_label_set", "list_label_sets"]


class Unset:
    """The type of :data:`UNSET`: "not given", where None is a value."""


UNSET = Unset()


def put_label_set(session: Session, name: str, classnames: Sequence[str],
                  templates: Sequence[str] | None = None, source: str | None = None, *,
                  keep_images: bool | None = None,
                  auto_update: dict[str, Any] | None | Unset = UNSET) -> LabelSet:
    """Create or replace the label set ``name``.

    ``keep_images`` (classify keeps this set's images for feedback by default) and
    ``auto_update`` (the feedback policy, ``records.feedback.AutoUpdatePolicy`` as a dict, or
    None for none) are left as stored when not given.
    """
    row = stage_label_set(session, LabelSetUpdate(name, list(classnames), templates, source))
    if keep_images is not None:
        row.keep_images = keep_images
    if not isinstance(auto_update, Unset):
        row.auto_update = auto_update
    session.commit()
    return row


@dataclass(frozen=True)
class LabelSetUpdate:
    """The class names, templates and source to write under a label set's name (what a promoted
    job registers for its task, ``records.registry.promote``)."""

    name: str
    classnames: Sequence[str]
    templates: Sequence[str] | None = None
    source: str | None = None


def stage_label_set(session: Session, update: LabelSetUpdate) -> LabelSet:
    """Create or replace the label set ``update.name``, uncommitted (its feedback settings are
    kept): for a caller that commits it with other writes in one transaction."""
    row = session.get(LabelSet, update.name)
    if row is None:
        row = LabelSet(name=update.name, keep_images=False, auto_update=None)
        session.add(row)
    row.classnames = list(update.classnames)
    row.templates = list(update.templates) if update.templates else None
    row.source = update.source
    return row


def get_label_set(session: Session, name: str) -> LabelSet:
    """The label set ``name``; NotFound if there is none."""
    row = session.get(LabelSet, name)
    if row is None:
        raise NotFound.of("label set", name)
    return row


def delete_label_set(session: Session, name: str) -> None:
    """Delete the label set ``name``; NotFound if there is none."""
    session.delete(get_label_set(session, name))
    session.commit()


def list_label_sets(session: Session) -> list[LabelSet]:
    """Every label set, by name."""
    return list(session.scalars(select(LabelSet).order_by(LabelSet.name)))
