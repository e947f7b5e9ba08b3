import base64

from fastapi import Request
from fastapi.testclient import TestClient

from service.app import create_app

from tests.helpers import ADMIN_KEY, INFERENCE_KEY
from tests.helpers.colour import (COLOUR_LABELS, classify_files, make_settings, png_bytes, running_client,
                                  wait_ready)


def _top(response):
    return [r["labels"][0]["label"] for r in response.json()["results"]]


def test_colour_model_answers_by_construction(client):
    response = classify_files(client, *[(f"{c}.png", png_bytes(c)) for c in ("red", "green", "blue", "yellow")])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "v-colour" == response.headers["X-Model-Version"]
    assert _top(response) == ["red", "green", "blue", "yellow"]
    assert [r["image"] for r in body["results"]] == ["red.png", "green.png", "blue.png", "yellow.png"]
    first = body["results"][0]["labels"]
    assert len(first) == 4 and first[0]["probability"] > 0.99
    assert abs(sum(s["probability"] for s in first) - 1.0) < 1e-4
    assert body["time_ms"] > 0


def test_json_base64_with_top_k_and_templates(client):
    payload = {"images": [base64.b64encode(png_bytes("blue")).decode(),
                          {"name": "g", "data": "data:image/png;base64," + base64.b64encode(png_bytes("green")).decode()}],
               "labels": ["red", "green", "blue"], "templates": ["a photo of a {}."], "top_k": 2}
    response = client.post("/v1/classify", json=payload)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["image"] for r in results] == ["image-0", "g"]
    assert [len(r["labels"]) for r in results] == [2, 2]
    assert _top(response) == ["blue", "green"]


def test_label_set_by_name(client):
    put = client.put("/v1/label-sets/colours", json={"classnames": ["yellow", "red"], "templates": ["{}"]},
                     headers={"X-API-Key": ADMIN_KEY})
    assert put.status_code == 200, put.text
    response = client.post("/v1/classify", files=[("images", ("r.png", png_bytes("red")))],
                           data={"label_set": "colours"})
    assert _top(response) == ["red"]
    assert [s["label"] for s in response.json()["results"][0]["labels"]] == ["red", "yellow"]
    missing = client.post("/v1/classify", files=[("images", ("r.png", png_bytes("red")))],
                          data={"label_set": "nope"})
    assert missing.status_code == 404 and "PUT /v1/label-sets/nope" in missing.json()["detail"]


def test_corrupt_image_is_422_naming_the_file(client):
    response = classify_files(client, ("ok.png", png_bytes("red")), ("holiday.jpg", b"\xff\xd8 not a jpeg"))
    assert response.status_code == 422
    assert "holiday.jpg" in response.json()["detail"]
    truncated = png_bytes("red", size=64)[:80]
    response = classify_files(client, ("cut.png", truncated))
    assert response.status_code == 422 and "cut.png" in response.json()["detail"]
    assert client.get("/readyz").status_code == 200  # and the service is fine afterwards


def test_request_validation_errors_say_what_to_do(client):
    both = classify_files(client, ("r.png", png_bytes("red")), label_set="x")
    assert both.status_code == 422 and "either" in both.json()["detail"]
    dup = classify_files(client, ("r.png", png_bytes("red")), labels="red,red")
    assert dup.status_code == 422 and "unique" in dup.json()["detail"]
    bad_template = classify_files(client, ("r.png", png_bytes("red")), templates="no placeholder")
    assert bad_template.status_code == 422 and "{}" in bad_template.json()["detail"]
    none = client.post("/v1/classify", data={"labels": "a,b"}, files=[("other", ("x", b"1"))])
    assert none.status_code == 422 and "at least one image" in none.json()["detail"]
    text = client.post("/v1/classify", content=b"hi", headers={"content-type": "text/plain"})
    assert text.status_code == 415
    bad_b64 = client.post("/v1/classify", json={"images": ["***"], "labels": ["a"]})
    assert bad_b64.status_code == 422 and "base64" in bad_b64.json()["detail"]


