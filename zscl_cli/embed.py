"""``zscl embed``: image and text embeddings from a running server (``POST /v1/embeddings``)."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

from . import http

__all__ = ["add_embed"]

SHOWN_VALUES = 4  # values printed per embedding without --json


def _values(embedding: list[float] | str) -> list[float]:
    """A float list, or base64 little-endian float16 bytes (``--encoding base64``)."""
    if isinstance(embedding, str):
        data = base64.b64decode(embedding)
        return list(struct.unpack(f"<{len(data) // 2}e", data))
    return embedding


def _line(label: str, embedding: list[float] | str) -> str:
    values = _values(embedding)
    shown = ", ".join(f"{v:.4f}" for v in values[:SHOWN_VALUES])
    more = ", ..." if len(values) > SHOWN_VALUES else ""
    return f"{label}: dim {len(values)} [{shown}{more}]"


def cmd_embed(args) -> int:
    """``zscl embed``: print a running server's embeddings of image files and texts."""
    if not args.images and not args.text:
        raise SystemExit("give at least one image file or one --text to embed")
    if args.images:  # multipart: the image files as they are
        files = [("images", (Path(p).name, Path(p).read_bytes())) for p in args.images]
        response = http.call(args, "POST", "/v1/embeddings", files=files,
                             data={"texts": args.text or [], "encoding": args.encoding})
    else:
        response = http.call(args, "POST", "/v1/embeddings",
                             json={"texts": args.text, "encoding": args.encoding})
    body = response.json()
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    print(f"model version {body['model_version']} ({body['time_ms']:.1f} ms), dim {body['dim']}")
    for image in body["images"]:
        print(_line(image["name"], image["embedding"]))
    for text in body["texts"]:
        print(_line(f"text {text['text']!r}", text["embedding"]))
    return 0


def add_embed(subparsers) -> None:
    """Register ``zscl embed`` on the ``zscl`` parser."""
    p = subparsers.add_parser("embed", help="image and text embeddings from a running server")
    p.add_argument("images", nargs="*", help="image files")
    p.add_argument("--text", action="append", metavar="TEXT",
                   help="a text to embed as it is, no template (repeatable)")
    p.add_argument("--encoding", choices=["float", "base64"], default="float",
                   help="how the server sends each vector: float32 lists, or base64 of "
                        "little-endian float16 bytes (half the size, ~3 significant digits)")
    p.add_argument("--json", action="store_true", help="print the server's JSON answer")
    http.client_args(p)
    p.set_defaults(func=cmd_embed)
