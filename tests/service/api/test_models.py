from pathlib import Path

from tests.helpers import ADMIN
from tests.helpers.colour import classify_files, png_bytes


def test_list_and_get_models(client):
    body = client.get("/v1/models").json()
    assert body["serving"] == body["loaded"] == "v-colour" and body["generation"] == 1
    by_id = {v["id"]: v for v in body["versions"]}
    assert set(by_id) == {"v-colour", "v-swapped"}
    assert by_id["v-colour"]["serving"] and not by_id["v-swapped"]["serving"]
    assert by_id["v-swapped"]["lineage"] == ["v-colour"]
    assert by_id["v-swapped"]["method"] == "test-swap" and by_id["v-swapped"]["metrics"] == {"acc": 0.0}
    one = client.get("/v1/models/v-swapped")
    assert one.status_code == 200 and one.json()["parent"] == "v-colour"
    missing = client.get("/v1/models/v-nope")
    assert missing.status_code == 404 and "GET /v1/models" in missing.json()["detail"]


def test_activate_needs_the_admin_key(client):
    assert client.post("/v1/models/v-swapped/activate").status_code == 401
    assert client.post("/v1/models/v-swapped/activate", headers={"X-API-Key": "not-the-key"}).status_code == 403
    assert client.get("/v1/models").json()["serving"] == "v-colour"


def test_activate_changes_the_served_version_and_rolls_back(client):
    before = classify_files(client, ("r.png", png_bytes("red")))
    assert before.headers["X-Model-Version"] == "v-colour" and before.json()["results"][0]["labels"][0]["label"] == "red"
    response = client.post("/v1/models/v-swapped/activate", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json() == {"version": "v-swapped", "previous": "v-colour", "generation": 2, "notified": False}
    assert response.headers["X-Model-Version"] == "v-swapped"
    after = classify_files(client, ("r.png", png_bytes("red")))
    assert after.headers["X-Model-Version"] == "v-swapped" == after.json()["model_version"]
    assert after.json()["results"][0]["labels"][0]["label"] == "green"  # the swapped version's answer
    assert client.get("/livez").headers["X-Model-Version"] == "v-swapped"
    back = client.post("/v1/models/v-colour/activate", headers=ADMIN)
    assert back.json()["generation"] == 3
    assert classify_files(client, ("r.png", png_bytes("red"))).json()["results"][0]["labels"][0]["label"] == "red"


def test_activating_a_broken_version_is_refused_and_changes_nothing(client, data_dir):
    weights = Path(data_dir) / "versions" / "v-swapped" / "open_clip_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")
    response = client.post("/v1/models/v-swapped/activate", headers=ADMIN)
    assert response.status_code == 409
    assert "activate another" in response.json()["detail"]
    assert client.get("/v1/models").json()["serving"] == "v-colour"
    assert client.post("/v1/models/v-nope/activate", headers=ADMIN).status_code == 404