def test_limits(data_dir):
    settings = make_settings(data_dir, max_upload_bytes=20_000, max_labels=3, max_batch_images=2,
                             max_image_pixels=64 * 64)
    with running_client(settings) as client:
        big = classify_files(client, ("big.png", b"\x89PNG" + bytes(30_000)))
        assert big.status_code == 413 and "20000 bytes" in big.json()["detail"]
        assert big.headers["X-Model-Version"] == "v-colour"
        # a chunked body (no Content-Length) is counted as it arrives
        chunked = client.post("/v1/classify", content=iter([b"x" * 15_000, b"x" * 15_000]),
                              headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        pixels = classify_files(client, ("huge.png", png_bytes("red", size=65)), labels="red,blue")
        assert pixels.status_code == 413 and "huge.png" in pixels.json()["detail"]
        labels = classify_files(client, ("r.png", png_bytes("red")))
        assert labels.status_code == 422 and "4 labels" in labels.json()["detail"]
        batch = classify_files(client, *[(f"{i}.png", png_bytes("red")) for i in range(3)], labels="red,blue")
        assert batch.status_code == 422 and "split the batch" in batch.json()["detail"]



def test_every_body_is_capped_unless_its_route_opts_out(data_dir):
    """A route added without thinking about limits is still capped; the upload is the opt-out."""
    app = create_app(make_settings(data_dir, max_upload_bytes=1_000))

    @app.post("/v1/echo")
    async def echo(request: Request) -> dict:
        return {"n": len(await request.body())}

    with TestClient(app) as client:
        wait_ready(client)
        assert client.post("/v1/echo", content=b"x" * 900).json() == {"n": 900}
        big = client.post("/v1/echo", content=b"x" * 1_001)
        assert big.status_code == 413 and "1000 bytes" in big.json()["detail"]
        chunked = client.post("/v1/echo", content=iter([b"x" * 600, b"x" * 600]))
        assert chunked.status_code == 413
        # the dataset upload streams under its own cap: a 2 kB archive gets past this one
        upload = client.post("/v1/datasets?name=x", content=b"x" * 2_000,
                             headers={"content-type": "application/zip"})
        assert upload.status_code not in (413, 500), upload.text

def test_inference_key(data_dir):
    with running_client(make_settings(data_dir, inference_key=INFERENCE_KEY)) as client:
        image = ("r.png", png_bytes("red"))
        assert classify_files(client, image).status_code == 401
        assert classify_files(client, image, headers={"X-API-Key": "wrong-key-000"}).status_code == 403
        assert classify_files(client, image, headers={"X-API-Key": INFERENCE_KEY}).status_code == 200
        assert classify_files(client, image, headers={"X-API-Key": ADMIN_KEY}).status_code == 200
        assert client.get("/readyz").status_code == 200  # health stays open


BAD_TEMPLATES = ["{} {x}", "{0}{}", "{.__class__}{}", "{} {", "{{}}", "a {!r} photo", "no slot"]


def test_templates_other_than_one_plain_slot_are_422_naming_the_template(client):
    for template in BAD_TEMPLATES:
        multipart = classify_files(client, ("r.png", png_bytes("red")), templates=template)
        assert multipart.status_code == 422, (template, multipart.text)
        assert f"template {template!r}" in multipart.json()["detail"]
        as_json = client.post("/v1/classify", json={
            "images": [base64.b64encode(png_bytes("red")).decode()], "labels": ["red", "blue"],
            "templates": ["a photo of a {}.", template]})
        assert as_json.status_code == 422 and f"template {template!r}" in as_json.json()["detail"]
        stored = client.put("/v1/label-sets/odd", json={"classnames": ["red"], "templates": [template]},
                            headers={"X-API-Key": ADMIN_KEY})
        assert stored.status_code == 422 and f"template {template!r}" in stored.json()["detail"]
    assert client.get("/v1/label-sets").json() == []
    literal = classify_files(client, ("r.png", png_bytes("red")), templates="{{braces}} {}")
    assert literal.status_code == 200 and _top(literal) == ["red"]


def test_multipart_labels_must_be_strings(client):
    for labels, needle in [('[1, "red"]', "label 0 is 1 (int)"), ('["red", null]', "label 1 is None"),
                           ('["red", {"a": 1}]', "label 1 is {'a': 1} (dict)")]:
        response = classify_files(client, ("r.png", png_bytes("red")), labels=labels)
        assert response.status_code == 422, response.text
        assert "labels must be strings" in response.json()["detail"]
        assert needle in response.json()["detail"]
    long = classify_files(client, ("r.png", png_bytes("red")), labels="red," + "x" * 300)
    assert long.status_code == 422 and "label 1 ('xxx" in long.json()["detail"]
    assert "300 characters, more than the limit of 256" in long.json()["detail"]


def test_label_sets_are_capped_as_classify_is(data_dir):
    admin = {"X-API-Key": ADMIN_KEY}
    with running_client(make_settings(data_dir, max_labels=3, max_templates=2)) as client:
        many = client.put("/v1/label-sets/many", json={"classnames": ["a", "b", "c", "d"]}, headers=admin)
        assert many.status_code == 422 and "4 labels is more than the limit of 3" in many.json()["detail"]
        templates = client.put("/v1/label-sets/t", headers=admin,
                               json={"classnames": ["a"], "templates": ["{}", "a {}", "the {}"]})
        assert templates.status_code == 422
        assert "3 templates is more than the limit of 2" in templates.json()["detail"]
        # no templates means the 8 default ones, which this deployment's classify would refuse
        defaults = client.put("/v1/label-sets/d", json={"classnames": ["a"]}, headers=admin)
        assert defaults.status_code == 422 and "8 templates" in defaults.json()["detail"]
        long = client.put("/v1/label-sets/l", json={"classnames": ["a" * 257], "templates": ["{}"]},
                          headers=admin)
        assert long.status_code == 422 and "257 characters" in long.json()["detail"]
        assert client.get("/v1/label-sets").json() == []


OPEN_ROUTES = {"/livez", "/readyz"}
PATH_VALUES = {"job_id": "abcdef", "dataset_id": "abcdef", "version_id": "v-colour", "name": "x",
               "prediction_id": "abcdef"}


def test_inference_key_guards_every_read_route(data_dir):
    with running_client(make_settings(data_dir, inference_key=INFERENCE_KEY)) as client:
        reads = [path for path, ops in client.get("/openapi.json").json()["paths"].items() if "get" in ops]
        guarded = [path.format(**PATH_VALUES) for path in reads if path not in OPEN_ROUTES]
        assert {"/metrics", "/v1/models", "/v1/datasets", "/v1/jobs", "/v1/label-sets"} <= set(guarded)
        for path in guarded:
            bare = client.get(path)
            assert bare.status_code == 401, path
            assert "X-API-Key" in bare.json()["detail"]
            assert client.get(path, headers={"X-API-Key": "wrong-key-000"}).status_code == 403, path
            for key in (INFERENCE_KEY, ADMIN_KEY):
                assert client.get(path, headers={"X-API-Key": key}).status_code not in (401, 403), path
        for path in OPEN_ROUTES:
            assert client.get(path).status_code == 200


def test_labels_times_templates_are_capped_per_request(data_dir):
    with running_client(make_settings(data_dir, max_prompts=10)) as client:
        ok = classify_files(client, ("r.png", png_bytes("red")), labels="red,green",
                            templates=["{}", "a {}"])
        assert ok.status_code == 200, ok.text
        response = classify_files(client, ("r.png", png_bytes("red")), labels=COLOUR_LABELS,
                                  templates=["{}", "a {}", "the {}"])
        assert response.status_code == 413, response.text
        assert "4 labels x 3 templates = 12 prompts" in response.json()["detail"]
        assert "limit of 10" in response.json()["detail"]
        stored = client.put("/v1/label-sets/big", json={"classnames": ["a", "b", "c", "d", "e", "f"],
                                                       "templates": ["{}", "a {}"]},
                            headers={"X-API-Key": ADMIN_KEY})
        assert stored.status_code == 413 and "12 prompts" in stored.json()["detail"]


def test_head_work_for_a_disconnected_client_is_abandoned_between_chunks(data_dir):
    import asyncio

    import pytest

    from records.errors import ClientGone

    labels = [f"label {i}" for i in range(1000)]  # 8 default templates: 16 chunks of 512 prompts
    with running_client(make_settings(data_dir, max_prompts=10_000)) as client:
        classifier = client.app.state.services.classifier

        async def gone() -> bool:
            return True

        with pytest.raises(ClientGone, match=r"stopped after \d+ of 8000 prompts") as info:
            asyncio.run(classifier.classify([("r.png", png_bytes("red"))], labels=labels,
                                            disconnected=gone))
        done = int(str(info.value).split("stopped after ")[1].split(" ")[0])
        assert done < 8000
        assert classifier.batcher._incoming == 0  # the admitted image was released
        # the same labels for a client that stays: answered, and the head is cached
        response = classify_files(client, ("r.png", png_bytes("red")), labels=",".join(labels))
        assert response.status_code == 200, response.text
