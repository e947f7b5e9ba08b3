"""Apply, check and write the schema migrations of this package, on an engine the caller owns.

Alembic is configured here in code (no ``alembic.ini``): the script location is this package,
and the connection travels to ``env.py`` in ``config.attributes``. Several processes may start
at once on one database, so an upgrade first takes a lock that holds until its transaction
commits: ``BEGIN IMMEDIATE`` on SQLite (the write lock; others wait up to the busy timeout),
``pg_advisory_xact_lock`` on PostgreSQL. The revision is read again under the lock, so whoever
comes second finds the work done. DDL is transactional on both, so a failed upgrade leaves the
database as it was.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy.exc import OperationalError

__all__ = ["BASELINE", "SchemaState", "alembic_config", "head_revision", "check_schema", "upgrade",
           "new_revision"]

logger = logging.getLogger(__name__)

SCRIPT_LOCATION = Path(__file__).resolve().parent
BASELINE = "0001_baseline"
PG_LOCK_KEY = 0x7A73_636C_6D69_6772  # "zsclmigr": one advisory lock every zscl process shares
SQLITE_LOCK_ATTEMPTS = 3  # each waits up to the busy timeout for the write lock
REVISION_ID = re.compile(r"^\d{4}_[a-z0-9_]+$")
MAX_REVISION_ID = 32  # alembic_version.version_num is a VARCHAR(32)


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands: ``current`` is its recorded revision (None: empty, or created
    before migrations existed, which ``legacy`` tells); ``head`` is the newest this code knows."""

    current: str | None
    head: str
    legacy: bool = False

    @property
    def up_to_date(self) -> bool:
        """Whether the database is at the newest revision this code knows."""
        return self.current == self.head


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for this package, running on ``connection`` (see ``env.py``)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("file_template", "%%(rev)s")  # versions/0002_feedback.py
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this code knows (``versions/``)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _url(connection: Connection) -> str:
    return connection.engine.url.render_as_string(hide_password=True)


def _read_state(connection: Connection, script: ScriptDirectory) -> SchemaState:
    head = script.get_current_head()
    recorded = MigrationContext.configure(connection).get_current_heads()
    if not recorded:
        baseline = set(script.get_revision(BASELINE).module.TABLES)
        return SchemaState(None, head, legacy=bool(baseline & set(inspect(connection).get_table_names())))
    known = {s.revision for s in script.walk_revisions()}
    unknown = [rev for rev in recorded if rev not in known]
    if unknown or len(recorded) > 1:
        from ..errors import SchemaMismatch  # lazy: it imports zscl_core, hence torch
        raise SchemaMismatch(
            f"the database at {_url(connection)} is at schema revision {', '.join(recorded)}, "
            f"which this code does not know (its newest is {head}): a newer zscl-serve upgraded "
            f"it. Run a zscl-serve at least as new as that one, or point ZSCL_DATABASE_URL at "
            f"another database; this one is left untouched")
    return SchemaState(recorded[0], head)


def check_schema(engine: Engine) -> SchemaState:
    """Where the database stands; raises :class:`SchemaMismatch` when its revision is one this
    code does not know (a newer release wrote it). Reads only."""
    script = ScriptDirectory.from_config(alembic_config())
    with engine.connect() as connection:
        return _read_state(connection, script)


def _legacy_differences(connection: Connection, script: ScriptDirectory) -> list:
    """How a pre-migration database differs from the baseline (tables of other programs aside)."""
    baseline = script.get_revision(BASELINE).module.metadata()
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [diff for diff in compare_metadata(context, baseline)
            if not (isinstance(diff, tuple) and diff[0] == "remove_table"
                    and diff[1].name not in baseline.tables)]


def _describe(diff) -> str:
    """One of autogenerate's differences in words: "missing table jobs", "unexpected column x.y"."""
    if isinstance(diff, list):  # changes to one column: [("modify_type", schema, table, column, ...)]
        return ", ".join(f"{change[0]} {change[2]}.{change[3]}" for change in diff)
    kind, target = diff[0], diff[-1]
    kind = kind.replace("add_", "missing ").replace("remove_", "unexpected ").replace("_", " ")
    name = getattr(target, "name", None) or type(target).__name__
    table = getattr(getattr(target, "table", None), "name", None)
    return f"{kind} {table}.{name}" if table else f"{kind} {name}"


def _stamp_legacy(connection: Connection, script: ScriptDirectory) -> None:
    differences = [_describe(diff) for diff in _legacy_differences(connection, script)]
    if differences:
        from ..errors import SchemaMismatch  # lazy: it imports zscl_core, hence torch
        raise SchemaMismatch(
            f"the database at {_url(connection)} has zscl tables but no schema revision (no "
            f"alembic_version table), and they differ from the baseline {BASELINE}: "
            f"{'; '.join(differences)}. Point ZSCL_DATABASE_URL at another database, or make the tables "
            f"match and run `zscl db upgrade` again")
    logger.info("database created before migrations; its tables match %s: stamping it", BASELINE)
    command.stamp(alembic_config(connection), BASELINE)


@contextlib.contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the migration lock until it commits."""
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        else:
            connection.begin()
        yield connection
        connection.commit()


def _upgrade_locked(engine: Engine, script: ScriptDirectory) -> SchemaState:
    with _locked(engine) as connection:
        state = _read_state(connection, script)
        if state.legacy:
            _stamp_legacy(connection, script)
        if not state.up_to_date:
            logger.info("upgrading the database schema: %s -> %s", state.current or "(empty)",
                        state.head)
            command.upgrade(alembic_config(connection), "head")
        return state


def upgrade(engine: Engine) -> SchemaState:
    """Apply every pending migration; the state found before (``current`` -> ``head``).

    An empty database gets every table; one created before migrations existed is checked
    against the baseline and stamped at it first. Safe to run from several processes at once.
    Raises :class:`SchemaMismatch` for a database this code does not know (see module doc).
    """
    script = ScriptDirectory.from_config(alembic_config())
    found = check_schema(engine)  # without the lock: the common case, nothing to do
    if found.up_to_date:
        return found
    for attempt in range(1, SQLITE_LOCK_ATTEMPTS):
        try:
            return _upgrade_locked(engine, script)
        except OperationalError as exc:  # another process held SQLite's write lock too long
            if engine.dialect.name != "sqlite" or "locked" not in str(exc):
                raise
            logger.info("database locked by another process; retrying the upgrade (%s)", exc)
            time.sleep(0.5 * attempt)
    return _upgrade_locked(engine, script)


def new_revision(message: str, rev_id: str) -> Path:
    """Write ``versions/<rev_id>.py``, autogenerated from the difference between
    :mod:`records.tables` and the current head (on a scratch SQLite database); review it.

    Args:
        message: what the migration does, e.g. "feedback tables".
        rev_id: the next number and a slug, e.g. ``0002_feedback`` (at most 32 characters).
    """
    if not REVISION_ID.match(rev_id) or len(rev_id) > MAX_REVISION_ID:
        raise ValueError(f"revision id {rev_id!r} must look like 0002_feedback: four digits, an "
                         f"underscore, lowercase words; at most {MAX_REVISION_ID} characters")
    with tempfile.TemporaryDirectory(prefix="zscl-revision-") as scratch:
        engine = create_engine(f"sqlite:///{scratch}/head.sqlite")
        try:
            upgrade(engine)
            with engine.begin() as connection:
                written = command.revision(alembic_config(connection), message=message,
                                           autogenerate=True, rev_id=rev_id)
        finally:
            engine.dispose()
    return Path(written.path)
