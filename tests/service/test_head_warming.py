"""Heads are built off the request path: when a label set is stored, and after a swap."""

import time

from records import registry
from tests.helpers import ADMIN
from tests.helpers.colour import COLOUR_LABELS, classify_files, png_bytes
from zscl_core import DEFAULT_TEMPLATES, HeadCache

COLOURS = COLOUR_LABELS.split(",")


def _top(response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["results"][0]["labels"][0]["label"]


def test_a_stored_label_set_is_answered_from_the_cache_on_its_first_classify(client):
    heads = client.app.state.services.holder.heads
    stored = client.put("/v1/label-sets/colours", json={"classnames": COLOURS, "templates": ["a {}"]},
                        headers=ADMIN)
    assert stored.status_code == 200, stored.text
    assert HeadCache.key("v-colour", COLOURS, ["a {}"]) in heads
    hits, misses = heads.hits, heads.misses
    files = [("images", ("r.png", png_bytes("red"), "image/png"))]
    answer = client.post("/v1/classify", files=files, data={"label_set": "colours"})
    assert _top(answer) == "red"
    assert (heads.hits, heads.misses) == (hits + 1, misses)
    assert 'zscl_head_build_seconds_count{cause="label_set"} 1.0' in client.get("/metrics").text


def test_a_label_set_whose_head_cannot_be_built_is_not_stored(client, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(client.app.state.services.holder.current, "build_head", out_of_memory)
    failed = client.put("/v1/label-sets/doomed", json={"classnames": COLOURS}, headers=ADMIN)
    assert failed.status_code == 500
    assert client.get("/v1/label-sets/doomed").status_code == 404


def test_a_swap_rebuilds_the_used_heads_for_the_new_version(client):
    services = client.app.state.services
    heads = services.holder.heads
    assert _top(classify_files(client, ("r.png", png_bytes("red")))) == "red"

    # admin activation: the heads are rebuilt before the call returns
    assert client.post("/v1/models/v-swapped/activate", headers=ADMIN).status_code == 200
    assert HeadCache.key("v-swapped", COLOURS, DEFAULT_TEMPLATES) in heads
    hits, misses = heads.hits, heads.misses
    assert _top(classify_files(client, ("r.png", png_bytes("red")))) == "green"  # v-swapped's head
    assert (heads.hits, heads.misses) == (hits + 1, misses)

    # the worker's way: the pointer moves in the database and reconcile swaps in the background
    assert _top(classify_files(client, ("r.png", png_bytes("red")), labels="red,blue")) == "blue"
    with services.sessions() as session:
        assert registry.activate(session, "v-colour", expected_current="v-swapped")
    rebuilt = HeadCache.key("v-colour", ["red", "blue"], DEFAULT_TEMPLATES)
    deadline = time.monotonic() + 10
    while rebuilt not in heads:
        assert time.monotonic() < deadline, "no head rebuilt for v-colour after the swap back"
        time.sleep(0.02)
    hits, misses = heads.hits, heads.misses
    answer = classify_files(client, ("r.png", png_bytes("red")), labels="red,blue")
    assert answer.json()["model_version"] == "v-colour" and _top(answer) == "red"
    assert (heads.hits, heads.misses) == (hits + 1, misses)
    assert 'zscl_head_build_seconds_count{cause="swap"} 2.0' in client.get("/metrics").text
