"""Database: the engine and session factory, and bringing the schema of :mod:`records.tables` up
to date through the migrations of :mod:`records.migrations`.

Importing this module has no side effects (no engine, no files); :func:`upgrade` runs at startup.
SQLite gets WAL and a busy timeout so that the API and a worker process can share the file;
any other SQLAlchemy URL (PostgreSQL) is used as is.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from .migrations import SchemaState, check_schema, upgrade

__all__ = ["make_engine", "make_session_factory", "upgrade", "check_schema", "SchemaState",
           "create_all", "SQLITE_BUSY_TIMEOUT_MS"]

SQLITE_BUSY_TIMEOUT_MS = 10_000


def _switch_to_wal(cursor: sqlite3.Cursor) -> None:
    """``PRAGMA journal_mode=WAL``, retried while the file is locked.

    Why: on a new file, the first connections of several processes (``zscl serve`` starts its
    API and its worker at once; several upgraders at once) race to switch it to WAL, which
    needs the file to itself. SQLite answers a loser "database is locked" at once, without
    waiting out the busy timeout (waiting could deadlock), and the process failed to start. It
    is retried here, for as long as the busy timeout would have waited.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(2 * pause, 0.2)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    _switch_to_wal(cursor)
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
    """The session factory of a process, over ``engine`` (objects stay readable after commit)."""
    return sessionmaker(engine, expire_on_commit=False)


def create_all(engine: Engine) -> None:
    """The schema at the newest revision: :func:`upgrade`, under the name the callers from before
    migrations (the worker, benchmarks, tests) use. Idempotent, and safe from several processes."""
    upgrade(engine)
