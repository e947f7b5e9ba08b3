"""``POST /v1/embeddings`` on the colour CLIP, whose features are known by construction
(tests/helpers/colour.py): an image's is its normalised mean colour, a colour word's its sign
pattern over sqrt(3)."""

import base64
import math
import threading

import numpy as np
import torch

from service.imaging import preprocess_images
from service import embeddings as embeddings_module
from tests.helpers import ADMIN, ADMIN_KEY, INFERENCE_KEY
from tests.helpers.colour import (
    COLOUR_CODES,
    COLOUR_LABELS,
    SOLID,
    classify_files,
    make_settings,
    png_bytes,
    running_client,
)
from zscl_core import DEFAULT_TEMPLATES, HeadCache

COLOURS = COLOUR_LABELS.split(",")


def _embed_files(client, *images, texts=(), headers=None, **data):
    files = [("images", (name, content, "image/png")) for name, content in images]
    return client.post("/v1/embeddings", files=files, data={"texts": list(texts), **data},
                       headers=headers or {})


def _vectors(items) -> torch.Tensor:
    return torch.tensor([item["embedding"] for item in items])


def _b64(colour: str) -> str:
    return base64.b64encode(png_bytes(colour)).decode()


def _colour_feature(colour: str) -> torch.Tensor:
    """The colour model's image feature by hand: the colour normalised as the transform does
    (mean 0.5, std 0.5), L2-normalised, in the first three of 32 dims."""
    feature = torch.zeros(32)
    feature[:3] = torch.tensor([c / 255 * 2 - 1 for c in SOLID[colour]])
    return feature / feature.norm()


def _word_feature(code) -> torch.Tensor:
    feature = torch.zeros(32)
    feature[:3] = torch.tensor(code, dtype=torch.float32) / math.sqrt(3)
    return feature


def test_an_image_embedding_is_the_feature_classify_ranks_with(client):
    images = [(f"{c}.png", png_bytes(c)) for c in COLOURS]
    response = _embed_files(client, *images)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["name"] for item in body["images"]] == [name for name, _ in images]
    assert body["dim"] == 32 and body["texts"] == [] and body["encoding"] == "float"
    embedded = _vectors(body["images"])
    for colour, vector in zip(COLOURS, embedded):
        assert torch.allclose(vector, _colour_feature(colour), atol=1e-5), colour
    # the served model's own image path, as the batcher's inference thread calls it
    served = client.app.state.services.holder.current
    pixels = preprocess_images(images, served.request_transform, max_pixels=10**6)
    assert torch.allclose(embedded, served.encode_images(pixels), atol=1e-5)

    ranked = classify_files(client, *images).json()["results"]
    head = served.build_head(COLOURS, DEFAULT_TEMPLATES)  # classify's head for these labels
    scores = embedded @ head
    probabilities = (served.logit_scale * scores).softmax(dim=-1)
    for result, row, probs in zip(ranked, scores, probabilities):
        assert result["labels"][0]["label"] == COLOURS[int(row.argmax())]
        for score in result["labels"]:
            assert math.isclose(score["probability"], float(probs[COLOURS.index(score["label"])]),
                                abs_tol=1e-5)


