"""The HTTP limits a reverse proxy would set, for `zscl serve` with none in front of it.

uvicorn's default parser (httptools) bounds neither the request head nor the time it may take:
one 150 MB header made /readyz take 24 s (httptools joins a header's pieces with ``+=`` as they
come, in the event loop),
and a client sending a byte a second kept its connection forever. Its h11 parser does bound the
head (``h11_max_incomplete_event_size``) but answered /livez at 4.7-4.8k req/s against httptools'
7.4-7.6k (`benchmarks.serve_bench --model tiny`, 2 CPUs): so httptools, guarded here, at no
measurable cost (alternating runs: 7.0-7.5k req/s without the guard, 7.3k with it).

:class:`LimitedHttpToolsProtocol` refuses, before the app sees the request,
- a head (request line and headers) over ``max_head_bytes``: 431;
- more than ``max_headers`` header fields: 431;
- a request target over ``max_target_bytes``: 414;
- a head still incomplete ``head_timeout_s`` after the connection opened or, on a kept-alive
  connection, after its first byte: 408 (a connection that sent nothing is closed silently).
Each answer closes the connection. A slow body is the app's to time out, as only it knows when it
waits for one (``service.api.middleware``).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

__all__ = ["HttpLimits", "LimitedHttpToolsProtocol", "uvicorn_options"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpLimits:
    """The caps :class:`LimitedHttpToolsProtocol` puts on a request head (the ZSCL_HTTP_* settings)."""

    max_head_bytes: int
    max_headers: int
    max_target_bytes: int
    head_timeout_s: float

    @classmethod
    def from_settings(cls, settings) -> HttpLimits:
        """The limits ``zscl serve`` runs with: the ``http_*`` fields of ``settings`` (ZSCL_HTTP_*)."""
        return cls(max_head_bytes=settings.http_max_head_bytes, max_headers=settings.http_max_headers,
                   max_target_bytes=settings.http_max_target_bytes,
                   head_timeout_s=settings.http_head_timeout_s)


def uvicorn_options(settings) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` that set the limits of ``settings``. The protocol
    is a ``functools.partial`` of a module-level class: it pickles, so uvicorn's spawned API
    processes (``workers=N``) get the same limits."""
    return {"http": functools.partial(LimitedHttpToolsProtocol, limits=HttpLimits.from_settings(settings)),
            "timeout_keep_alive": settings.http_keepalive_timeout_s,
            "limit_concurrency": settings.http_max_connections}


class _Refused(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`HttpLimits` (see the module docstring)."""

    def __init__(self, *args: Any, limits: HttpLimits, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.limits = limits
        # bytes of the head in progress; a read that starts outside a head (the tail of a body
        # and the next head, pipelined) is not counted, so a head may pass the cap by one read,
        # never be refused under it
        self._in_head = True
        self._head_bytes = 0
        self._head_begun = False  # a request's first byte came, its headers not all yet
        self._head_timer = None

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport) -> None:  # type: ignore[override]
        """Start the head timer: a new connection must send its first head in time."""
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the head timer, then let uvicorn clean up."""
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's own, plus the count of a head's bytes and the answer to a callback's refusal."""
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:  # a refusal raised by a callback arrives so too
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self._refuse(refused.status, refused.reason)
            else:
                self._refuse(400, "invalid HTTP request")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head and self._head_bytes > self.limits.max_head_bytes:
            self._refuse(431, f"the request line and headers are over {self.limits.max_head_bytes} bytes")

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        """A request's first byte: time its head (on a kept-alive connection too)."""
        super().on_message_begin()
        self._head_begun = True
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        """Refuse a request target over ``max_target_bytes`` (414)."""
        super().on_url(url)
        if len(self.url) > self.limits.max_target_bytes:
            raise _Refused(414, f"the request target is over {self.limits.max_target_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        """Refuse more than ``max_headers`` header fields (431)."""
        super().on_header(name, value)
        if len(self.headers) > self.limits.max_headers:
            raise _Refused(431, f"more than {self.limits.max_headers} header fields")

    def on_headers_complete(self) -> None:
        """The head is complete: stop counting and timing it, then hand the request on."""
        self._in_head, self._head_bytes, self._head_begun = False, 0, False
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The request is done: the next bytes begin a new head, counted from zero."""
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()

    # -- refusals -----------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if not self._head_begun:  # an idle connection: no request to answer
            self.transport.close()
            return
        self._refuse(408, f"the request line and headers did not arrive within "
                          f"{self.limits.head_timeout_s:g} s")

    def _refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` with ``reason`` and close the connection."""
        self._disarm_head_timer()
        logger.warning("%s: %d, %s; connection closed", self._peer(), status, reason)
        body = reason.encode()
        self.transport.write(b"".join([
            STATUS_LINE[status], b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: ", str(len(body)).encode(), b"\r\n", b"connection: close\r\n\r\n", body]))
        self.transport.close()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "client"
