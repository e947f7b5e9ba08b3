"""The database schema's history as Alembic migrations: ``versions/`` holds one file per
revision, ``env.py`` runs them on the connection :mod:`.runner` hands over (no ``alembic.ini``).

Start-up (:func:`records.db.upgrade`) and ``zscl db upgrade`` apply the pending ones; a database
at a revision this code does not know is refused (:class:`records.errors.SchemaMismatch`).

Adding a migration (say, new feedback tables):

1. Change :mod:`records.tables` (new ``Base`` subclasses, columns, indexes).
2. From a checkout, write the revision: ``zscl db revision "feedback tables" --id 0002_feedback``
   autogenerates ``versions/0002_feedback.py`` from the difference between ``records.tables``
   and the current head (or copy ``0001_baseline.py``'s header and write it by hand). Ids are
   the next four-digit number and a slug, at most 32 characters, and ``down_revision`` names
   the previous one, so the history stays one line.
3. Read and edit it: autogenerate misses renames (it sees a drop and an add), server defaults
   that existing rows need, and data moves. Spell the schema out in the file, never import
   ``records.tables`` there: it moves on, a migration must not. ALTERs go in
   ``with op.batch_alter_table(...)`` blocks (SQLite rebuilds the table; PostgreSQL alters it).
   Constraints made by the baseline are unnamed; to drop one on SQLite, recreate the table.
4. ``pytest tests/records/test_migrations.py``: it fails while ``records.tables`` and the
   migrations disagree (autogenerate's comparison of an upgraded empty database), and checks
   the upgrade of a database holding rows, on SQLite and (where reachable) PostgreSQL.
"""

from __future__ import annotations

from .runner import BASELINE, SchemaState, check_schema, head_revision, new_revision, upgrade

__all__ = ["BASELINE", "SchemaState", "check_schema", "head_revision", "new_revision", "upgrade"]