def test_a_text_embedding_is_the_row_of_a_one_template_head(client):
    response = client.post("/v1/embeddings", json={"texts": [*COLOURS, "red"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["text"] for item in body["texts"]] == [*COLOURS, "red"] and body["images"] == []
    embedded = _vectors(body["texts"])
    assert torch.allclose(embedded.norm(dim=-1), torch.ones(5), atol=1e-6)
    for colour, vector in zip(COLOURS, embedded):
        assert torch.allclose(vector, _word_feature(COLOUR_CODES[colour]), atol=1e-5), colour
    assert torch.equal(embedded[0], embedded[4])  # the same text twice, the same vector
    # the head classify builds and caches for these labels with the one template "{}"
    assert classify_files(client, ("r.png", png_bytes("red")), templates="{}").status_code == 200
    holder = client.app.state.services.holder
    head = holder.heads.get_or_build(HeadCache.key("v-colour", COLOURS, ["{}"]), _never)
    assert torch.allclose(embedded[:4], head.T, atol=1e-5)


def _never():
    raise AssertionError("the head should have been cached by classify")


def test_images_and_texts_come_from_the_served_version_together(client):
    both = _embed_files(client, ("r.png", png_bytes("red")), texts=COLOURS)
    assert both.json()["model_version"] == "v-colour" == both.headers["X-Model-Version"]
    assert client.post("/v1/models/v-swapped/activate", headers=ADMIN).status_code == 200
    swapped = _embed_files(client, ("r.png", png_bytes("red")), texts=COLOURS)
    body = swapped.json()
    assert body["model_version"] == "v-swapped" == swapped.headers["X-Model-Version"]
    # by construction a red image is "green" under v-swapped, and "blue" for any mix of versions
    scores = _vectors(body["images"]) @ _vectors(body["texts"]).T
    assert COLOURS[int(scores.argmax())] == "green"


def test_base64_is_the_float_vectors_as_little_endian_float16(client):
    payload = {"images": [_b64("yellow")], "texts": ["blue"]}
    floats = client.post("/v1/embeddings", json=payload).json()
    packed = client.post("/v1/embeddings", json={**payload, "encoding": "base64"}).json()
    assert packed["encoding"] == "base64" and packed["dim"] == floats["dim"] == 32
    for kind in ("images", "texts"):
        vector = np.asarray(floats[kind][0]["embedding"], dtype=np.float32)
        raw = base64.b64decode(packed[kind][0]["embedding"])
        assert len(raw) == 2 * 32
        decoded = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        np.testing.assert_allclose(decoded, vector, atol=1e-3)  # float16 spacing below 1: <= 2**-11
        np.testing.assert_array_equal(decoded, vector.astype(np.float16))
    multipart = _embed_files(client, ("y.png", png_bytes("yellow")), encoding="base64").json()
    assert multipart["images"][0]["embedding"] == packed["images"][0]["embedding"]


def test_multipart_and_json_forms_give_the_same_embeddings(client):
    multipart = _embed_files(client, ("r.png", png_bytes("red")), ("g.png", png_bytes("green")),
                             texts=["red", "a photo of a {}, green"]).json()
    as_json = client.post("/v1/embeddings", json={
        "images": [_b64("red"), {"name": "g", "data": "data:image/png;base64," + _b64("green")}],
        "texts": ["red", "a photo of a {}, green"]}).json()
    assert [i["name"] for i in multipart["images"]] == ["r.png", "g.png"]
    assert [i["name"] for i in as_json["images"]] == ["image-0", "g"]
    assert [t["text"] for t in multipart["texts"]] == ["red", "a photo of a {}, green"]  # verbatim
    for kind in ("images", "texts"):
        assert torch.allclose(_vectors(multipart[kind]), _vectors(as_json[kind]), atol=1e-6)


def test_inference_key(data_dir):
    with running_client(make_settings(data_dir, inference_key=INFERENCE_KEY)) as client:
        body = {"texts": ["red"]}
        bare = client.post("/v1/embeddings", json=body)
        assert bare.status_code == 401 and "X-API-Key" in bare.json()["detail"]
        wrong = client.post("/v1/embeddings", json=body, headers={"X-API-Key": "wrong-key-000"})
        assert wrong.status_code == 403
        for key in (INFERENCE_KEY, ADMIN_KEY):
            ok = client.post("/v1/embeddings", json=body, headers={"X-API-Key": key})
            assert ok.status_code == 200, ok.text


def test_requests_outside_the_limits_are_4xx_naming_the_problem(data_dir):
    settings = make_settings(data_dir, max_embed_texts=2, max_batch_images=2,
                             max_image_pixels=64 * 64)
    with running_client(settings) as client:
        def refused(response, status, needle):
            assert response.status_code == status, response.text
            assert needle in response.json()["detail"], response.json()["detail"]

        post = client.post
        refused(post("/v1/embeddings", json={}), 422, "at least one image or one text")
        refused(post("/v1/embeddings", json={"images": [], "texts": []}), 422, "at least one")
        refused(post("/v1/embeddings", data={"encoding": "float"}, files=[("other", ("x", b"1"))]),
                422, "at least one image or one text")
        refused(post("/v1/embeddings", json={"texts": ["red", "green", "blue"]}), 422,
                "3 texts is more than the limit of 2")
        refused(_embed_files(client, *[(f"{i}.png", png_bytes("red")) for i in range(3)]), 422,
                "split the batch")
        refused(_embed_files(client, ("huge.png", png_bytes("red", size=65))), 413, "huge.png")
        refused(post("/v1/embeddings", json={"texts": ["red"], "encoding": "fp16"}), 422, "encoding")
        refused(post("/v1/embeddings", data={"texts": "red", "encoding": "fp16"},
                     files=[("other", ("x", b"1"))]), 422, "encoding must be one of float, base64")
        long = " ".join(["red"] * 20)  # 22 tokens with start and end; the tiny model reads 16
        refused(post("/v1/embeddings", json={"texts": ["red", long]}), 422,
                "text 1 ('red red red")
        refused(post("/v1/embeddings", json={"texts": ["red", long]}), 422, "context of 16 tokens")
        refused(post("/v1/embeddings", json={"texts": ["  "]}), 422, "text 0 is blank")
        refused(post("/v1/embeddings", json={"texts": ["x" * 1001]}), 422,
                "1001 characters, more than the limit of 1000")
        refused(post("/v1/embeddings", json={"texts": [3]}), 422, "texts.0")
        refused(post("/v1/embeddings", content=b"red", headers={"content-type": "text/plain"}),
                415, "multipart/form-data")
        refused(post("/v1/embeddings", json={"images": ["***"]}), 422, "not valid base64")
        refused(post("/v1/embeddings", content=b'{"texts": [', headers={"content-type": "application/json"}),
                422, "invalid JSON body")
        refused(_embed_files(client, ("cut.png", png_bytes("red", size=64)[:80])), 422, "cut.png")
        assert client.get("/readyz").status_code == 200
        assert client.app.state.services.batcher._incoming == 0  # refused images freed their room
        ok = client.post("/v1/embeddings", json={"texts": ["red", "blue"]})
        assert ok.status_code == 200, ok.text


def test_metrics_count_embedded_images_and_texts(client):
    response = _embed_files(client, ("r.png", png_bytes("red")), ("b.png", png_bytes("blue")),
                            texts=["red", "green", "blue"])
    assert response.status_code == 200, response.text
    text = client.get("/metrics").text
    assert 'zscl_embedded_inputs_total{kind="image",model_version="v-colour"} 2.0' in text
    assert 'zscl_embedded_inputs_total{kind="text",model_version="v-colour"} 3.0' in text
    assert 'route="/v1/embeddings"' in text
    assert "zscl_classified_images_total{" not in text  # embedding is not classifying


def test_texts_are_encoded_on_the_embedders_own_builder_never_in_the_heads_cache(client, monkeypatch):
    threads = []
    encode = embeddings_module.encode_texts

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return encode(*args, **kwargs)

    monkeypatch.setattr(embeddings_module, "encode_texts", spy)
    services = client.app.state.services
    heads_before = len(services.holder.heads)
    first = client.post("/v1/embeddings", json={"texts": ["green", "yellow"]})
    again = client.post("/v1/embeddings", json={"texts": ["green", "yellow"]})
    assert first.status_code == again.status_code == 200
    assert first.json()["texts"] == again.json()["texts"]
    assert len(threads) == 1 and threads[0].startswith("zscl-heads")  # the repeat was cached
    assert len(services.holder.heads) == heads_before  # classify's heads are not touched
    assert services.embedder.text_builder is not services.holder.builder
