"""``vilasr serve``'s budgets against slow, many or hostile clients (what a reverse proxy would do).

- :class:`GuardedH11Protocol` (uvicorn's h11 protocol with two rules): a connection must send its
  request head within ``header_timeout_s`` or it is closed; at most ``max_connections`` are open —
  when one more arrives, the oldest connection still sending its head (a slowloris) is closed to make
  room, or, when every connection is busy with a request, the new one is answered ``503`` with
  ``Retry-After`` and closed. File descriptors stay under the process limit, and ``/health`` from a
  well-behaved client gets through a flood of slow connections.
- :func:`guard_app` (pure ASGI middleware, so a client's disconnect still reaches the endpoint):
  ``Content-Length`` required on POST and checked against ``max_body_bytes`` (413); the whole body
  must arrive within ``body_timeout_s`` (408); at most ``max_uploads`` bodies are read at once
  (multipart parsing spools big parts to temp files: this caps them), more get ``503`` +
  ``Retry-After`` before a byte of their body is read.
- :class:`RateLimitFilter`: asyncio's accept errors (``EMFILE``: too many open files) are logged at
  most once a second with the count of those suppressed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import threading
import time
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass
class GuardCounters:
    """What the guards refused (``/metrics`` shows them)."""

    slow_headers_closed: int = 0
    connections_refused: int = 0
    slow_bodies: int = 0
    uploads_refused: int = 0


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one (Linux); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.debug("cannot raise the open-file limit: %s", exc)
    return soft


def guarded_protocol(max_connections: int, header_timeout_s: float, retry_after_s: int, counters: GuardCounters):
    """A uvicorn HTTP protocol class (``uvicorn.Config(http=...)``) with the two rules above."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._opened = time.monotonic()
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_timeout)
            if len(self.connections) > max_connections:
                slow = [c for c in self.connections if c is not self and getattr(c, "_head_timer", None) is not None]
                if slow:
                    victim = min(slow, key=lambda c: c._opened)
                    counters.slow_headers_closed += 1
                    victim._head_timer.cancel()
                    victim._head_timer = None
                    self.connections.discard(victim)  # gone now, not when its close completes
                    victim.transport.close()
                else:
                    counters.connections_refused += 1
                    body = json.dumps({"detail": "too many connections; retry later"}).encode()
                    transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                                    + f"retry-after: {retry_after_s}\r\ncontent-length: {len(body)}\r\n".encode()
                                    + b"connection: close\r\n\r\n" + body)
                    transport.close()

        def _head_timeout(self) -> None:
            self._head_timer = None
            counters.slow_headers_closed += 1
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._head_timer is not None and self.conn.their_state is not h11.IDLE:  # the head is complete
                self._head_timer.cancel()
                self._head_timer = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._head_timer is None and not self.transport.is_closing():  # the next request's head, too
                self._head_timer = self.loop.call_later(header_timeout_s, self._head_timeout)

        def connection_lost(self, exc) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            super().connection_lost(exc)

    return GuardedH11Protocol


def guard_app(app, *, max_body_bytes: int, body_timeout_s: float, max_uploads: int, retry_after_s: int,
              counters: GuardCounters, on_refused=None):
    """Wrap an ASGI app with the body rules above (module docstring)."""
    uploads = threading.BoundedSemaphore(max_uploads)

    async def reply(send, status: int, detail: str, headers: list | None = None) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *(headers or [])]})
        await send({"type": "http.response.body", "body": body})

    async def guarded(scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"").decode("latin-1")
        if not length.isdigit():
            if on_refused:
                on_refused()
            return await reply(send, 411, "a Content-Length header is required")
        if int(length) > max_body_bytes:
            if on_refused:
                on_refused()
            return await reply(send, 413, f"request body of {int(length)} bytes is over max_body_mb "
                                          f"({max_body_bytes / 2**20:g} MiB)")
        if not uploads.acquire(blocking=False):
            counters.uploads_refused += 1
            return await reply(send, 503, f"{max_uploads} uploads in progress; retry later",
                               [(b"retry-after", str(retry_after_s).encode())])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + body_timeout_s
        state = {"body_done": False, "released": False, "started": False}

        def release() -> None:
            if not state["released"]:
                state["released"] = True
                uploads.release()

        async def receive_within():
            if state["body_done"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.001, deadline - loop.time()))
            except asyncio.TimeoutError:
                counters.slow_bodies += 1
                raise _SlowBody from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["body_done"] = True
                release()
            return message

        async def send_tracking(message):
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await app(scope, receive_within, send_tracking)
        except _SlowBody:
            if not state["started"]:
                await reply(send, 408, f"the request body did not arrive within {body_timeout_s:g} s")
        finally:
            release()

    return guarded


class _SlowBody(Exception):
    pass


class BodyGuard:
    """:func:`guard_app` as a Starlette middleware class (``app.add_middleware(BodyGuard, ...)``)."""

    def __init__(self, app, **options):
        self._call = guard_app(app, **options)

    async def __call__(self, scope, receive, send):
        await self._call(scope, receive, send)


class RateLimitFilter(logging.Filter):
    """Let through at most one record a second whose message contains ``needle``; the next one says
    how many were suppressed."""

    def __init__(self, needle: str = "accept", period_s: float = 1.0):
        super().__init__()
        self.needle, self.period_s = needle, period_s
        self._last = 0.0
        self._suppressed = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.needle not in record.getMessage():
            return True
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.period_s:
                self._suppressed += 1
                return False
            self._last = now
            if self._suppressed:
                record.msg = f"{record.getMessage()} ({self._suppressed} more suppressed in the last second)"
                record.args = ()
                self._suppressed = 0
            record.exc_info = None  # one line, no traceback
            return True
