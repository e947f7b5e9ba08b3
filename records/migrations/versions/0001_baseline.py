"""Baseline: the schema as it stood when migrations were introduced (``records/tables.py`` at
commit 562c6fa): the model registry, label sets, the serving pointer, datasets, jobs and their
events.

Written out column by column, never from ``records.tables``: that module moves on, this
revision must not. A database created before migrations existed (by ``create_all``) has exactly
these tables; :data:`TABLES` and :func:`metadata` describe them (``records.migrations.runner``
reads both) so that such a database can be checked and stamped at this revision instead of
created again. Constraints are unnamed, as ``create_all`` left them.

Revision ID: 0001_baseline
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def _model_versions() -> list:
    return [sa.Column("id", sa.String(128), nullable=False),
            sa.Column("parent", sa.String(128), nullable=True),
            sa.Column("created_at", _TZ, nullable=False),
            sa.Column("path", sa.String(1024), nullable=False),
            sa.Column("source", sa.String(256), nullable=True),
            sa.Column("method", sa.String(64), nullable=True),
            sa.Column("metrics", sa.JSON(), nullable=False),
            sa.Column("report", sa.JSON(), nullable=False),
            sa.PrimaryKeyConstraint("id")]


def _label_sets() -> list:
    return [sa.Column("name", sa.String(128), nullable=False),
            sa.Column("classnames", sa.JSON(), nullable=False),
            sa.Column("templates", sa.JSON(), nullable=True),
            sa.Column("source", sa.String(256), nullable=True),
            sa.Column("updated_at", _TZ, nullable=False),
            sa.PrimaryKeyConstraint("name")]


def _serving_pointer() -> list:
    # a single row (id 1, set by the code): no sequence, as create_all made it
    return [sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("version_id", sa.String(128), nullable=False),
            sa.Column("generation", sa.Integer(), nullable=False),
            sa.Column("updated_at", _TZ, nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.ForeignKeyConstraint(["version_id"], ["model_versions.id"])]


def _datasets() -> list:
    return [sa.Column("id", sa.String(64), nullable=False),
            sa.Column("name", sa.String(128), nullable=False),
            sa.Column("sha256", sa.String(64), nullable=False),
            sa.Column("path", sa.String(1024), nullable=False),
            sa.Column("classnames", sa.JSON(), nullable=False),
            sa.Column("n_train", sa.Integer(), nullable=False),
            sa.Column("n_test", sa.Integer(), nullable=False),
            sa.Column("split", sa.String(16), nullable=False),
            sa.Column("is_suite", sa.Boolean(), nullable=False),
            sa.Column("created_at", _TZ, nullable=False),
            sa.PrimaryKeyConstraint("id")]


def _jobs() -> list:
    return [sa.Column("id", sa.String(64), nullable=False),
            sa.Column("idempotency_key", sa.String(128), nullable=True),
            sa.Column("dataset_id", sa.String(64), nullable=False),
            sa.Column("method", sa.String(32), nullable=False),
            sa.Column("hparams", sa.JSON(), nullable=False),
            sa.Column("gate", sa.JSON(), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("step", sa.Integer(), nullable=False),
            sa.Column("total_steps", sa.Integer(), nullable=False),
            sa.Column("losses", sa.JSON(), nullable=False),
            sa.Column("eta_s", sa.Float(), nullable=True),
            sa.Column("metrics", sa.JSON(), nullable=False),
            sa.Column("report", sa.JSON(), nullable=False),
            sa.Column("error", sa.JSON(), nullable=True),
            sa.Column("base_version", sa.String(128), nullable=True),
            sa.Column("candidate_version", sa.String(128), nullable=True),
            sa.Column("cancel_requested", sa.Boolean(), nullable=False),
            sa.Column("created_at", _TZ, nullable=False),
            sa.Column("started_at", _TZ, nullable=True),
            sa.Column("finished_at", _TZ, nullable=True),
            sa.Column("heartbeat_at", _TZ, nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("idempotency_key"),
            sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"])]


def _job_events() -> list:
    return [sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("job_id", sa.String(64), nullable=False),
            sa.Column("at", _TZ, nullable=False),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("data", sa.JSON(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.ForeignKeyConstraint(["job_id"], ["jobs.id"])]


# in dependency order: a table comes after the tables its foreign keys name
TABLES = {"model_versions": _model_versions, "label_sets": _label_sets,
          "serving_pointer": _serving_pointer, "datasets": _datasets, "jobs": _jobs,
          "job_events": _job_events}
INDEXES = (("ix_job_events_job_id", "job_events", ["job_id"]),)


def upgrade() -> None:
    """Create the baseline tables and their index."""
    op.create_table("model_versions", *_model_versions())
    op.create_table("label_sets", *_label_sets())
    op.create_table("serving_pointer", *_serving_pointer())
    op.create_table("datasets", *_datasets())
    op.create_table("jobs", *_jobs())
    op.create_table("job_events", *_job_events())
    op.create_index("ix_job_events_job_id", "job_events", ["job_id"], unique=False)


def downgrade() -> None:
    """Drop the baseline tables and their index."""
    op.drop_index("ix_job_events_job_id", table_name="job_events")
    for name in reversed(TABLES):
        op.drop_table(name)


def metadata() -> sa.MetaData:
    """This revision's tables as SQLAlchemy metadata, to compare a pre-migration database with."""
    result = sa.MetaData()
    for name, columns in TABLES.items():
        sa.Table(name, result, *columns())
    for index, table, columns in INDEXES:
        sa.Index(index, *(result.tables[table].c[c] for c in columns))
    return result
