"""The schema under migrations (records.migrations): a database from before migrations keeps its
rows, an upgraded empty database matches records.tables, a newer database is refused, upgrades
from several processes at once all succeed, and `zscl db` drives it. On SQLite, and on the
PostgreSQL server at ZSCL_TEST_POSTGRES_URL (default the local one, trust auth) where one
answers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from records import db, jobs, registry
from records.errors import SchemaMismatch
from records.migrations import BASELINE, head_revision, runner
from records.settings import Settings
from records.tables import Base
from tests.helpers.postgres import fresh_database
from zscl_cli import main as cli

REPO = Path(__file__).resolve().parents[2]

# What SQLAlchemy's create_all emitted for records/tables.py at 562c6fa, the last schema made
# without migrations (CreateTable / CreateIndex compiled for each dialect), kept literal so that
# this test needs neither git nor that commit's code.
LEGACY_DDL = {"sqlite": """
CREATE TABLE datasets (
	id VARCHAR(64) NOT NULL, name VARCHAR(128) NOT NULL, sha256 VARCHAR(64) NOT NULL,
	path VARCHAR(1024) NOT NULL, classnames JSON NOT NULL, n_train INTEGER NOT NULL,
	n_test INTEGER NOT NULL, split VARCHAR(16) NOT NULL, is_suite BOOLEAN NOT NULL,
	created_at DATETIME NOT NULL, PRIMARY KEY (id)
);
CREATE TABLE label_sets (
	name VARCHAR(128) NOT NULL, classnames JSON NOT NULL, templates JSON, source VARCHAR(256),
	updated_at DATETIME NOT NULL, PRIMARY KEY (name)
);
CREATE TABLE model_versions (
	id VARCHAR(128) NOT NULL, parent VARCHAR(128), created_at DATETIME NOT NULL,
	path VARCHAR(1024) NOT NULL, source VARCHAR(256), method VARCHAR(64), metrics JSON NOT NULL,
	report JSON NOT NULL, PRIMARY KEY (id)
);
CREATE TABLE jobs (
	id VARCHAR(64) NOT NULL, idempotency_key VARCHAR(128), dataset_id VARCHAR(64) NOT NULL,
	method VARCHAR(32) NOT NULL, hparams JSON NOT NULL, gate JSON NOT NULL,
	state VARCHAR(16) NOT NULL, step INTEGER NOT NULL, total_steps INTEGER NOT NULL,
	losses JSON NOT NULL, eta_s FLOAT, metrics JSON NOT NULL, report JSON NOT NULL, error JSON,
	base_version VARCHAR(128), candidate_version VARCHAR(128), cancel_requested BOOLEAN NOT NULL,
	created_at DATETIME NOT NULL, started_at DATETIME, finished_at DATETIME, heartbeat_at DATETIME,
	PRIMARY KEY (id), UNIQUE (idempotency_key), FOREIGN KEY(dataset_id) REFERENCES datasets (id)
);
CREATE TABLE serving_pointer (
	id INTEGER NOT NULL, version_id VARCHAR(128) NOT NULL, generation INTEGER NOT NULL,
	updated_at DATETIME NOT NULL, PRIMARY KEY (id),
	FOREIGN KEY(version_id) REFERENCES model_versions (id)
);
CREATE TABLE job_events (
	id INTEGER NOT NULL, job_id VARCHAR(64) NOT NULL, at DATETIME NOT NULL, kind VARCHAR(32) NOT NULL,
	data JSON NOT NULL, PRIMARY KEY (id), FOREIGN KEY(job_id) REFERENCES jobs (id)
);
CREATE INDEX ix_job_events_job_id ON job_events (job_id);
""", "postgresql": """
CREATE TABLE model_versions (
	id VARCHAR(128) NOT NULL, parent VARCHAR(128), created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	path VARCHAR(1024) NOT NULL, source VARCHAR(256), method VARCHAR(64), metrics JSON NOT NULL,
	report JSON NOT NULL, PRIMARY KEY (id)
);
CREATE TABLE label_sets (
	name VARCHAR(128) NOT NULL, classnames JSON NOT NULL, templates JSON, source VARCHAR(256),
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, PRIMARY KEY (name)
);
CREATE TABLE datasets (
	id VARCHAR(64) NOT NULL, name VARCHAR(128) NOT NULL, sha256 VARCHAR(64) NOT NULL,
	path VARCHAR(1024) NOT NULL, classnames JSON NOT NULL, n_train INTEGER NOT NULL,
	n_test INTEGER NOT NULL, split VARCHAR(16) NOT NULL, is_suite BOOLEAN NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, PRIMARY KEY (id)
);
CREATE TABLE serving_pointer (
	id INTEGER NOT NULL, version_id VARCHAR(128) NOT NULL, generation INTEGER NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, PRIMARY KEY (id),
	FOREIGN KEY(version_id) REFERENCES model_versions (id)
);
CREATE TABLE jobs (
	id VARCHAR(64) NOT NULL, idempotency_key VARCHAR(128), dataset_id VARCHAR(64) NOT NULL,
	method VARCHAR(32) NOT NULL, hparams JSON NOT NULL, gate JSON NOT NULL,
	state VARCHAR(16) NOT NULL, step INTEGER NOT NULL, total_steps INTEGER NOT NULL,
	losses JSON NOT NULL, eta_s FLOAT, metrics JSON NOT NULL, report JSON NOT NULL, error JSON,
	base_version VARCHAR(128), candidate_version VARCHAR(128), cancel_requested BOOLEAN NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, started_at TIMESTAMP WITH TIME ZONE,
	finished_at TIMESTAMP WITH TIME ZONE, heartbeat_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id), UNIQUE (idempotency_key), FOREIGN KEY(dataset_id) REFERENCES datasets (id)
);
CREATE TABLE job_events (
	id SERIAL NOT NULL, job_id VARCHAR(64) NOT NULL, at TIMESTAMP WITH TIME ZONE NOT NULL,
	kind VARCHAR(32) NOT NULL, data JSON NOT NULL, PRIMARY KEY (id),
	FOREIGN KEY(job_id) REFERENCES jobs (id)
);
CREATE INDEX ix_job_events_job_id ON job_events (job_id);
"""}
LEGACY_TABLES = ("job_events", "jobs", "serving_pointer", "datasets", "label_sets", "model_versions")

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
# a row in every table, in foreign-key order; every column of the 562c6fa schema is set
ROWS = {
    "model_versions": [
        {"id": "v1", "parent": None, "created_at": T0, "path": "/var/versions/v1",
         "source": "starter", "method": None, "metrics": {"acc": 0.5}, "report": {}},
        {"id": "v2", "parent": "v1", "created_at": T0, "path": "/var/versions/v2", "source": None,
         "method": "zscl", "metrics": {"acc": 0.75, "per_task": [0.5, 1.0]}, "report": {"gate": "ok"}}],
    "label_sets": [{"name": "pets", "classnames": ["cat", "dog"], "templates": ["a photo of a {}."],
                    "source": "test", "updated_at": T0}],
    "serving_pointer": [{"id": 1, "version_id": "v2", "generation": 3, "updated_at": T0}],
    "datasets": [{"id": "d1", "name": "pets", "sha256": "a" * 64, "path": "/var/datasets/d1",
                  "classnames": ["cat", "dog"], "n_train": 8, "n_test": 2, "split": "auto",
                  "is_suite": False, "created_at": T0}],
    "jobs": [{"id": "j1", "idempotency_key": "k1", "dataset_id": "d1", "method": "zscl",
              "hparams": {"steps": 3}, "gate": {"max_drop": 0.02}, "state": "succeeded", "step": 3,
              "total_steps": 3, "losses": {"ce": 0.25}, "eta_s": 1.5, "metrics": {"acc": 0.75},
              "report": {"promoted": True}, "error": None, "base_version": "v1",
              "candidate_version": "v2", "cancel_requested": False, "created_at": T0,
              "started_at": T0, "finished_at": T0, "heartbeat_at": T0}],
    "job_events": [{"id": 1, "job_id": "j1", "at": T0, "kind": "state", "data": {"state": "queued"}},
                   {"id": 2, "job_id": "j1", "at": T0, "kind": "state", "data": {"state": "succeeded"}}],
}


# -- databases ---------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """An empty database: a SQLite file, or a fresh PostgreSQL database (dropped at the end)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'zscl.sqlite'}"
        return
    with fresh_database() as url:
        yield url


