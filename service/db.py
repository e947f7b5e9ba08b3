"""Database: the declarative ``Base``, the engine/session factory, and the registry tables.

Importing this module has no side effects (no engine, no files): other modules add their own
tables to :class:`Base` and call :func:`create_all` at startup.
SQLite gets WAL and a busy timeout so that the API and a worker process can share the file;
any other SQLAlchemy URL (PostgreSQL) is used as is.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, ForeignKey, Integer, String, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

__all__ = ["Base", "ModelVersion", "LabelSet", "ServingPointer", "make_engine", "make_session_factory",
           "create_all", "utcnow"]

SQLITE_BUSY_TIMEOUT_MS = 10_000


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


class ModelVersion(Base):
    """A saved version directory known to the registry (weights live on disk, not here)."""

    __tablename__ = "model_versions"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    parent: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    path: Mapped[str] = mapped_column(String(1024))
    source: Mapped[str | None] = mapped_column(String(256), nullable=True)
    method: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class LabelSet(Base):
    """Named class names + prompt templates, used by name in classify requests."""

    __tablename__ = "label_sets"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    classnames: Mapped[list[str]] = mapped_column(JSON)
    templates: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    source: Mapped[str | None] = mapped_column(String(256), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 onupdate=utcnow)


class ServingPointer(Base):
    """The one row saying which version is served; ``generation`` grows on every activation."""

    __tablename__ = "serving_pointer"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    version_id: Mapped[str] = mapped_column(String(128), ForeignKey("model_versions.id"))
    generation: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(database_url: str) -> Engine:
    """An engine for ``database_url``; SQLite files get their folder, WAL and a busy timeout."""
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(database_url, connect_args={"check_same_thread": False,
                                                           "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(database_url, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def create_all(engine: Engine) -> None:
    """Create every table registered on :class:`Base` (idempotent)."""
    from . import jobs_db  # noqa: F401 - registers the job tables on Base

    Base.metadata.create_all(engine)
