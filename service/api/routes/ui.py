"""The dashboard: static HTML, CSS and JavaScript under ``service/ui/``, served at ``/ui/``.

No build step and no CDN: the files are committed as they are served. The page holds no data
and no key; its scripts read and change everything through the public ``/v1`` API with the
keys the user types (kept in the tab's sessionStorage), so the page itself is open like
``/docs`` and the API's own key checks apply to every request it makes.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

__all__ = ["UI_DIR", "router"]

UI_DIR = Path(__file__).resolve().parents[2] / "ui"

# Everything the page loads comes from this origin; nothing inline, nothing from elsewhere.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                               "style-src 'self'; script-src 'self'; connect-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'self'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # revalidate every time (ETag / Last-Modified make that a 304): an upgrade is seen at once
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)
_assets = StaticFiles(directory=UI_DIR / "assets")


@router.get("/")
def root() -> RedirectResponse:
    """Send a browser that opens the bare address to the dashboard."""
    return RedirectResponse("/ui/")


@router.get("/ui")
def ui_no_slash() -> RedirectResponse:
    """Send /ui to /ui/, where the page's relative asset links resolve."""
    return RedirectResponse("/ui/")


@router.get("/ui/")
def index() -> FileResponse:
    """The dashboard page, with headers that keep it from loading anything from elsewhere."""
    return FileResponse(UI_DIR / "index.html", media_type="text/html", headers=_HEADERS)


@router.get("/ui/assets/{path:path}")
async def asset(path: str, request: Request) -> Response:
    """A file of the page (StaticFiles keeps it inside ``assets/`` and answers 304s)."""
    response = await _assets.get_response(path, request.scope)
    response.headers.update(_HEADERS)
    return response
