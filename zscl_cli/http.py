"""What every client subcommand shares: the server URL, the admin key, and one request helper
that turns HTTP errors into the server's own message."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["load_settings", "base_url", "admin_headers", "request", "call", "client_args"]


def load_settings():
    """The ``ZSCL_*`` settings, for the server's address and the database a command uses."""
    from records.settings import Settings
    return Settings()


def base_url(args) -> str:
    """The server a client command talks to: --url, else ZSCL_HOST and ZSCL_PORT."""
    if args.url:
        return args.url.rstrip("/")
    settings = load_settings()
    return f"http://{settings.host}:{settings.port}"


def admin_headers(args) -> dict[str, str]:
    """The X-API-Key header from --key or ZSCL_ADMIN_KEY; none without a key."""
    key = args.key or os.environ.get("ZSCL_ADMIN_KEY")
    return {"X-API-Key": key} if key else {}


def request(method: str, url: str, **kwargs):
    """Send one HTTP request; exit with the server's message on an error, or a hint if none answers."""
    import httpx
    try:
        response = httpx.request(method, url, timeout=120, **kwargs)
    except httpx.ConnectError:
        sys.exit(f"no zscl server answers at {url}; start one with `zscl serve` or pass --url")
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        if isinstance(detail, list):  # request validation: one line per field
            detail = "; ".join(f"{'.'.join(map(str, e.get('loc', [])[1:]))}: {e.get('msg')}"
                               for e in detail)
        sys.exit(f"HTTP {response.status_code}: {detail}")
    return response


def client_args(parser: argparse.ArgumentParser) -> None:
    """Add the options every client subcommand takes: --url and --key."""
    parser.add_argument("--url", help="server URL (default http://ZSCL_HOST:ZSCL_PORT)")
    parser.add_argument("--key", help="API key (default $ZSCL_ADMIN_KEY)")


def call(args, method: str, path: str, **kwargs):
    """``request`` against the server ``args`` names, with its key (admin or read) if any."""
    headers = {**admin_headers(args), **kwargs.pop("headers", {})}
    return request(method, f"{base_url(args)}{path}", headers=headers, **kwargs)
