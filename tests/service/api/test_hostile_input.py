"""Faults and hostile input over HTTP: each is a clear 4xx and changes nothing, never a 500 or
a crash. (Manifest checks in detail: tests/core/test_manifest_checks.py; job records under
faults: tests/records/test_jobs.py.)"""

import json
from pathlib import Path

import pytest

from records import jobs
from tests.helpers import ADMIN
from tests.helpers.archives import colour_files, stripe_files, zip_bytes
from tests.helpers.colour import classify_files, png_bytes

# --- item 1: a tampered manifest is refused by activate, and serving goes on -------------------


def _tamper(manifest_path: Path, case: str) -> None:
    if case == "non-utf8":
        manifest_path.write_bytes(b"\xff\xfe" + manifest_path.read_bytes()[2:])
        return
    manifest = json.loads(manifest_path.read_text())
    if case == "huge-image-size":
        manifest["model_cfg"]["vision_cfg"]["image_size"] = 100_000
    elif case == "embed-dim":
        manifest["model_cfg"]["embed_dim"] = 48
    elif case == "unknown-timm-model":
        manifest["model_cfg"]["vision_cfg"]["timm_model_name"] = "no_such_net_v9"
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


@pytest.mark.parametrize("case", ["huge-image-size", "non-utf8", "embed-dim", "unknown-timm-model"])
def test_activating_a_version_with_a_tampered_manifest_is_409_and_serving_is_unchanged(
        client, data_dir, case):
    _tamper(Path(data_dir) / "versions" / "v-swapped" / "open_clip_config.json", case)
    response = client.post("/v1/models/v-swapped/activate", headers=ADMIN)
    assert response.status_code == 409, response.text
    detail = response.json()["detail"]
    assert "manifest of version v-swapped was modified" in detail and "activate another" in detail
    models = client.get("/v1/models").json()
    assert (models["serving"], models["loaded"], models["generation"]) == ("v-colour", "v-colour", 1)
    answer = classify_files(client, ("r.png", png_bytes("red")))
    assert answer.headers["X-Model-Version"] == "v-colour"
    assert answer.json()["results"][0]["labels"][0]["label"] == "red"


# --- item 5: a job is never answered with another, unrelated job --------------------------------


def _post_dataset(client, body: bytes, name: str):
    response = client.post("/v1/datasets", content=body, params={"name": name},
                           headers={**ADMIN, "Content-Type": "application/zip"})
    assert response.status_code == 201, response.text
    return response.json()


def _train_zip() -> bytes:
    return zip_bytes({**stripe_files("train", 3, seed=0), **stripe_files("test", 2, seed=1)})


def test_a_job_on_a_missing_dataset_is_404_even_when_other_jobs_exist(client):
    dataset = _post_dataset(client, _train_zip(), "stripes")
    other = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "hparams": {"steps": 5}},
                        headers=ADMIN)
    assert other.status_code == 202, other.text
    missing = client.post("/v1/jobs", json={"dataset_id": "ffffffffffffffff"}, headers=ADMIN)
    assert missing.status_code == 404
    assert "dataset 'ffffffffffffffff' does not exist" in missing.json()["detail"]
    assert [j["id"] for j in client.get("/v1/jobs").json()] == [other.json()["id"]]


# --- item 6: a suite an active job evaluates is not deleted --------------------------------------


def test_deleting_a_suite_while_a_job_may_evaluate_it_is_409_naming_the_job(client):
    suite = _post_dataset(client, zip_bytes(colour_files(3)), "colours")
    assert client.put(f"/v1/datasets/{suite['id']}/suite", json={"suite": True},
                      headers=ADMIN).status_code == 200
    train = _post_dataset(client, _train_zip(), "stripes")
    job = client.post("/v1/jobs", json={"dataset_id": train["id"], "hparams": {"steps": 5}},
                      headers=ADMIN).json()
    sessions = client.app.state.services.sessions
    with sessions() as session:  # the worker's side: it started, trained, and now evaluates
        assert jobs.transition(session, job["id"], "running")
        assert jobs.transition(session, job["id"], "evaluating")
    refused = client.delete(f"/v1/datasets/{suite['id']}", headers=ADMIN)
    assert refused.status_code == 409
    assert f"job '{job['id']}' (evaluating)" in refused.json()["detail"]
    unflag = client.put(f"/v1/datasets/{suite['id']}/suite", json={"suite": False}, headers=ADMIN)
    assert unflag.status_code == 409 and job["id"] in unflag.json()["detail"]
    assert client.get(f"/v1/datasets/{suite['id']}").json()["is_suite"] is True
    with sessions() as session:
        assert jobs.transition(session, job["id"], "rejected")
    assert client.delete(f"/v1/datasets/{suite['id']}", headers=ADMIN).status_code == 204
    assert client.get(f"/v1/datasets/{suite['id']}").status_code == 404


# --- item 7: unbounded query parameters and nested labels ----------------------------------------


@pytest.mark.parametrize("path", ["/v1/jobs?offset={n}", "/v1/jobs/{job}/events?after={n}",
                                  "/v1/jobs/{job}/events/stream?after={n}&poll_s=0.01"])
def test_query_integers_past_sqlite_range_are_422(client, path):
    dataset = _post_dataset(client, _train_zip(), "stripes")
    job = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "hparams": {"steps": 5}},
                      headers=ADMIN).json()
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=ADMIN).status_code == 200  # ended
    response = client.get(path.format(n=10**23, job=job["id"]))
    assert response.status_code == 422, response.text
    assert "less than or equal to 9223372036854775807" in response.text
    largest = client.get(path.format(n=2**63 - 1, job=job["id"]))  # the largest is fine
    assert largest.status_code == 200, largest.text
    assert "events" not in largest.text or largest.json().get("events") == []


def test_split_labels_refuses_deeply_nested_json_and_reads_the_three_forms():
    from records.errors import InvalidRequest
    from service.schemas import split_labels

    with pytest.raises(InvalidRequest, match="nested too deep to read; send a flat array"):
        split_labels(["[" * 10000 + "]" * 10000])
    with pytest.raises(InvalidRequest, match="labels looks like JSON but is not"):
        split_labels(["[red, green]"])
    assert split_labels(['["red", "green"]']) == ["red", "green"]
    assert split_labels([" red , green "]) == ["red", "green"]
    assert split_labels(["red", "green"]) == ["red", "green"]
    assert split_labels([]) is None


def test_deeply_nested_labels_are_422_not_500(client):
    response = classify_files(client, ("r.png", png_bytes("red")), labels="[" * 10000 + "]" * 10000)
    assert response.status_code == 422, response.text
    assert "nested" in response.json()["detail"]


# --- item 10: integer hyper-parameters that reach torch are bounded -------------------------------


@pytest.mark.parametrize("hparams, field", [({"seed": 10**30}, "seed"), ({"seed": 2**32}, "seed"),
                                            ({"seed": -1}, "seed"),
                                            ({"ensemble_every": 10**30}, "ensemble_every")])
def test_out_of_range_integer_hparams_are_422_naming_the_field(client, hparams, field):
    dataset = _post_dataset(client, _train_zip(), "stripes")
    response = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "hparams": hparams},
                           headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(f"{field} must be in [")
    assert client.get("/v1/jobs").json() == []
    largest = client.post("/v1/jobs", json={"dataset_id": dataset["id"],
                                            "hparams": {"steps": 5, "seed": 2**32 - 1}}, headers=ADMIN)
    assert largest.status_code == 202, largest.text
