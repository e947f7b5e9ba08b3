"""The feedback loop over HTTP on the colour CLIP: kept predictions, answers, live accuracy,
datasets from feedback, the auto-update policy, deletion, retention and the store's cap."""

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from records.tables import Feedback, Job, Prediction, utcnow
from tests.helpers import ADMIN, INFERENCE_KEY
from tests.helpers.colour import classify_files, make_settings, png_bytes, running_client

INFER = {"X-API-Key": INFERENCE_KEY}


def _shade(colour: str, i: int) -> bytes:
    """A distinct image of ``colour`` (content-addressed storage would merge equal ones)."""
    base = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}[colour]
    return png_bytes(tuple(max(0, c - i) if c > 100 else c + i for c in base))


def _kept(client, colour: str, i: int = 0, **data) -> dict:
    response = classify_files(client, (f"{colour}-{i}.png", _shade(colour, i)), keep="true", **data)
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def _answer(client, prediction_id: str, label: str):
    return client.post("/v1/feedback", json={"prediction_id": prediction_id, "label": label})


@pytest.fixture()
def colours(client):
    put = client.put("/v1/label-sets/colours", headers=ADMIN,
                     json={"classnames": ["red", "green", "blue", "yellow"], "keep_images": True})
    assert put.status_code == 200, put.text
    return client


def test_a_kept_prediction_takes_an_answer_and_counts_for_its_version(client, data_dir):
    kept = _kept(client, "red")
    assert kept["labels"][0]["label"] == "red" and kept["prediction_id"]
    confirm = _answer(client, kept["prediction_id"], "red")
    assert confirm.status_code == 201, confirm.text
    body = confirm.json()
    assert body["correct"] is True and body["predicted"] == "red" and body["model_version"] == "v-colour"
    again = _answer(client, kept["prediction_id"], "blue")  # a second answer replaces the first
    assert again.status_code == 200 and again.json()["correct"] is False
    other = _kept(client, "green")
    assert _answer(client, other["prediction_id"], "green").status_code == 201
    listing = client.get("/v1/feedback").json()
    # two answers on v-colour: the red image said "blue" (wrong prediction), the green confirmed
    assert listing["summary"]["versions"] == {"v-colour": {"items": 2, "correct": 1, "accuracy": 0.5}}
    assert listing["summary"]["per_label"] == {"blue": {"confirmed": 0, "corrected": 1, "new": 1},
                                               "green": {"confirmed": 1, "corrected": 0, "new": 1}}
    assert [item["prediction_id"] for item in listing["items"]] == [other["prediction_id"],
                                                                   kept["prediction_id"]]
    metrics = client.get("/metrics").text
    assert 'zscl_feedback_live_accuracy{model_version="v-colour"} 0.5' in metrics
    assert 'zscl_feedback_answers_total{model_version="v-colour",outcome="corrected"} 1.0' in metrics


def test_answers_are_checked(client):
    kept = _kept(client, "red")
    bad = _answer(client, kept["prediction_id"], "purple")
    assert bad.status_code == 422 and "'purple' is not a label" in bad.json()["detail"]
    assert _answer(client, "0123456789abcdef0123456789abcdef", "red").status_code == 404
    assert _answer(client, "../../etc", "red").status_code == 422
    assert client.post("/v1/feedback", json={"prediction_id": kept["prediction_id"]}).status_code == 422
    assert client.get("/v1/feedback").json()["items"] == []


def test_not_kept_unless_asked_and_label_sets_keep_by_default(colours):
    plain = classify_files(colours, ("r.png", _shade("red", 0)))
    assert plain.json()["results"][0]["prediction_id"] is None
    by_set = colours.post("/v1/classify", files=[("images", ("r.png", _shade("red", 1)))],
                          data={"label_set": "colours"})
    assert by_set.json()["results"][0]["prediction_id"]
    refused = colours.post("/v1/classify", files=[("images", ("r.png", _shade("red", 2)))],
                           data={"label_set": "colours", "keep": "false"})
    assert refused.json()["results"][0]["prediction_id"] is None
    assert colours.post("/v1/classify", files=[("images", ("r.png", _shade("red", 3)))],
                        data={"label_set": "colours", "keep": "maybe"}).status_code == 422


def test_the_kept_image_comes_back_and_delete_forgets_it(client, data_dir):
    image = _shade("red", 0)
    first, second = _kept(client, "red"), _kept(client, "red")  # the same bytes twice: one file
    assert first["prediction_id"] != second["prediction_id"]
    got = client.get(f"/v1/feedback/{first['prediction_id']}/image")
    assert got.status_code == 200 and got.content == image and got.headers["content-type"] == "image/png"
    files = lambda: [p for p in (data_dir / "feedback" / "images").rglob("*") if p.is_file()]  # noqa: E731
    assert len(files()) == 1
    _answer(client, first["prediction_id"], "red")
    assert client.delete(f"/v1/feedback/{first['prediction_id']}").status_code == 204
    assert len(files()) == 1  # the second prediction still refers to it
    assert client.get(f"/v1/feedback/{first['prediction_id']}/image").status_code == 404
    assert client.delete(f"/v1/feedback/{second['prediction_id']}").status_code == 204
    assert files() == []
    assert client.get("/v1/feedback").json()["summary"]["items"] == 0


