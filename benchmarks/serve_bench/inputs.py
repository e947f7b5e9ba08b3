"""What the benchmark serves and sends: the built-in model presets (written out as the version
the service serves), the images (read from a folder tree or generated) and the prepared multipart
requests the client replays."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

MAX_IMAGES = 512           # images read from --images (spread over its tree)
GENERATED_IMAGES = 64      # without --images
MAX_REQUESTS_PER_SET = 32  # distinct prepared requests per request size
LABELS = ["cat", "dog", "car", "tree", "house", "bird", "boat", "plane", "flower", "person"]


def _clip_cfg(image: int, patch: int, width: int, layers: int, text_width: int, text_layers: int) -> dict:
    return {"model_cfg": {
        "embed_dim": min(width, 256),
        "vision_cfg": {"image_size": image, "layers": layers, "width": width, "patch_size": patch,
                       "head_width": 32 if width <= 64 else 64},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": text_width,
                     "heads": max(2, text_width // 64), "layers": text_layers}},
        "preprocess_cfg": {"size": image, "mean": [0.5] * 3, "std": [0.5] * 3,
                           "interpolation": "bilinear", "resize_mode": "squash"}}


# Built-in architectures (random weights: speed does not depend on them).
# tiny: the tests' model, so cheap that HTTP handling dominates;
# small: ~0.6 GFLOP per image, where the model's compute dominates, as with real CLIPs.
PRESETS = {"tiny": _clip_cfg(32, 8, 64, 2, 64, 2), "small": _clip_cfg(64, 8, 256, 6, 256, 4)}


def read_images(root: Path, limit: int = MAX_IMAGES) -> list[bytes]:
    """Up to ``limit`` JPEG files from a folder tree, spread evenly over its sorted paths (so a
    ``<class>/*.jpg`` tree gives every class)."""
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        raise SystemExit(f"no .jpg files under {root}; pass a folder tree of JPEGs "
                         f"(e.g. cifar10/test) or leave --images out to generate them")
    step = max(1, len(paths) // limit)
    return [p.read_bytes() for p in paths[::step][:limit]]


def synthetic_jpegs(size: int, count: int, seed: int = 0) -> list[bytes]:
    """``count`` JPEGs of ``size`` px: smooth gradients and shapes with a little grain, so that
    they compress (and decode) like photos, not like noise."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    out = []
    for _ in range(count):
        a, b = rng.uniform(0, 255, (2, 3))
        pixels = a + (b - a) * (ramp[:, None, None] * rng.uniform(0.3, 1) + ramp[None, :, None] * rng.uniform(0, 0.7))
        image = Image.fromarray(np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 6))):
            x0, y0 = rng.uniform(0, size * 0.7, 2)
            w, h = rng.uniform(size * 0.1, size * 0.5, 2)
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape((x0, y0, x0 + w, y0 + h), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def multipart_request(host: str, images: list[bytes], labels: list[str], top_k: int = 3) -> bytes:
    """One complete HTTP/1.1 keep-alive classify request with ``images`` as repeated ``images``
    file fields, built once and replayed."""
    boundary = uuid.uuid4().hex
    parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="x{i}.jpg"\r\n'
              f"Content-Type: image/jpeg\r\n\r\n").encode() + image + b"\r\n"
             for i, image in enumerate(images)]
    for name, value in (("labels", ",".join(labels)), ("templates", "a photo of a {}."), ("top_k", str(top_k))):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    head = (f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def request_set(host: str, images: list[bytes], per_request: int) -> list[bytes]:
    """Distinct requests of ``per_request`` images each, cycling through ``images``."""
    count = max(1, min(MAX_REQUESTS_PER_SET, len(images) // per_request))
    return [multipart_request(host, [images[(j * per_request + k) % len(images)] for k in range(per_request)],
                              LABELS) for j in range(count)]


def get_request(host: str, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def materialise(model: str, pretrained: str | None, data_dir: Path) -> Path:
    """The version directory the service will serve (a preset written as a config JSON first)."""
    from records.settings import Settings
    from service.bootstrap import materialise_model

    if model in PRESETS:
        config = data_dir.parent / f"{model}-clip.json"
        config.write_text(json.dumps(PRESETS[model]))
        model = str(config)
    settings = Settings(data_dir=data_dir, model=model, pretrained=pretrained)
    settings.ensure_dirs()
    return materialise_model(settings)
