"""A fresh PostgreSQL database for a test (distributed mode's records), dropped afterwards.

The server is ZSCL_TEST_POSTGRES_URL's (default: the local one, trust auth); a test that asks
for one is skipped where no server answers."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

ADMIN_URL = os.environ.get("ZSCL_TEST_POSTGRES_URL",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database; dropped (connections and all) when the block ends."""
    pytest.importorskip("psycopg")
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"zscl_test_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - no server here: nothing to test against
        admin.dispose()
        pytest.skip(f"no PostgreSQL at {ADMIN_URL}: {exc}")
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