def test_unanswered_predictions_expire_and_answered_ones_stay(client, data_dir):
    answered, unanswered = _kept(client, "red", 0), _kept(client, "green", 1)
    _answer(client, answered["prediction_id"], "red")
    services = client.app.state.services
    with services.sessions() as session:
        session.execute(update(Prediction).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    assert services.feedback.purge() == 1
    assert client.get(f"/v1/feedback/{unanswered['prediction_id']}/image").status_code == 404
    assert client.get(f"/v1/feedback/{answered['prediction_id']}/image").status_code == 200
    assert len([p for p in (data_dir / "feedback" / "images").rglob("*") if p.is_file()]) == 1


def test_a_full_store_still_answers_but_keeps_nothing(data_dir):
    image = _shade("red", 0)
    with running_client(make_settings(data_dir, feedback_max_bytes=len(image) + 10)) as client:
        assert _kept(client, "red", 0)["prediction_id"]
        full = _kept(client, "red", 1)
        assert full["labels"][0]["label"] == "red" and full["prediction_id"] is None


def _answer_many(client, per_colour: dict[str, int], label_set="colours", start=0) -> list[dict]:
    sent = []
    for colour, n in per_colour.items():
        for i in range(start, start + n):
            response = client.post("/v1/classify", files=[("images", (f"{colour}{i}.png",
                                                                     _shade(colour, i)))],
                                   data={"label_set": label_set})
            prediction_id = response.json()["results"][0]["prediction_id"]
            answer = _answer(client, prediction_id, colour)
            assert answer.status_code == 201, answer.text
            sent.append(answer.json())
    return sent


def test_a_dataset_from_feedback_is_an_ordinary_dataset(colours):
    _answer_many(colours, {"red": 5, "green": 5, "blue": 1})
    built = colours.post("/v1/datasets/from-feedback", headers=ADMIN,
                         json={"label_set": "colours", "min_per_class": 3})
    assert built.status_code == 201, built.text
    body = built.json()
    assert body["classnames"] == ["green", "red"] and body["per_class"] == {"green": 5, "red": 5}
    assert body["n_train"] + body["n_test"] == body["items"] == 10 and body["n_test"] >= 2
    assert body["origin"]["kind"] == "feedback" and body["origin"]["label_set"] == "colours"
    assert colours.get(f"/v1/datasets/{body['id']}").json()["origin"]["items"] == 10
    summary = colours.get("/v1/feedback", params={"label_set": "colours"}).json()["summary"]
    assert summary["new"] == 1  # the blue answer was not used
    again = colours.post("/v1/datasets/from-feedback", headers=ADMIN,
                         json={"label_set": "colours", "min_per_class": 3})
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    job = colours.post("/v1/jobs", headers=ADMIN, json={"dataset_id": body["id"]})
    assert job.status_code == 202, job.text


def test_a_dataset_needs_two_classes_of_answers(colours):
    _answer_many(colours, {"red": 3, "green": 1})
    refused = colours.post("/v1/datasets/from-feedback", headers=ADMIN,
                           json={"label_set": "colours", "min_per_class": 2})
    assert refused.status_code == 422 and "1 class(es)" in refused.json()["detail"]
    assert colours.post("/v1/datasets/from-feedback", json={"label_set": "colours"}).status_code == 401
    assert colours.get("/v1/datasets").json() == []


def test_auto_update_starts_one_job_when_enough_answers_arrive(colours):
    policy = {"min_per_class": 3, "min_classes": 2, "hparams": {"steps": 2}}
    put = colours.put("/v1/label-sets/colours", headers=ADMIN,
                      json={"classnames": ["red", "green", "blue", "yellow"], "keep_images": True,
                            "auto_update": policy})
    assert put.status_code == 200 and put.json()["auto_update"]["min_per_class"] == 3
    sent = _answer_many(colours, {"red": 3, "green": 2})
    assert all(item["auto_update_job"] is None for item in sent)
    last = _answer_many(colours, {"green": 1}, start=2)[0]
    job = last["auto_update_job"]
    assert job is not None and job["state"] == "queued", last
    assert job["trigger"]["kind"] == "auto-update" and job["trigger"]["label_set"] == "colours"
    assert job["trigger"]["new_per_class"] == {"green": 3, "red": 3}
    assert job["hparams"]["steps"] == 2
    # while that job has not ended, more answers start nothing
    more = _answer_many(colours, {"red": 3, "green": 3}, start=10)
    assert all(item["auto_update_job"] is None for item in more)
    with colours.app.state.services.sessions() as session:
        assert session.scalar(select(Job.id).where(Job.trigger.is_not(None))) == job["id"]
        used = session.scalars(select(Feedback.dataset_id)).all()
    assert used.count(job["dataset_id"]) == 6


def test_a_bad_policy_is_refused_before_anything_is_stored(client):
    for policy, needle in (({"hparams": {"steps": -1}}, "steps"), ({"min_classes": 1}, "min_classes"),
                           ({"method": "nope"}, "nope"), ({"unknown": 1}, "unknown")):
        response = client.put("/v1/label-sets/colours", headers=ADMIN,
                              json={"classnames": ["red", "green"], "auto_update": policy})
        assert response.status_code == 422, (policy, response.text)
        assert needle in response.text, (policy, response.text)
    assert client.get("/v1/label-sets/colours").status_code == 404
