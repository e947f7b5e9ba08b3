"""Dataset upload and job endpoints over HTTP: bad input is a clear 4xx and leaves nothing."""

import pytest

from tests.helpers import ADMIN
from tests.helpers.archives import colour_files, encode, huge_png, stripe_files, zip_bytes, zip_info
from tests.helpers.synthetic import stripe_task


def _post(client, body: bytes, name="pets", content_type="application/zip", headers=ADMIN, **params):
    return client.post("/v1/datasets", content=body, params={"name": name, **params},
                       headers={**headers, "Content-Type": content_type})


def _nothing_stored(client, data_dir):
    assert client.get("/v1/datasets").json() == []
    store = data_dir / "datasets"
    assert not store.exists() or [p.name for p in store.iterdir()] == []


def _truncated_jpeg() -> bytes:
    items, _, _ = stripe_task(1, seed=0)
    return encode(items[0].resize((64, 64)), "JPEG")[:300]


BAD = {
    "dotdot": (lambda: zip_bytes({**colour_files(3), "../evil/x.png": encode_any()}), 422, "'..'"),
    "symlink": (lambda: zip_bytes(colour_files(3), [(zip_info("red/link.png", 0o120777), b"/etc/passwd")]),
                422, "link"),
    "bomb": (lambda: zip_bytes({**colour_files(3), "red/zeros.png": b"\0" * (20 * 1024 * 1024)}), 413,
             "compress"),
    "non-image": (lambda: zip_bytes({**colour_files(3), "red/notes.txt": b"hello"}), 422, "notes.txt"),
    "one-class": (lambda: zip_bytes({k: v for k, v in colour_files(3).items() if k.startswith("red/")}),
                  422, "class"),
    "truncated-jpeg": (lambda: zip_bytes({**colour_files(3), "red/cut.jpg": _truncated_jpeg()}), 422,
                       "cut.jpg"),
    "pixel-bomb": (lambda: zip_bytes({**colour_files(3), "red/huge.png": huge_png(100_000, 100_000)}),
                   413, "'red/huge.png' has 10000000000 pixels"),
    "pixel-cap": (lambda: zip_bytes({**colour_files(3), "red/huge.png": huge_png(7000, 7000)}),
                  413, "'red/huge.png' has 7000x7000 = 49000000 pixels"),
}


def encode_any() -> bytes:
    return next(iter(colour_files(1).values()))


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_dataset_upload_is_a_4xx_naming_the_problem(client, data_dir, case):
    build, status, needle = BAD[case]
    response = _post(client, build())
    assert response.status_code == status, response.text
    assert needle.lower() in response.json()["detail"].lower()
    _nothing_stored(client, data_dir)


def test_empty_class_folder_is_refused(client, data_dir):
    body = zip_bytes(colour_files(3), [(zip_info("purple/", 0o40755), b"")])
    response = _post(client, body)
    assert response.status_code == 422 and "purple" in response.json()["detail"]
    _nothing_stored(client, data_dir)


def test_upload_needs_admin_key_and_archive_content_type(client, data_dir):
    body = zip_bytes(colour_files(3))
    assert _post(client, body, headers={}).status_code == 401
    assert _post(client, body, headers={"X-API-Key": "wrong-key-123"}).status_code == 403
    response = _post(client, b"just text", content_type="text/plain")
    assert response.status_code in (415, 422) and "zip" in response.json()["detail"].lower()
    _nothing_stored(client, data_dir)


def test_upload_list_get_dedupe_suite_and_delete(client, data_dir):
    body = zip_bytes(colour_files(4))
    first = _post(client, body, name="colours")
    assert first.status_code == 201, first.text
    dataset = first.json()
    assert dataset["classnames"] == ["blue", "green", "red", "yellow"]
    assert dataset["n_train"] + dataset["n_test"] == 16
    assert dataset["n_eval"] == dataset["n_test"] == 4  # not a suite: its train split is learned
    again = _post(client, body, name="colours")
    assert again.status_code == 200 and again.json()["id"] == dataset["id"]
    assert client.get(f"/v1/datasets/{dataset['id']}").json()["name"] == "colours"
    assert client.get("/v1/datasets/ffff").status_code == 404
    suite = client.put(f"/v1/datasets/{dataset['id']}/suite", json={"suite": True}, headers=ADMIN)
    assert suite.status_code == 200 and suite.json()["is_suite"] is True
    assert suite.json()["n_eval"] == 16  # a suite is never trained on: all its images are tested
    job = client.post("/v1/jobs", json={"dataset_id": dataset["id"]}, headers=ADMIN)
    assert job.status_code == 422 and "suite" in job.json()["detail"]
    assert client.delete(f"/v1/datasets/{dataset['id']}", headers=ADMIN).status_code == 204
    _nothing_stored(client, data_dir)


def test_bare_test_upload_can_be_a_suite_but_never_trained_on(client, data_dir):
    first = _post(client, zip_bytes(stripe_files("test", 3, seed=2)), name="stripes-suite")
    assert first.status_code == 201, first.text
    dataset = first.json()
    assert (dataset["n_train"], dataset["n_test"], dataset["n_eval"]) == (0, 6, 6)
    assert dataset["split"] == "explicit" and dataset["is_suite"] is False

    job = client.post("/v1/jobs", json={"dataset_id": dataset["id"]},
                      headers={**ADMIN, "Idempotency-Key": "bare-test"})
    assert job.status_code == 422, job.text
    assert "has no train images" in job.json()["detail"] and "suite" in job.json()["detail"]
    assert client.get("/v1/jobs").json() == []  # nothing kept, not even the idempotency key

    suite = client.put(f"/v1/datasets/{dataset['id']}/suite", json={"suite": True}, headers=ADMIN)
    assert suite.status_code == 200, suite.text
    assert (suite.json()["is_suite"], suite.json()["n_eval"]) == (True, 6)


