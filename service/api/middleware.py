"""ASGI middleware: request-size limit, slow-body timeout, the ``X-Model-Version`` header, and
request metrics.

Pure ASGI (no BaseHTTPMiddleware) because it sits on the classify hot path. A client that closes
its connection before its whole body arrived is recorded as 499 (nginx's "client closed
request") with one log line: nobody is there to read an answer, and it is no server error. A body
that keeps the app waiting longer than its budget (Apache's mod_reqtimeout: a grace period plus
one second per ``min_rate`` bytes received) is given up as if the client had left, and answered
408 with the connection closed: a slowloris sending a byte a second cannot hold a request open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from records.errors import PayloadTooLarge

from ..metrics import Metrics
from ..serving import ModelHolder
from .errors import error_response, response_for

__all__ = ["ServiceMiddleware", "BodyTimeout", "VERSION_HEADER"]

VERSION_HEADER = "X-Model-Version"
CLIENT_CLOSED = 499
REQUEST_TIMEOUT = 408

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BodyTimeout:
    """A request body may keep the app waiting ``grace_s`` in all, plus one second per
    ``min_rate`` bytes it brought."""
    grace_s: float
    min_rate: float


class _Body:
    """One request's ``receive``: counts the body, caps it, notices a client gone mid-body,
    and gives up on a body slower than its :class:`BodyTimeout`."""

    def __init__(self, receive: Receive, cap: int | None, timeout: BodyTimeout | None, too_large):
        self._receive, self.cap, self.timeout, self._too_large = receive, cap, timeout, too_large
        self.received = 0
        self.waited = 0.0
        self.done = False
        self.gone = False   # the client left before its whole body came
        self.slow = False   # ... or was too slow, and is answered 408

    async def receive(self) -> Message:
        if self.done or self.timeout is None:
            message = await self._receive()
        else:
            message = await self._receive_in_time(self.timeout)
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.done = not message.get("more_body", False)
            if self.cap is not None and self.received > self.cap:
                raise self._too_large()
        elif message["type"] == "http.disconnect" and not self.done:
            self.gone = True  # whatever the app makes of a cut body, nobody reads it
        return message

    async def _receive_in_time(self, timeout: BodyTimeout) -> Message:
        budget = timeout.grace_s + self.received / timeout.min_rate - self.waited
        began = time.monotonic()
        try:
            async with asyncio.timeout(max(budget, 0.0)):
                return await self._receive()
        except TimeoutError:
            self.slow = True
            return {"type": "http.disconnect"}  # the app stops reading, as for a client gone
        finally:
            self.waited += time.monotonic() - began


class ServiceMiddleware:
    """Adds ``X-Model-Version`` to every response: the version that answered a classify
    request (set by the route in ``request.state.model_version``), else the served one."""

    def __init__(self, app: ASGIApp, *, holder: ModelHolder, metrics: Metrics, max_body_bytes: int,
                 uncapped: frozenset[tuple[str, str]] = frozenset(),
                 body_timeout: BodyTimeout | None = None):
        self.app = app
        self.holder = holder
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.body_timeout = body_timeout
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
        limited = (scope["method"], scope["path"].rstrip("/")) not in self.uncapped
        body = _Body(receive, self.max_body if limited else None, self.body_timeout, self._too_large)

        async def send_with_version(message: Message) -> None:
            if (body.gone or body.slow) and not outcome.get("started"):
                return  # the app's answer to a cut body: nobody reads it, or ours (408) replaces it
            if message["type"] == "http.response.start":
                served = self.holder.current
                version = state.get("model_version") or (served.version if served else "none")
                MutableHeaders(scope=message)[VERSION_HEADER] = version
                outcome.update(status=message["status"], version=version, started=True)
            await send(message)

        try:
            length = dict(scope["headers"]).get(b"content-length") if limited else None
            if length is not None and length.isdigit() and int(length) > self.max_body:
                exc = self._too_large()
                await response_for(exc)(scope, receive, send_with_version)
            else:
                await self.app(scope, body.receive, send_with_version)
        except ClientDisconnect:  # starlette's: the client left (or was too slow) mid-body
            body.gone = body.gone or not body.slow
        except Exception:  # a bug, not a mapped error: still a JSON answer naming the version
            if not (body.gone or body.slow):  # else a parser choked on the cut body: not a bug
                logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
                if not outcome.get("started"):
                    await error_response(500, "internal error; the server log has the details")(
                        scope, receive, send_with_version)
        finally:
            status = self._settle(scope, body, outcome)
            if body.slow and not outcome.get("started"):
                await self._request_timeout(scope, receive, send)
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(path, scope["method"], str(status), outcome["version"]).inc()
            self.metrics.latency.labels(path, scope["method"], outcome["version"]).observe(elapsed)

    def _settle(self, scope: Scope, body: _Body, outcome: dict) -> int:
        """The status to record; one log line for a body that never came whole."""
        if outcome.get("started"):  # the app answered before giving up on the body
            return outcome["status"]
        if body.slow:
            logger.warning("%s %s: the body came too slowly (%d bytes in %.1f s of waiting); "
                           "answered %d and closed", scope["method"], scope["path"], body.received,
                           body.waited, REQUEST_TIMEOUT)
            return REQUEST_TIMEOUT
        if body.gone:
            logger.info("%s %s: client disconnected after %d body bytes; nothing answered (%d)",
                        scope["method"], scope["path"], body.received, CLIENT_CLOSED)
            return CLIENT_CLOSED
        return outcome["status"]

    async def _request_timeout(self, scope: Scope, receive: Receive, send: Send) -> None:
        timeout = self.body_timeout
        response = error_response(REQUEST_TIMEOUT, f"the request body came too slowly: send it "
                                  f"within {timeout.grace_s:g} s plus 1 s per {timeout.min_rate:g} "
                                  f"bytes", headers={"Connection": "close"})
        await response(scope, receive, send)
