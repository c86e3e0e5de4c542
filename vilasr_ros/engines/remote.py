"""The ``remote`` engine: a ``vilasr serve`` runs the loop beside the model; the robot sends its
frames once per query and replays the streamed turns.

At the first turn of a query the engine posts the input images (already ``smart_resize``-d by the
robot's :class:`~vilasr_ros.reasoner.Reasoner`, so the server leaves them as they are — lossless PNG
by default, JPEG q95 with ``image_format="jpeg"`` for slow links) and the query with its loop
settings to ``/v1/queries?stream=true``. The server's loop streams each model turn as a server-sent
event; :meth:`RemoteEngine.generate` hands them to the robot's own loop one by one, which draws the
same images and builds the same conversation — the robot's trace is the one a local run of the
server's engine gives, and grounding (depth, poses) never leaves the robot. Later turns send nothing.

Every wait has a deadline: ``timeout_s`` for each turn (the server's model call plus its part of the
stream) and for the reply's headers (a server that drips them is cut off by the wall clock, not by
the socket's idle timeout); every reply is read with a byte cap (an error body or ``/health``:
:data:`MAX_ERROR_BYTES`; one streamed event: :data:`MAX_EVENT_BYTES`); a server that stops answering, goes away mid-query or refuses the query (401, 429 busy with
``Retry-After``, 4xx) is an :class:`~vilasr_ros.errors.EngineError` naming it. Closing the stream
(the next query, ``reset``, ``close``) cancels the query on the server.

JPEG q95 of a 644×476 sim frame differs from the PNG by about 1–2 grey levels on average (PSNR ~40 dB);
drawn lines are then drawn on the JPEG-decoded frames, so traces differ from a PNG run.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from vilasr_ros.engines.base import Engine, GenerationRequest, GenerationResult
from vilasr_ros.errors import ConfigError, EngineError, EngineUnavailableError, require
from vilasr_ros.sanitize import redact, redact_url

logger = logging.getLogger(__name__)
FORMATS = {"png": ("PNG", "image/png", {"compress_level": 1}), "jpeg": ("JPEG", "image/jpeg", {"quality": 95})}


@dataclass(frozen=True)
class RemoteConfig:
    """Settings of the ``remote`` engine.

    Attributes:
        base_url: The ``vilasr serve`` root, e.g. ``http://gpu:8080``.
        token_env: Environment variable holding its bearer token (unset: no token sent).
        timeout_s: Deadline for each turn to arrive (connect + upload for the first).
        image_format: ``png`` (lossless, the default) or ``jpeg`` (q95, for slow links).
        deadline_s: The query's deadline on the server (None: the server's default).
    """

    base_url: str = ""
    token_env: str = "VILASR_SERVE_TOKEN"
    timeout_s: float = 300.0
    image_format: str = "png"
    deadline_s: float | None = None

    def __post_init__(self):
        if not str(self.base_url).startswith(("http://", "https://")):
            raise ConfigError("the remote engine needs --base-url of a vilasr serve, e.g. http://gpu:8080")
        if not self.timeout_s > 0 or (self.deadline_s is not None and not self.deadline_s > 0):
            raise ConfigError("timeout_s and deadline_s must be > 0")
        if self.image_format not in FORMATS:
            raise ConfigError(f"image_format must be one of {', '.join(FORMATS)}, got {self.image_format!r}")


def encode_frame(image, image_format: str = "png") -> bytes:
    fmt, _, kwargs = FORMATS[image_format]
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


MAX_ERROR_BYTES = 64 * 1024
"""An error reply (or ``/health``) is read up to this many bytes; the rest is never read."""
MAX_EVENT_BYTES = 16 * 2**20
"""One server-sent event at most (a turn's text is ~100 KB; drawn images travel only on request)."""
_CALLS = ThreadPoolExecutor(16, thread_name_prefix="vilasr-remote-http")
"""HTTP calls run here so a wall-clock deadline covers the whole exchange, headers included (a server
that drips its headers keeps a worker, never the caller; at most 16 such workers)."""


def _within(deadline_s: float, what: str, call, *args, **kwargs):
    """``call(*args, **kwargs)`` on a worker, waited for at most ``deadline_s`` seconds.

    Raises:
        EngineUnavailableError: Not done by then (``what`` names the server).
    """
    future = _CALLS.submit(call, *args, **kwargs)
    try:
        return future.result(timeout=deadline_s)
    except FutureTimeout:
        future.add_done_callback(_close_late)
        raise EngineUnavailableError(f"{what} sent no complete reply headers within {deadline_s:g} s") from None


def _close_late(future) -> None:
    """A response that arrived after its deadline is closed, not leaked."""
    if not future.cancelled() and future.exception() is None and hasattr(future.result(), "close"):
        future.result().close()


def bounded_body(response, cap: int = MAX_ERROR_BYTES) -> bytes:
    """At most ``cap`` bytes of a streamed ``requests`` response body; the response is closed."""
    try:
        return response.raw.read(cap, decode_content=True) or b""
    except Exception:  # noqa: BLE001 - a body that breaks mid-read: what arrived is enough
        return b""
    finally:
        response.close()


def sse_events(response, cap: int = MAX_EVENT_BYTES):
    """``(event, data)`` of a ``text/event-stream``, read in chunks; an event over ``cap`` bytes raises
    EngineError instead of growing without bound."""
    buffer = b""
    kind, data = None, []
    for chunk in response.iter_content(chunk_size=65536):
        buffer += chunk
        if len(buffer) > cap:
            raise EngineError(f"a server-sent event larger than {cap} bytes (cut off)")
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and kind:
                yield kind, "\n".join(data)
                kind, data = None, []


def detect_server(base_url: str, timeout_s: float = 3.0) -> str | None:
    """``"remote"`` when ``base_url`` answers ``/health`` as a ``vilasr serve`` within ``timeout_s``
    (headers and a body of at most :data:`MAX_ERROR_BYTES`), else None (an OpenAI-compatible server,
    or nothing answering in time)."""
    try:
        requests = require("requests", "remote")
        root = base_url.rstrip("/")
        response = _within(timeout_s, root, requests.get, f"{root}/health", timeout=timeout_s, stream=True)
        if response.ok and response.headers.get("content-type", "").startswith("application/json"):
            body = _within(timeout_s, root, bounded_body, response)
            if json.loads(body).get("service") == "vilasr-serve":
                return "remote"
        response.close()
    except Exception:  # noqa: BLE001 - detection is best effort; the openai engine is the fallback
        return None
    return None


class RemoteEngine(Engine):
    """A ``vilasr serve`` (see the module docstring).

    Args:
        config: A :class:`RemoteConfig`, or its ``base_url``.
        **options: :class:`RemoteConfig` fields, over those of ``config``.

    Raises:
        ConfigError: Bad settings.
        MissingDependencyError: ``requests`` missing (the ``remote`` extra).
    """

    name = "remote"
    config_class = RemoteConfig
    max_concurrency = 16  # one stream per query; the server queues and batches

    primary_option = "base_url"

    def __init__(self, config: RemoteConfig | str | None = None, /, **options: Any):
        self.config = self.resolve_config(config, options)
        self.requests = require("requests", "remote")
        self.base_url = self.config.base_url.rstrip("/")
        self._local = threading.local()
        self.bytes_sent = 0

    # one open query stream per thread (the agent runs one query at a time; eval may run several)
    @property
    def _state(self) -> dict[str, Any]:
        if not hasattr(self._local, "state"):
            self._local.state = {"response": None, "events": None, "done": 0}
        return self._local.state

    def reset(self) -> None:
        self._close()

    def finish(self) -> None:
        self._close()

    def close(self) -> None:
        self._close()

    def _close(self) -> None:
        state = self._state
        response = state.get("response")
        state.update(response=None, events=None, done=0)
        if response is not None:
            try:
                response.close()  # the server sees the client go away and cancels the query
            except Exception as exc:  # noqa: BLE001 - a broken stream is closed either way
                logger.debug("closing the stream: %s", exc)

    def _headers(self) -> dict[str, str]:
        token = os.environ.get(self.config.token_env or "")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _open(self, request: GenerationRequest) -> None:
        if request.query is None:
            raise EngineError("the remote engine needs the query (run it through vilasr_ros.reasoner.Reasoner)")
        query = dict(request.query)
        if self.config.deadline_s is not None:
            query["deadline_s"] = self.config.deadline_s
        _, mime, _ = FORMATS[self.config.image_format]
        files = [("frames", (f"frame_{k:03d}.{self.config.image_format}", encode_frame(im, self.config.image_format), mime))
                 for k, im in enumerate(request.images)]
        self.bytes_sent += sum(len(f[1][1]) for f in files)
        url = f"{self.base_url}/v1/queries"
        where = redact_url(self.base_url)
        try:
            response = _within(self.config.timeout_s, where, self.requests.post, url, params={"stream": "true"},
                               data={"query": json.dumps(query)}, files=files, headers=self._headers(), stream=True,
                               timeout=(min(10.0, self.config.timeout_s), self.config.timeout_s))
        except self.requests.RequestException as exc:
            raise EngineUnavailableError(f"cannot reach the vilasr serve at {where}: {redact(exc)}") from exc
        if response.status_code != 200:
            raw = _within(self.config.timeout_s, where, bounded_body, response)  # never the whole of a huge reply
            detail = raw.decode("utf-8", "replace")[:300]
            try:
                body = json.loads(raw)
            except ValueError:  # not JSON (or cut off): the text is the detail
                body = None
            if isinstance(body, dict) and body.get("detail") is not None:  # FastAPI's {"detail": ...}
                detail = str(body["detail"])[:300]
            retry = response.headers.get("Retry-After")
            response.close()
            raise EngineError(f"{where} refused the query: HTTP {response.status_code}: {redact(detail)}"
                              + (f" (retry after {retry} s)" if retry else ""))
        events: queue.Queue = queue.Queue()
        state = self._state
        state.update(response=response, events=events, done=0)

        def read() -> None:
            try:
                for kind, data in sse_events(response):
                    events.put((kind, json.loads(data)))
                events.put(("closed", None))
            except Exception as exc:  # noqa: BLE001 - the stream broke: the waiting turn gets the reason
                events.put(("broken", f"{type(exc).__name__}: {redact(exc)}"))

        threading.Thread(target=read, daemon=True, name="vilasr-remote-stream").start()

    def generate(self, request: GenerationRequest) -> GenerationResult:
        state = self._state
        if state["events"] is None:
            self._open(request)
            state = self._state
        deadline = time.monotonic() + self.config.timeout_s
        where = redact_url(self.base_url)
        while True:
            try:
                kind, data = state["events"].get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._close()
                raise EngineUnavailableError(f"{where}: no turn within the {self.config.timeout_s:g} s deadline") from None
            if kind == "turn":
                state["done"] += 1
                return GenerationResult(text=data["text"], finish_reason=data["finish_reason"],
                                        prompt_tokens=data.get("prompt_tokens"),
                                        completion_tokens=data.get("completion_tokens"),
                                        cached_tokens=data.get("cached_tokens"))
            if kind == "result":
                trace = data.get("trace") or {}
                self._close()
                raise EngineError(f"{where}: the server's loop ended ({trace.get('finish_reason')}: "
                                  f"{trace.get('error')}) before this turn")
            if kind == "error":
                self._close()
                raise EngineError(f"{where}: {data.get('error')}")
            if kind in ("closed", "broken"):
                self._close()
                raise EngineUnavailableError(f"{where} closed the stream mid-query" + (f" ({data})" if data else ""))

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "base_url": redact_url(self.base_url), "image_format": self.config.image_format}
