"""Fixtures for update jobs: a served tiny model that knows colours (datasets as zip uploads:
tests/helpers/archives.py)."""

from __future__ import annotations

import pytest

from records import db, registry
from records.settings import Settings
from tests.helpers.archives import write_reference_dir
from zscl_core import save_version


@pytest.fixture()
def job_env(tmp_path, pretrained_tiny):
    """(settings, sessions, served version id) with the colour-pretrained tiny model served."""
    loaded, _ = pretrained_tiny
    settings = Settings(data_dir=tmp_path / "var", model=str(tmp_path / "unused.json"),
                        reference_dir=write_reference_dir(tmp_path / "reference"),
                        job_heartbeat_timeout_s=5)
    settings.ensure_dirs()
    engine = db.make_engine(settings.database_url)
    db.create_all(engine)
    sessions = db.make_session_factory(engine)
    version = save_version(settings.versions_dir, loaded.model, loaded.spec,
                           metadata={"source": "tiny-colours"})
    with sessions() as session:
        registry.register_version(session, version, settings.versions_dir / version)
        assert registry.activate(session, version)
    yield settings, sessions, version
    engine.dispose()
