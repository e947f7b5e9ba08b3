"""ASGI middleware: request-size limit, the ``X-Model-Version`` header, and request metrics.

Pure ASGI (no BaseHTTPMiddleware) because it sits on the classify hot path.
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from records.errors import PayloadTooLarge

from ..metrics import Metrics
from ..serving import ModelHolder
from .errors import error_response, response_for

__all__ = ["ServiceMiddleware", "VERSION_HEADER"]

VERSION_HEADER = "X-Model-Version"

logger = logging.getLogger(__name__)


class ServiceMiddleware:
    """Adds ``X-Model-Version`` to every response: the version that answered a classify
    request (set by the route in ``request.state.model_version``), else the served one."""

    def __init__(self, app: ASGIApp, *, holder: ModelHolder, metrics: Metrics, max_body_bytes: int,
                 uncapped: frozenset[tuple[str, str]] = frozenset()):
        self.app = app
        self.holder = holder
        self.metrics = metrics
        self.max_body = max_body_bytes
        # every request body is capped unless its route opts out by (method, path), as the
        # dataset upload does: it streams to disk under its own, larger cap
        self.uncapped = uncapped

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is larger than the limit of {self.max_body} bytes; "
                               f"send fewer or smaller images")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        outcome = {"status": 500, "version": "none"}

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                served = self.holder.current
                version = state.get("model_version") or (served.version if served else "none")
                MutableHeaders(scope=message)[VERSION_HEADER] = version
                outcome.update(status=message["status"], version=version, started=True)
            await send(message)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise self._too_large()
            return message

        limited = (scope["method"], scope["path"].rstrip("/")) not in self.uncapped
        try:
            length = dict(scope["headers"]).get(b"content-length") if limited else None
            if length is not None and length.isdigit() and int(length) > self.max_body:
                exc = self._too_large()
                await response_for(exc)(scope, receive, send_with_version)
            else:
                await self.app(scope, limited_receive if limited else receive, send_with_version)
        except Exception:  # a bug, not a mapped error: still a JSON answer naming the version
            logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not outcome.get("started"):
                await error_response(500, "internal error; the server log has the details")(
                    scope, receive, send_with_version)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(path, scope["method"], str(outcome["status"]),
                                         outcome["version"]).inc()
            self.metrics.latency.labels(path, scope["method"], outcome["version"]).observe(elapsed)
