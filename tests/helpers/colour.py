"""The colour CLIP: a tiny CLIP whose answers are fixed by construction, and apps serving it.

``make_colour_clip`` sets the tiny model's weights by hand so that
- an image's feature is its mean normalised colour (r, g, b): the patch embedding reads the
  colour, every transformer block is an identity except one uniform attention that pools the
  patches into the class token;
- a text's feature is its colour word's (r, g, b) sign pattern: the word's token embedding,
  pooled into the end-of-text token the same way.
So a red image scores highest against "red" among red/green/blue/yellow, by construction.

The second version, 'v-swapped', differs on BOTH towers: its image tower reads the red and blue
channels exchanged, and its words carry other codes (red->yellow's, green->blue's, blue->red's,
yellow->green's). A red image is then "green" under v-swapped, and "blue" whenever a request
mixed one version's image features with the other's text head: a mix cannot go unnoticed.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
import time
from pathlib import Path

import httpx
import torch
from fastapi.testclient import TestClient
from PIL import Image

from records.settings import Settings
from service.app import create_app
from tests.helpers import ADMIN_KEY
from tests.helpers.processes import (REQUEST_TIMEOUT_S, START_DEADLINE_S, STOP_DEADLINE_S, free_port,
                                     wait_until)
from tests.helpers.synthetic import write_tiny_config
from zscl_cli.main import GRACEFUL_SHUTDOWN_S
from zscl_core import load_model, save_version

COLOUR_LABELS = "red,green,blue,yellow"

# sign patterns in normalised colour space (mean 0.5, std 0.5 per channel)
COLOUR_CODES = {"red": (1, -1, -1), "green": (-1, 1, -1), "blue": (-1, -1, 1), "yellow": (1, 1, -1)}
SWAPPED_CODES = {"red": COLOUR_CODES["yellow"], "green": COLOUR_CODES["blue"],
                 "blue": COLOUR_CODES["red"], "yellow": COLOUR_CODES["green"]}
SOLID = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230), "yellow": (230, 230, 20)}


def _identity_blocks(transformer, pool_block: int) -> None:
    """Blocks add nothing, except ``pool_block`` whose attention averages (q = k = 0) the
    layer-normed tokens each position may see and adds that average to the residual."""
    for index, block in enumerate(transformer.resblocks):
        attn = block.attn
        width = attn.embed_dim
        attn.in_proj_weight.zero_()
        attn.in_proj_bias.zero_()
        attn.out_proj.bias.zero_()
        block.mlp.c_proj.weight.zero_()
        block.mlp.c_proj.bias.zero_()
        if index == pool_block:
            attn.in_proj_weight[2 * width:].copy_(torch.eye(width))  # V = identity
            attn.out_proj.weight.copy_(torch.eye(width))
        else:
            attn.out_proj.weight.zero_()


def _code_vector(width: int, code) -> torch.Tensor:
    """(c, -c, 0...) in dims (0..2, 3..5): zero-mean, so layer norms only rescale it."""
    vec = torch.zeros(width)
    vec[:3] = torch.tensor(code, dtype=torch.float32)
    vec[3:6] = -vec[:3]
    return vec


@torch.no_grad()
def make_colour_clip(config_path, codes: dict[str, tuple[int, int, int]] = COLOUR_CODES,
                     image_channels: tuple[int, int, int] = (0, 1, 2)):
    """The colour model; ``codes`` gives each word's code, ``image_channels`` the RGB channel
    each of the image feature's three colour dims reads."""
    torch.manual_seed(0)
    loaded = load_model(config_path)
    model = loaded.model
    visual, width = model.visual, model.visual.conv1.out_channels
    # image: patch embedding = mean colour of the patch, in dims 0..2 and negated in 3..5
    kernel = visual.conv1.weight
    kernel.zero_()
    area = kernel.shape[-1] * kernel.shape[-2]
    for dim, channel in enumerate(image_channels):
        kernel[dim, channel] = 1.0 / area
        kernel[3 + dim, channel] = -1.0 / area
    visual.class_embedding.zero_()
    visual.positional_embedding.zero_()
    _identity_blocks(visual.transformer, pool_block=0)
    visual.proj.zero_()
    for dim in range(3):
        visual.proj[dim, dim] = 1.0
        visual.proj[3 + dim, dim] = -1.0
    # text: only colour words have an embedding; it reaches the end-of-text token by pooling
    text_width = model.token_embedding.weight.shape[1]
    model.token_embedding.weight.zero_()
    model.positional_embedding.zero_()
    for word, code in codes.items():
        token = int(loaded.tokenizer([word])[0, 1])
        model.token_embedding.weight[token] = _code_vector(text_width, code)
    _identity_blocks(model.transformer, pool_block=0)
    model.text_projection.zero_()
    for dim in range(3):
        model.text_projection[dim, dim] = 1.0
        model.text_projection[3 + dim, dim] = -1.0
    model.logit_scale.fill_(math.log(20.0))
    return loaded


def png_bytes(colour: str | tuple[int, int, int], size: int = 32) -> bytes:
    rgb = SOLID[colour] if isinstance(colour, str) else colour
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def write_colour_versions(root: Path) -> Path:
    """A tiny config and a version store under ``root`` with two colour models: 'v-colour' (a red
    image is "red") and 'v-swapped' (a red image is "green")."""
    config = write_tiny_config(root)
    versions = root / "versions"
    plain = make_colour_clip(config)
    swapped = make_colour_clip(config, SWAPPED_CODES, image_channels=(2, 1, 0))
    save_version(versions, plain.model, plain.spec, version_id="v-colour", metadata={"source": "test"})
    save_version(versions, swapped.model, swapped.spec, parent="v-colour", version_id="v-swapped",
                 metadata={"method": "test-swap", "metrics": {"acc": 0.0}})
    return root


def make_settings(data_dir, **overrides) -> Settings:
    values = dict(data_dir=data_dir, model=str(data_dir / "versions" / "v-colour"), admin_key=ADMIN_KEY,
                  reconcile_interval_s=0.2, batch_max_wait_ms=2.0, torch_threads=1)
    values.update(overrides)
    return Settings(**values)


def wait_ready(client, timeout_s: float = START_DEADLINE_S):
    """The app's /readyz answer once it is 200 (its model loaded and warmed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get("/readyz")
        if response.status_code == 200:
            return response
        time.sleep(0.05)
    raise AssertionError(f"not ready after {timeout_s}s: {response.json()}")


@contextlib.contextmanager
def running_client(settings: Settings):
    """A TestClient of a started app (lifespan run, model loaded)."""
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


def classify_files(client, *images: tuple[str, bytes], labels: str = COLOUR_LABELS, headers=None, **data):
    files = [("images", (name, data_, "image/png")) for name, data_ in images]
    return client.post("/v1/classify", files=files, data={"labels": labels, **data}, headers=headers or {})


def _answers_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=REQUEST_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def live_app(app):
    """A real uvicorn server of ``app`` on a free port, in a thread, ready (model loaded);
    yields its URL. It stops as `zscl serve` does (what is still in flight, an event stream a
    browser left open, say, gets GRACEFUL_SHUTDOWN_S), so one still running long after is hung."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers_ready(url), START_DEADLINE_S, 0.05, "the app ready")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=STOP_DEADLINE_S)
        assert not thread.is_alive(), f"the server at {url} still running {STOP_DEADLINE_S}s after its stop"


@contextlib.contextmanager
def live_server(settings: Settings):
    """:func:`live_app` of the app made from ``settings``; yields its URL."""
    with live_app(create_app(settings)) as url:
        yield url