def test_lone_train_folder_is_refused(client, data_dir):
    response = _post(client, zip_bytes(stripe_files("train", 3, seed=0)))
    assert response.status_code == 422
    assert "a train split without a test split can never be evaluated" in response.json()["detail"]
    _nothing_stored(client, data_dir)


def test_job_validation_and_unknown_ids(client):
    dataset = _post(client, zip_bytes(colour_files(4)), name="colours").json()
    bad = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "hparams": {"lr": 5}},
                      headers=ADMIN)
    assert bad.status_code == 422 and "lr" in bad.json()["detail"]
    bad = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "method": "sgd"}, headers=ADMIN)
    assert bad.status_code == 422 and "method" in bad.json()["detail"]
    bad = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "gate": {"max_loss": 1}},
                      headers=ADMIN)
    assert bad.status_code == 422 and "gate" in bad.json()["detail"]
    missing = client.post("/v1/jobs", json={"dataset_id": "abcdef"}, headers=ADMIN)
    assert missing.status_code == 404
    assert client.get("/v1/jobs/abcdef").status_code == 404
    assert client.post("/v1/jobs/abcdef/cancel", headers=ADMIN).status_code == 404
    assert client.get("/v1/jobs").json() == []


WRONG_TYPES = {
    "steps-string": ({"hparams": {"steps": "6"}}, "hparams.steps"),
    "steps-null": ({"hparams": {"steps": None}}, "hparams.steps"),
    "steps-list": ({"hparams": {"steps": [6]}}, "hparams.steps"),
    "steps-fraction": ({"hparams": {"steps": 6.5}}, "hparams.steps"),
    "lr-string": ({"hparams": {"lr": "1e-5"}}, "hparams.lr"),
    "trainable-int": ({"hparams": {"trainable": 5}}, "hparams.trainable"),
    "bf16-string": ({"hparams": {"bf16": "no"}}, "hparams.bf16"),
    "seed-string": ({"hparams": {"seed": "x"}}, "hparams.seed"),
    "unknown-hparam": ({"hparams": {"learning_rate": 1e-5}}, "hparams.learning_rate is not a field"),
    "gate-string": ({"gate": {"max_drift": "0.5"}}, "gate.max_drift"),
    "gate-unknown": ({"gate": {"max_loss": 1}}, "gate.max_loss is not a field"),
}


@pytest.mark.parametrize("case", sorted(WRONG_TYPES))
def test_job_hparams_and_gate_of_the_wrong_type_are_422_naming_the_field(client, case):
    body, needle = WRONG_TYPES[case]
    response = client.post("/v1/jobs", json={"dataset_id": "abcdef", **body}, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert needle in response.json()["detail"]
    assert client.get("/v1/jobs").json() == []


def test_a_short_job_takes_a_short_warmup_but_an_explicit_long_one_is_refused(client):
    dataset = _post(client, zip_bytes(colour_files(4)), name="colours").json()
    short = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "hparams": {"steps": 50}},
                        headers=ADMIN)
    assert short.status_code == 202, short.text
    assert short.json()["hparams"]["warmup_steps"] == 5  # min(100, steps // 10), stored explicitly
    long = client.post("/v1/jobs", json={"dataset_id": dataset["id"],
                                         "hparams": {"steps": 50, "warmup_steps": 50}}, headers=ADMIN)
    assert long.status_code == 422 and "warmup_steps must be in [0, steps=50)" in long.json()["detail"]


def test_job_create_is_idempotent_cancel_and_events_paginated_and_streamed(client):
    dataset = _post(client, zip_bytes(colour_files(4)), name="colours").json()
    body = {"dataset_id": dataset["id"], "hparams": {"steps": 5, "warmup_steps": 1}}
    first = client.post("/v1/jobs", json=body, headers={**ADMIN, "Idempotency-Key": "abc"})
    assert first.status_code == 202, first.text
    job = first.json()
    assert job["state"] == "queued" and job["total_steps"] == 5 and job["hparams"]["lr"] == 1e-5
    again = client.post("/v1/jobs", json=body, headers={**ADMIN, "Idempotency-Key": "abc"})
    assert again.status_code == 200 and again.json()["id"] == job["id"]
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 401
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=ADMIN).json()
    assert cancelled["state"] == "cancelled"  # queued: ends at once, the worker will skip it
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=ADMIN).status_code == 409
    page = client.get(f"/v1/jobs/{job['id']}/events", params={"limit": 1}).json()
    assert [e["data"]["state"] for e in page["events"]] == ["queued"]
    rest = client.get(f"/v1/jobs/{job['id']}/events", params={"after": page["next_after"]}).json()
    assert [e["data"]["state"] for e in rest["events"]] == ["cancelled"]
    stream = client.get(f"/v1/jobs/{job['id']}/events/stream")
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert "event: state" in stream.text and 'event: end\ndata: {"state": "cancelled"}' in stream.text
    assert [j["id"] for j in client.get("/v1/jobs").json()] == [job["id"]]