@pytest.fixture()
def engine(database_url):
    engine = db.make_engine(database_url)
    yield engine
    engine.dispose()


def create_legacy_schema(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        for statement in LEGACY_DDL[engine.dialect.name].split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)


def _typed(name: str, columns) -> sa.TableClause:
    """A bare table of these columns, typed as records.tables types them (JSON, datetimes)."""
    full = Base.metadata.tables[name]
    return sa.table(name, *(sa.column(c, full.c[c].type) for c in columns))


def insert_rows(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        for name, rows in ROWS.items():
            conn.execute(sa.insert(_typed(name, rows[0])), rows)


def snapshot(engine: sa.Engine) -> dict[str, list[tuple]]:
    """Every row of ROWS's tables, their 562c6fa columns only, in primary-key order."""
    with engine.connect() as conn:
        out = {}
        for name, rows in ROWS.items():
            table = _typed(name, rows[0])
            out[name] = [tuple(r) for r in conn.execute(sa.select(table).order_by(*table.c[:1]))]
        return out


def revision_in(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())


def schema_of(engine: sa.Engine) -> list[tuple]:
    """The DDL as the database holds it (alembic_version aside), for an exact comparison."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT "
                                        "NULL AND name <> 'alembic_version' ORDER BY name")
            return [(kind, name, " ".join(sql.split())) for kind, name, sql in rows]
        queries = (
            ("SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, "
             "column_default FROM information_schema.columns WHERE table_schema = 'public' "
             "AND table_name <> 'alembic_version'"),
            ("SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
             "WHERE connamespace = 'public'::regnamespace "
             "AND conrelid::regclass::text <> 'alembic_version'"),
            ("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
             "AND tablename <> 'alembic_version'"))
        return sorted(tuple(map(str, row)) for q in queries for row in conn.execute(sa.text(q)))


# -- the baseline and a database from before migrations ----------------------------------------

def test_the_baseline_creates_exactly_the_schema_of_562c6fa(engine):
    create_legacy_schema(engine)
    legacy = schema_of(engine)
    with engine.begin() as conn:
        for name in LEGACY_TABLES:
            conn.execute(sa.text(f"DROP TABLE {name}"))
    with engine.begin() as conn:
        command.upgrade(runner.alembic_config(conn), BASELINE)
    assert schema_of(engine) == legacy
    assert len(legacy) > 6


def test_a_database_from_before_migrations_keeps_every_row(engine):
    create_legacy_schema(engine)
    insert_rows(engine)
    before = snapshot(engine)
    assert db.check_schema(engine) == db.SchemaState(None, head_revision(), legacy=True)

    found = db.upgrade(engine)

    assert (found.current, found.legacy) == (None, True)
    assert revision_in(engine) == [head_revision()]
    assert snapshot(engine) == before
    assert {name: len(rows) for name, rows in before.items()} == {n: len(r) for n, r in ROWS.items()}
    sessions = db.make_session_factory(engine)
    with sessions() as session:  # and the code reads them as before
        assert registry.get_serving(session) == ("v2", 3)
        events = jobs.list_events(session, "j1")
        assert [e.data["state"] for e in events] == ["queued", "succeeded"]
    assert db.upgrade(engine).up_to_date  # a second start has nothing to do


def test_tables_from_before_migrations_that_differ_from_the_baseline_are_refused(engine):
    create_legacy_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE job_events"))
        conn.execute(sa.text("ALTER TABLE jobs ADD COLUMN priority INTEGER"))
    with pytest.raises(SchemaMismatch, match="no schema revision.*differ from the baseline "
                       "0001_baseline: missing table job_events;.* unexpected column jobs.priority"):
        db.upgrade(engine)
    assert "alembic_version" not in sa.inspect(engine).get_table_names()  # untouched


# -- records.tables and the migrations agree ---------------------------------------------------

def test_an_upgraded_empty_database_matches_records_tables(engine):
    """Fails when records/tables.py changes without a migration: add versions/000N_x.py (see
    records/migrations/__init__.py), e.g. with `zscl db revision`."""
    found = db.upgrade(engine)
    assert (found.current, found.legacy) == (None, False)
    assert revision_in(engine) == [head_revision()]
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


# -- a database newer than the code ------------------------------------------------------------

def _from_the_future(engine: sa.Engine) -> None:
    db.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))


def test_a_database_at_an_unknown_revision_is_refused(engine, tmp_path):
    from service.bootstrap import bootstrap

    _from_the_future(engine)
    hint = "9999_from_the_future, which this code does not know.*ZSCL_DATABASE_URL"
    with pytest.raises(SchemaMismatch, match=hint):
        db.check_schema(engine)
    with pytest.raises(SchemaMismatch, match=hint):
        db.upgrade(engine)
    settings = Settings(data_dir=tmp_path / "var", database_url=str(engine.url))
    with pytest.raises(SchemaMismatch, match=hint):  # start-up refuses before it serves anything
        bootstrap(settings, engine)
    assert revision_in(engine) == ["9999_from_the_future"]
    assert registry.get_serving(db.make_session_factory(engine)()) == (None, 0)


# -- several processes at once -----------------------------------------------------------------

# each child connects, says "ready", waits for the word to start, upgrades and prints the outcome
UPGRADER = """
import json, sys
from records import db
engine = db.make_engine(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
try:
    print(json.dumps({"ok": True, "current": db.upgrade(engine).current}), flush=True)
except Exception as exc:
    print(json.dumps({"ok": False, "error": repr(exc)}), flush=True)
"""


def test_processes_upgrading_one_fresh_database_at_once_all_succeed(database_url):
    processes = [subprocess.Popen([sys.executable, "-c", UPGRADER, database_url], cwd=REPO,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                 for _ in range(4)]
    try:
        assert [p.stdout.readline().strip() for p in processes] == ["ready"] * len(processes)
        for p in processes:  # as close together as a parent can make it
            p.stdin.write("go\n")
            p.stdin.flush()
        outcomes = [json.loads(p.communicate(timeout=120)[0]) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(o["ok"] for o in outcomes), outcomes
    # each found the database empty or already done, and someone did the work
    assert None in [o["current"] for o in outcomes]
    assert {o["current"] for o in outcomes} <= {None, head_revision()}
    engine = db.make_engine(database_url)
    try:
        assert revision_in(engine) == [head_revision()]
        assert set(Base.metadata.tables) <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


# -- zscl db -----------------------------------------------------------------------------------

def test_zscl_db_upgrade_and_current(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    monkeypatch.setenv("ZSCL_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ZSCL_DATABASE_URL", url)
    head = head_revision()

    assert cli.main(["db", "current", "--check"]) == 1
    assert f"empty (behind: `zscl db upgrade` brings it to {head})" in capsys.readouterr().out
    assert cli.main(["db", "upgrade"]) == 0
    assert f"upgraded from empty to {head}" in capsys.readouterr().out
    assert cli.main(["db", "current", "--check"]) == 0
    assert f"{head} (up to date)" in capsys.readouterr().out
    assert cli.main(["db", "upgrade"]) == 0
    assert f"already at {head} (nothing to do)" in capsys.readouterr().out

    engine = db.make_engine(url)
    _from_the_future(engine)
    engine.dispose()
    with pytest.raises(SystemExit, match="which this code does not know"):
        cli.main(["db", "current"])
    with pytest.raises(SystemExit, match="which this code does not know"):
        cli.main(["db", "upgrade"])


def test_zscl_db_upgrade_stamps_a_database_from_before_migrations(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'legacy.sqlite'}"
    monkeypatch.setenv("ZSCL_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ZSCL_DATABASE_URL", url)
    engine = db.make_engine(url)
    create_legacy_schema(engine)
    assert cli.main(["db", "current"]) == 0
    assert "no revision, tables from before migrations" in capsys.readouterr().out
    assert cli.main(["db", "upgrade"]) == 0
    assert f"upgraded from pre-migration tables to {head_revision()}" in capsys.readouterr().out
    assert revision_in(engine) == [head_revision()]
    engine.dispose()


def test_zscl_db_revision_writes_a_migration_that_brings_the_schema_to_records_tables(
        tmp_path, monkeypatch, capsys):
    """On a copy of the migrations: the written file follows the head, and an empty database
    upgraded through it matches records.tables (today the migration is empty)."""
    scripts = tmp_path / "migrations"
    shutil.copytree(runner.SCRIPT_LOCATION, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runner, "SCRIPT_LOCATION", scripts)
    previous = head_revision()
    with pytest.raises(SystemExit, match="must look like 0002_feedback"):
        cli.main(["db", "revision", "bad id", "--id", "Feedback"])

    assert cli.main(["db", "revision", "probe", "--id", "0099_probe"]) == 0
    written = scripts / "versions" / "0099_probe.py"
    assert f"wrote {written}" in capsys.readouterr().out
    assert f"down_revision = {previous!r}" in written.read_text()
    assert head_revision() == "0099_probe"
    engine = db.make_engine(f"sqlite:///{tmp_path / 'probe.sqlite'}")
    try:
        db.upgrade(engine)
        assert revision_in(engine) == ["0099_probe"]
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
