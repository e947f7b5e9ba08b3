"""First start: make sure something is served, registering ``settings.model`` as a version.

Every served model is a registered version, so a fresh deployment and a promoted update go
through the same load path. Two processes starting on an empty database both try; the pointer's
compare-and-swap lets one win and the other serves the winner. `zscl serve` with several API
processes bootstraps once before it starts them (:func:`bootstrap`), so that they never build
the same model at once; each process's own bootstrap then finds the pointer set.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from records import db, registry
from records.settings import Settings
from zscl_core import ModelLoadError, load_model, read_manifest, save_version

__all__ = ["bootstrap", "ensure_serving", "materialise_model", "describe_served_model"]

logger = logging.getLogger(__name__)


def materialise_model(settings: Settings) -> Path:
    """A version directory holding ``settings.model`` (saved into the version store if needed)."""
    root = settings.versions_dir
    if settings.model == "starter":
        try:
            from zscl_core.starter import ensure_starter  # lazy: heavy, and only for this source
        except ImportError as exc:
            raise ModelLoadError(f"the starter model is unavailable ({exc}); set ZSCL_MODEL to an "
                                 f"open_clip name, a model config JSON or a saved version") from exc
        return Path(ensure_starter(root, device="cpu"))
    source = Path(settings.model).expanduser()
    if source.is_dir() and source.resolve().parent == root.resolve():
        return source.resolve()
    logger.info("loading %s (pretrained=%s) to register it as a version", settings.model,
                settings.pretrained)
    loaded = load_model(settings.model, pretrained=settings.pretrained, device="cpu")
    if loaded.version:  # a version saved elsewhere: import it under its own id
        if (root / loaded.version).is_dir():
            return root / loaded.version
        zscl = loaded.manifest["zscl"]
        version_id = save_version(root, loaded.model, loaded.spec, parent=zscl.get("parent"),
                                  metadata=zscl.get("metadata"), version_id=loaded.version)
        return root / version_id
    tag = f" + {settings.pretrained}" if settings.pretrained else ""
    version_id = save_version(root, loaded.model, loaded.spec,
                              metadata={"source": f"{settings.model}{tag}"})
    return root / version_id


def ensure_serving(session: Session, settings: Settings) -> str:
    """The served version id, bootstrapping ``settings.model`` when nothing is served yet."""
    settings.ensure_dirs()
    registry.register_saved_versions(session, settings.versions_dir)
    version, _ = registry.get_serving(session)
    if version is not None:
        return version
    path = materialise_model(settings)
    zscl = read_manifest(path)["zscl"]
    meta = dict(zscl.get("metadata") or {})
    meta.setdefault("source", settings.model)
    meta.setdefault("created_at", zscl.get("created_at"))
    registry.register_version(session, zscl["version"], path, zscl.get("parent"), meta)
    if not registry.activate(session, zscl["version"], expected_current=None):
        logger.info("another process bootstrapped first; serving its choice")
    version, _ = registry.get_serving(session)
    return version


def bootstrap(settings: Settings, engine: Engine | None = None, *, attempts: int = 3) -> str:
    """Apply pending schema migrations and :func:`ensure_serving`, retried when another process bootstraps
    the same database at the same moment; the served version id. Blocking: on a first start it
    may build the starter model (about a minute).

    Args:
        settings: where the records are, and ``model`` for a first start.
        engine: the database engine to use; default one of its own, disposed of at the end.
        attempts: tries before a database error is raised.
    """
    own = engine is None
    engine = engine if engine is not None else db.make_engine(settings.database_url)
    sessions = db.make_session_factory(engine)

    def once() -> str:
        db.upgrade(engine)  # pending migrations, under a lock; refuses a newer database
        with sessions() as session:
            return ensure_serving(session, settings)

    try:
        for _ in range(attempts - 1):
            try:
                return once()
            except (OperationalError, IntegrityError) as exc:  # another process booting at once
                logger.info("bootstrap raced another process (%s); retrying", exc)
                time.sleep(0.5)
        return once()
    finally:
        if own:
            engine.dispose()


def describe_served_model(settings: Settings) -> str:
    """What the start banner says about the model: the version the serving pointer names.

    A restart serves that version whatever ``ZSCL_MODEL`` says now (the pointer is durable, and
    a promoted update moves it), so naming ``ZSCL_MODEL`` would be wrong; it decides only on a
    first start, before anything is served. Reads the pointer and creates nothing.
    """
    engine = db.make_engine(settings.database_url)
    try:
        with db.make_session_factory(engine)() as session:
            version, _ = registry.get_serving(session)
    except SQLAlchemyError:  # no database or no tables yet: a first start
        version = None
    finally:
        engine.dispose()
    if version is None:
        return f"ZSCL_MODEL={settings.model} (first start: it becomes the first served version)"
    return f"version {version} (ZSCL_MODEL is read only on a first start)"
