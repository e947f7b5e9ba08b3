import shutil
import time

from fastapi.testclient import TestClient

from service.app import create_app
from records import registry
from records.db import create_all, make_engine, make_session_factory
from tests.helpers.colour import classify_files, make_settings, png_bytes, wait_ready


def test_readyz_is_503_until_the_served_version_loads(data_dir):
    """The pointer names a version whose files are not there yet (say, still being copied):
    the service is live but not ready, classify answers 503, and it becomes ready by itself
    once the files arrive (failed loads are retried with back-off)."""
    settings = make_settings(data_dir)
    hidden = data_dir / "hidden-v-colour"
    shutil.move(data_dir / "versions" / "v-colour", hidden)
    engine = make_engine(settings.database_url)
    create_all(engine)
    with make_session_factory(engine)() as session:
        registry.register_version(session, "v-colour", settings.versions_dir / "v-colour")
        assert registry.activate(session, "v-colour", expected_current=None)
    engine.dispose()
    app = create_app(settings)
    with TestClient(app) as client:
        time.sleep(0.5)  # two reconcile rounds: still nothing to load
        assert client.get("/livez").status_code == 200
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.headers["Retry-After"] == "1"
        assert "v-colour" in not_ready.json()["detail"]
        refused = classify_files(client, ("r.png", png_bytes("red")))
        assert refused.status_code == 503 and "retry" in refused.json()["detail"]
        shutil.move(hidden, data_dir / "versions" / "v-colour")
        ready = wait_ready(client, timeout_s=10)
        assert ready.json()["model_version"] == "v-colour"
        assert classify_files(client, ("r.png", png_bytes("red"))).status_code == 200


def test_metrics_count_requests_swaps_batches_and_cache(client):
    for _ in range(2):
        classify_files(client, ("r.png", png_bytes("red")))
    text = client.get("/metrics").text
    assert 'zscl_http_requests_total{method="POST",model_version="v-colour",route="/v1/classify",status="200"} 2.0' in text
    assert 'zscl_model_swaps_total{trigger="startup"} 1.0' in text
    assert "zscl_head_cache_hits_total 1.0" in text and "zscl_head_cache_misses_total 1.0" in text
    assert "zscl_inference_batch_images_count 2.0" in text
    assert 'zscl_classified_images_total{model_version="v-colour"} 2.0' in text
    assert 'zscl_model_served{model_version="v-colour"} 1.0' in text


def test_openapi_documents_both_classify_bodies(client):
    body = client.get("/openapi.json").json()["paths"]["/v1/classify"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    assert "$defs" not in str(body)
