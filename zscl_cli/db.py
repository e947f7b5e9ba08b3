"""``zscl db``: the schema of the database at ``ZSCL_DATABASE_URL`` (records.migrations).

``zscl serve`` and the worker apply pending migrations when they start; ``zscl db upgrade`` is
the explicit step (run it before rolling out a release in distributed mode), ``zscl db current``
says where a database stands, and ``zscl db revision`` writes a new migration from a checkout.
"""

from __future__ import annotations

import sys

from .http import load_settings

__all__ = ["add_db"]


def _engine():
    from records import db
    return db.make_engine(load_settings().database_url)


def _where(engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _exit_if_refused(exc: Exception) -> None:
    from records.errors import SchemaMismatch  # here: it imports torch (through zscl_core)
    if isinstance(exc, SchemaMismatch):
        sys.exit(str(exc))


def cmd_upgrade(args) -> int:
    """``zscl db upgrade``: apply pending migrations, the explicit step before a rollout."""
    from records import db

    engine = _engine()
    try:
        before = db.upgrade(engine)
    except Exception as exc:
        _exit_if_refused(exc)
        raise
    finally:
        engine.dispose()
    if before.up_to_date:
        print(f"{_where(engine)}: already at {before.head} (nothing to do)")
    else:
        found = "pre-migration tables" if before.legacy else before.current or "empty"
        print(f"{_where(engine)}: upgraded from {found} to {before.head}")
    return 0


def cmd_current(args) -> int:
    """``zscl db current``: say where the database's schema stands; with --check, exit 1 when it is behind."""
    from records import db

    engine = _engine()
    try:
        state = db.check_schema(engine)
    except Exception as exc:
        _exit_if_refused(exc)
        raise
    finally:
        engine.dispose()
    if state.up_to_date:
        print(f"{_where(engine)}: {state.current} (up to date)")
    elif state.legacy:
        print(f"{_where(engine)}: no revision, tables from before migrations (behind: "
              f"`zscl db upgrade` stamps them and brings them to {state.head})")
    else:
        print(f"{_where(engine)}: {state.current or 'empty'} (behind: `zscl db upgrade` brings "
              f"it to {state.head})")
    return 0 if state.up_to_date or not args.check else 1


def cmd_revision(args) -> int:
    """``zscl db revision``: write a migration from the difference between the tables and the newest one."""
    from records.migrations import new_revision

    try:
        path = new_revision(args.message, args.id)
    except ValueError as exc:
        sys.exit(str(exc))
    print(f"wrote {path}: read and edit it (see records/migrations/__init__.py), then run "
          f"pytest tests/records/test_migrations.py")
    return 0


def add_db(subparsers) -> None:
    """Register ``zscl db`` and its subcommands on the ``zscl`` parser."""
    p = subparsers.add_parser("db", help="the database schema: upgrade it or show its revision")
    sub = p.add_subparsers(dest="db_command", required=True)
    sub.add_parser("upgrade", help="apply pending migrations to ZSCL_DATABASE_URL").set_defaults(
        func=cmd_upgrade)
    current = sub.add_parser("current", help="the database's revision, and whether it is the newest")
    current.add_argument("--check", action="store_true", help="exit 1 unless it is up to date")
    current.set_defaults(func=cmd_current)
    revision = sub.add_parser("revision", help="write versions/<id>.py from the difference "
                              "between records/tables.py and the newest migration (in a checkout)")
    revision.add_argument("message", help="what it changes, e.g. 'feedback tables'")
    revision.add_argument("--id", required=True, help="the next number and a slug, e.g. 0002_feedback")
    revision.set_defaults(func=cmd_revision)
