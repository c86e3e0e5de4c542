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
stream); a server that stops answering, goes away mid-query or refuses the query (401, 429 busy with
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


def detect_server(base_url: str, timeout_s: float = 3.0) -> str | None:
    """``"remote"`` when ``base_url`` answers ``/health`` as a ``vilasr serve``, else None (an
    OpenAI-compatible server, or nothing answering in time)."""
    try:
        requests = require("requests", "remote")
        root = base_url.rstrip("/")
        response = requests.get(f"{root}/health", timeout=timeout_s)
        if response.ok and response.headers.get("content-type", "").startswith("application/json"):
            if response.json().get("service") == "vilasr-serve":
                return "remote"
    except Exception:  # noqa: BLE001 - detection is best effort; the openai engine is the fallback
        return None
    return None


class RemoteEngine(Engine):
    """A ``vilasr serve`` (see the module docstring).

    Raises:
        ConfigError: Bad settings.
        MissingDependencyError: ``requests`` missing (the ``remote`` extra).
    """

    name = "remote"
    config_class = RemoteConfig
    max_concurrency = 16  # one stream per query; the server queues and batches

    def __init__(self, base_url: str = "", **settings: Any):
        self.config = RemoteConfig(base_url=base_url, **settings)
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
            response = self.requests.post(url, params={"stream": "true"}, data={"query": json.dumps(query)},
                                          files=files, headers=self._headers(), stream=True,
                                          timeout=(min(10.0, self.config.timeout_s), self.config.timeout_s))
        except self.requests.RequestException as exc:
            raise EngineUnavailableError(f"cannot reach the vilasr serve at {where}: {redact(exc)}") from exc
        if response.status_code != 200:
            detail = response.text[:300]
            try:
                body = response.json()
            except ValueError:  # not JSON: the text is the detail
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
            kind, data = None, []
            try:
                for raw in response.iter_lines(decode_unicode=True):
                    line = raw or ""
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and kind:
                        events.put((kind, json.loads("\n".join(data))))
                        kind, data = None, []
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
