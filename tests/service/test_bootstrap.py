import json
import time

from fastapi.testclient import TestClient

from records import registry
from service.app import create_app
from service.bootstrap import describe_served_model, ensure_serving
from records.db import create_all, make_engine, make_session_factory
from records.settings import Settings
from tests.helpers.synthetic import write_tiny_config
from zscl_core import load_model, save_version


def _session(settings):
    engine = make_engine(settings.database_url)
    create_all(engine)
    return make_session_factory(engine)()


def test_a_config_model_becomes_a_registered_served_version(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", model=str(write_tiny_config(tmp_path)))
    with _session(settings) as session:
        version = ensure_serving(session, settings)
        assert (settings.versions_dir / version / "open_clip_config.json").is_file()
        assert registry.get_serving(session) == (version, 1)
        assert registry.get_version(session, version).source.endswith("tiny-clip.json")
        # the pointer is durable: a restart serves the same version, whatever ZSCL_MODEL says now
        assert ensure_serving(session, settings) == version
        assert len(registry.list_registered(session)) == 1


def test_an_unloadable_model_is_reported_on_readyz(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"model_cfg": {"embed_dim": 8}}))
    with TestClient(create_app(Settings(data_dir=tmp_path / "data", model=str(broken)))) as client:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            response = client.get("/readyz")
            if "could not bootstrap" in (response.json()["detail"] or ""):
                break
            time.sleep(0.05)
        assert response.status_code == 503
        assert "embed_dim, vision_cfg and text_cfg" in response.json()["detail"]
        assert client.get("/livez").status_code == 200


def test_the_start_banner_names_the_version_actually_served(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", model=str(write_tiny_config(tmp_path)))
    assert "first start" in describe_served_model(settings)  # nothing served yet
    assert not settings.versions_dir.exists()  # and asking created no version
    with _session(settings) as session:
        first = ensure_serving(session, settings)
        assert describe_served_model(settings) == f"version {first} (ZSCL_MODEL is read only on a first start)"
        loaded = load_model(settings.versions_dir / first)
        promoted = save_version(settings.versions_dir, loaded.model, loaded.spec, parent=first)
        registry.register_version(session, promoted, settings.versions_dir / promoted, first, {})
        registry.activate(session, promoted)
    # a restart with the same ZSCL_MODEL serves the promoted version: the banner says so
    banner = describe_served_model(settings)
    assert promoted in banner and first not in banner and settings.model not in banner
