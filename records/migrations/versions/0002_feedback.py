"""Feedback: kept predictions and their answers; a label set's feedback settings; where a dataset
came from and what triggered a job.

Every new column is nullable or has a server default, so existing rows need no backfill: label
sets keep no images and have no auto-update policy, datasets are uploads, jobs were posted.

Revision ID: 0002_feedback
Revises: 0001_baseline
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_feedback"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add the feedback tables and columns."""
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("expires_at", _TZ, nullable=False),
        sa.Column("version_id", sa.String(128), nullable=False),
        sa.Column("label_set", sa.String(128), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=True),
        sa.Column("image_name", sa.String(256), nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("image_format", sa.String(8), nullable=False),
        sa.Column("image_bytes", sa.Integer(), nullable=False),
        sa.Column("top_label", sa.String(256), nullable=False),
        sa.Column("top_probability", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"))
    op.create_index("ix_predictions_expires_at", "predictions", ["expires_at"])
    op.create_index("ix_predictions_label_set", "predictions", ["label_set"])
    op.create_index("ix_predictions_image_sha256", "predictions", ["image_sha256"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("prediction_id", sa.String(32), nullable=False),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("correct", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("dataset_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("prediction_id"),
        sa.ForeignKeyConstraint(["prediction_id"], ["predictions.id"]))
    op.create_index("ix_feedback_dataset_id", "feedback", ["dataset_id"])
    with op.batch_alter_table("label_sets") as batch:
        batch.add_column(sa.Column("keep_images", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("auto_update", sa.JSON(), nullable=True))
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("origin", sa.JSON(), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("trigger", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Remove the feedback tables and columns."""
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("trigger")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("origin")
    with op.batch_alter_table("label_sets") as batch:
        batch.drop_column("auto_update")
        batch.drop_column("keep_images")
    op.drop_index("ix_feedback_dataset_id", table_name="feedback")
    op.drop_table("feedback")
    for index in ("ix_predictions_image_sha256", "ix_predictions_label_set",
                  "ix_predictions_expires_at"):
        op.drop_index(index, table_name="predictions")
    op.drop_table("predictions")
