"""Label sets: named class names + templates (used by name in classify; tasks register theirs)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import NotFound
from .tables import LabelSet

__all__ = ["put_label_set", "get_label_set", "delete_label_set", "list_label_sets"]


def put_label_set(session: Session, name: str, classnames: Sequence[str],
                  templates: Sequence[str] | None = None, source: str | None = None) -> LabelSet:
    """Create or replace the label set ``name``."""
    row = session.get(LabelSet, name)
    if row is None:
        row = LabelSet(name=name)
        session.add(row)
    row.classnames, row.templates, row.source = list(classnames), (list(templates) if templates else None), source
    session.commit()
    return row


def get_label_set(session: Session, name: str) -> LabelSet:
    row = session.get(LabelSet, name)
    if row is None:
        raise NotFound(f"label set '{name}' does not exist; create it with PUT /v1/label-sets/{name}")
    return row


def delete_label_set(session: Session, name: str) -> None:
    session.delete(get_label_set(session, name))
    session.commit()


def list_label_sets(session: Session) -> list[LabelSet]:
    return list(session.scalars(select(LabelSet).order_by(LabelSet.name)))
