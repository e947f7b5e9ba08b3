"""A multipart batch over ``max_batch_images`` (64 by default) is refused with one message,
whether the route's own count sees it (65 images) or starlette's parser stops first (80: it
reads at most 65 file parts) — it once said "Maximum number of files is 65" to a user who can
send 64."""

import pytest

from tests.helpers.colour import COLOUR_LABELS, png_bytes

LIMIT = 64  # records.settings.Settings.max_batch_images, as the client fixture leaves it
SAID = f"more than {LIMIT} images in one request; the limit is {LIMIT} per request: split the batch"
IMAGE = png_bytes("red", size=8)


def _post(client, route: str, n_images: int):
    files = [("images", (f"{i}.png", IMAGE, "image/png")) for i in range(n_images)]
    data = {"labels": COLOUR_LABELS} if route == "/v1/classify" else {"texts": ["red"]}
    return client.post(route, files=files, data=data)


@pytest.mark.parametrize("route", ["/v1/classify", "/v1/embeddings"])
def test_over_the_limit_says_the_limit_however_far_over(client, route):
    assert client.app.state.services.settings.max_batch_images == LIMIT
    for n_images in (LIMIT + 1, LIMIT + 2, 80, 500):
        response = _post(client, route, n_images)
        assert response.status_code == 422, (n_images, response.text)
        assert response.json()["detail"] == SAID, n_images
    assert "Maximum number of files" not in _post(client, route, 80).text


@pytest.mark.parametrize("route", ["/v1/classify", "/v1/embeddings"])
def test_the_limit_itself_is_served(client, route):
    response = _post(client, route, LIMIT)
    assert response.status_code == 200, response.text
    body = response.json()
    answers = body["results"] if route == "/v1/classify" else body["images"]
    assert len(answers) == LIMIT
    if route == "/v1/classify":
        assert {r["labels"][0]["label"] for r in answers} == {"red"}
