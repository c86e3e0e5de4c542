"""``vilasr serve``: the draw-to-reason loop next to the GPU, so a robot sends its frames once per query.

Chat completions are stateless: through the ``openai`` engine every turn re-sends every frame. Here
the robot posts a query once — its frames (already ``smart_resize``-d, lossless PNG by default) and
the question — and the server runs the whole loop beside the model, streaming each model turn back
as a server-sent event. The robot's ``remote`` engine replays those turns through its own
:class:`~vilasr_ros.reasoner.Reasoner`, so its :class:`~vilasr_ros.trace.Trace` (conversation, drawn
images, answer) is the one a local run of the same engine would give, and grounding stays on the
robot: depth and poses never leave it.

API (FastAPI; the OpenAPI document is at ``/openapi.json``, interactive at ``/docs``):

- ``POST /v1/queries`` — multipart: ``query`` (JSON text: the fields of
  :class:`~vilasr_ros.query.Query` — ``id``, ``question``, ``problem_type`` (alias ``type``),
  ``options``, ``kind`` —, and this server's ``loop`` — ``max_pixels``, ``max_turns``, ``max_images``,
  ``max_drawings_per_turn``, ``temperature``, ``top_p``, ``max_tokens``, ``seed`` —, ``deadline_s``,
  ``images``: ``none``|``last``|``all``) and ``frames`` (image files, in order). With
  ``?stream=true`` the reply is ``text/event-stream``: one ``turn`` event per model turn, then
  ``result``; else one JSON document: the trace (``Trace.to_dict``), drawn images as requested
  (base64 PNG), and the server's timings.
- ``GET /health`` — liveness and what this server is (``"service": "vilasr-serve"``: the robot's
  ``--engine auto`` detects a ``vilasr serve`` from it); ``GET /ready`` — 200 when a query would be
  taken now, 503 with the queue state otherwise; ``GET /metrics`` — counters.

Bounds: at most ``workers`` queries run at once (the engine's ``max_concurrency``) and ``max_queue``
wait; more are refused with HTTP 429 and ``Retry-After``. Each query has a deadline (``deadline_s``,
capped by ``max_deadline_s``; checked between turns). A client that goes away cancels its query after
the turn in flight (counted in ``/metrics`` as ``cancelled_by_client`` and logged). Bodies over
``max_body_mb`` get 413, more than ``max_frames`` frames or a file that is not an image 400, a wrong
or missing bearer token 401 (the token is read from the environment variable ``token_env``; unset
means no token). The server binds 127.0.0.1 unless told otherwise: put TLS in front with a reverse
proxy (README).
"""


import asyncio
import base64
import hmac
import io
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from vilasr_ros import __version__
from vilasr_ros.errors import ConfigError, QueryError, require
from vilasr_ros.sanitize import clean_json, clean_text
from vilasr_ros.serve_guard import BodyGuard, GuardCounters, RateLimitFilter, guarded_protocol, raise_fd_limit

logger = logging.getLogger(__name__)
SERVICE = "vilasr-serve"
API_VERSION = 1
IMAGE_CHOICES = ("none", "last", "all")


@dataclass(frozen=True)
class ServeConfig:
    """Attributes:
    host: Address to bind (127.0.0.1: this machine only; 0.0.0.0 behind a firewall or proxy).
    port: TCP port.
    token_env: Environment variable holding the bearer token clients must send (unset: none).
    workers: Queries run at once (None: the engine's ``max_concurrency``).
    max_queue: Queries waiting beyond the running ones; more get 429.
    max_frames: Frames per query at most.
    max_body_mb: Request body size at most (MiB).
    max_frame_pixels: Pixels of one frame at most (checked from its header before decoding).
    max_request_pixels: Pixels of all frames of a request at most (the memory decoding may take:
        3 bytes a pixel; 100 MP is ~300 MB).
    max_connections: Open connections at most (the oldest one still sending its request head is closed
        to make room; when none is, the newcomer gets 503 + ``Retry-After``); capped below the open-file limit.
    header_timeout_s: A connection must send its request head within this (s), or it is closed.
    body_timeout_s: A request body must arrive whole within this (s), or 408.
    max_uploads: Request bodies read at once (each may spool to a temp file); more get 503 + ``Retry-After``.
    default_deadline_s: Deadline of a query that names none; ``max_deadline_s`` caps any.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    token_env: str = "VILASR_SERVE_TOKEN"
    workers: int | None = None
    max_queue: int = 16
    max_frames: int = 64
    max_body_mb: float = 64.0
    max_frame_pixels: int = 16_000_000
    max_request_pixels: int = 100_000_000
    max_connections: int = 512
    header_timeout_s: float = 10.0
    body_timeout_s: float = 120.0
    max_uploads: int = 8
    default_deadline_s: float = 300.0
    max_deadline_s: float = 1800.0

    def __post_init__(self):
        if not 0 < self.port < 65536 or self.max_queue < 0 or self.max_frames < 1 or self.max_body_mb <= 0:
            raise ValueError("port in 1..65535, max_queue >= 0, max_frames >= 1 and max_body_mb > 0 are required")
        if self.max_connections < 4 or not self.header_timeout_s > 0 or not self.body_timeout_s > 0 or self.max_uploads < 1:
            raise ValueError("max_connections >= 4, header_timeout_s > 0, body_timeout_s > 0 and max_uploads >= 1 are required")
        if not 0 < self.max_frame_pixels <= self.max_request_pixels:
            raise ValueError("0 < max_frame_pixels <= max_request_pixels is required")
        if self.workers is not None and self.workers < 1:
            raise ValueError("workers must be >= 1")
        if not 0 < self.default_deadline_s <= self.max_deadline_s:
            raise ValueError("0 < default_deadline_s <= max_deadline_s is required")


@dataclass
class Metrics:
    received: int = 0
    answered: int = 0
    rejected_busy: int = 0
    bad_requests: int = 0
    unauthorized: int = 0
    cancelled_by_client: int = 0
    deadline: int = 0
    errors: int = 0
    running: int = 0
    queued: int = 0
    busy_s: float = 0.0


class QueryRequest:
    """A validated request: the :class:`~vilasr_ros.query.Query` (the same schema as the ROS topic's,
    less ``target``, ``frames`` and ``selection``: the robot chose its frames and grounds targets
    itself), this server's fields (``loop``, ``deadline_s``, ``images``) and the decoded frames.
    ``served_family``: the served model's family; a query whose ``loop.model_family`` (absent:
    ``qwen2_5_vl``) is another one is refused — the robot would read its boxes in the wrong
    coordinates.

    Raises:
        QueryError: A field outside its rules (the message names it), no frames, or too many, or
            another model family than the served one.
    """

    LOOP_KEYS = ("max_pixels", "max_turns", "max_images", "max_drawings_per_turn", "temperature", "top_p",
                 "max_tokens", "seed", "model_family")
    FIELDS = ("loop", "deadline_s", "images")

    def __init__(self, text: str, frames: list, config: ServeConfig, served_family: str | None = None):
        from vilasr_ros.families import DEFAULT_FAMILY
        from vilasr_ros.query import MEMORY_FIELDS, parse_query
        from vilasr_ros.reasoner import reasoner_config

        self.query, rest = parse_query(text, max_bytes=1 << 20, extra=self.FIELDS,
                                       exclude=("target", "frames", "selection", *MEMORY_FIELDS))
        loop = rest.get("loop") or {}
        if not isinstance(loop, dict) or set(loop) - set(self.LOOP_KEYS):
            raise QueryError(f"'loop' takes {', '.join(self.LOOP_KEYS)}")
        self.loop = reasoner_config(**loop)
        asked = self.loop.model_family or DEFAULT_FAMILY  # a robot whose loop reads ViLaSR's pixels says nothing
        if served_family is not None and served_family != asked:
            raise QueryError(f"this server's model is {served_family}, but the robot's loop reads {asked} coordinates: "
                             f"set model_family: {served_family} on the robot (--model-family, node parameter model_family)")
        deadline = rest.get("deadline_s", config.default_deadline_s)
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not 0 < deadline:
            raise QueryError("'deadline_s' must be a positive number of seconds")
        self.deadline_s = min(float(deadline), config.max_deadline_s)
        self.images = rest.get("images", "none")
        if self.images not in IMAGE_CHOICES:
            raise QueryError(f"'images' must be one of {', '.join(IMAGE_CHOICES)}")
        if not frames:
            raise QueryError("no frames: send at least one image in 'frames'")
        if len(frames) > config.max_frames:
            raise QueryError(f"{len(frames)} frames; at most {config.max_frames} per query")
        self.frames = frames

    @property
    def id(self) -> str:
        return self.query.id or ""


def decode_frames(blobs: list[tuple[str, bytes]], config: "ServeConfig | None" = None):
    """Image files → RGB PIL images (alpha over white, :func:`~vilasr_ros.protocol.to_rgb`).

    Frames are counted first, then every header is read and the pixels added up against the budgets
    (``max_frame_pixels`` each, ``max_request_pixels`` together) — all before any frame is decoded.

    Raises:
        QueryError: More than ``max_frames`` frames, a file that is not an image, or a budget exceeded
            (naming the frame).
    """
    from vilasr_ros.errors import ImageError
    from vilasr_ros.images import image_size, open_rgb

    config = config or ServeConfig()
    if len(blobs) > config.max_frames:
        raise QueryError(f"{len(blobs)} frames; at most {config.max_frames} per query")
    total = 0
    for k, (name, data) in enumerate(blobs):
        label = f"frame {k} ({clean_text(name)[:60]})"
        try:
            w, h = image_size(data, name=label)
        except ImageError as exc:
            raise QueryError(str(exc)) from None
        if w * h > config.max_frame_pixels:
            raise QueryError(f"{label} is {w}x{h}; at most {config.max_frame_pixels} pixels per frame (max_frame_pixels)")
        total += w * h
        if total > config.max_request_pixels:
            raise QueryError(f"the frames up to {label} hold {total} pixels; at most {config.max_request_pixels} per "
                             "request (max_request_pixels)")
    out = []
    for k, (name, data) in enumerate(blobs):
        try:
            out.append(open_rgb(data, max_pixels=config.max_frame_pixels, name=f"frame {k} ({clean_text(name)[:60]})"))
        except ImageError as exc:
            raise QueryError(str(exc)) from None
    return out


class CancelledBeforeStart(Exception):
    """A queued query whose client went away before a worker took it (answered 499, not a failure)."""


def _png_b64(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def create_app(engine, config: ServeConfig | None = None):
    """The FastAPI application serving ``engine`` (see the module docstring).

    Args:
        engine: Any :class:`~vilasr_ros.engines.base.Engine` (``transformers``, ``openai`` to a local
            ``vllm serve``, ``vllm``, ``replay``, ...).
        config: Server settings.
    """
    fastapi = require("fastapi", "serve")
    from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
    from fastapi.responses import JSONResponse, StreamingResponse

    from vilasr_ros.reasoner import Reasoner

    served_family = getattr(getattr(engine, "family", None), "name", None)  # None: the engine does not say (replay)

    config = config or ServeConfig()
    from vilasr_ros import protocol

    protocol.resized_size(640, 480, protocol.MIN_PIXELS * 100)  # import transformers' smart_resize now, not on query 1
    workers = config.workers or max(1, int(getattr(engine, "max_concurrency", 1)))
    pool = ThreadPoolExecutor(workers, thread_name_prefix="vilasr-serve")
    metrics = Metrics()
    guards = GuardCounters()
    lock = threading.Lock()
    token = os.environ.get(config.token_env or "") or None

    app = FastAPI(title="vilasr serve", version=__version__,
                  description="The ViLaSR draw-to-reason loop next to the model: a robot posts a query once "
                              "(frames + question) and gets every model turn back.")

    def check_token(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            with lock:
                metrics.unauthorized += 1
            raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})

    def admit() -> None:
        with lock:
            if metrics.running + metrics.queued >= workers + config.max_queue:
                metrics.rejected_busy += 1
                avg = metrics.busy_s / max(1, metrics.answered)
                retry = max(1, int(avg * (metrics.queued + 1) / workers + 0.5))
                raise HTTPException(429, f"busy: {metrics.running} running, {metrics.queued} waiting; retry later",
                                    headers={"Retry-After": str(retry)})
            metrics.queued += 1
            metrics.received += 1

    def run_query(q: QueryRequest, cancel: threading.Event, on_turn) -> dict[str, Any]:
        with lock:
            metrics.queued -= 1
            metrics.running += 1
        start = time.monotonic()
        timer = threading.Timer(max(0.0, q.deadline_s), cancel.set)
        timer.daemon = True
        timer.start()
        try:
            if cancel.is_set():
                raise CancelledBeforeStart("the client went away before the query started")
            query = q.query
            trace = Reasoner(engine, q.loop).run(q.frames, query.question, query.problem_type, query.options,
                                                 kind=query.kind, cancel=cancel, on_turn=on_turn)
            if trace.finish_reason == "cancelled" and time.monotonic() - start >= q.deadline_s:
                trace.error = f"deadline of {q.deadline_s:g} s passed"
                with lock:
                    metrics.deadline += 1
            return {"trace": trace, "engine_s": round(time.monotonic() - start, 4)}
        finally:
            timer.cancel()
            with lock:
                metrics.running -= 1
                metrics.answered += 1
                metrics.busy_s += time.monotonic() - start

    def result_document(q: QueryRequest, out: dict[str, Any], queue_s: float) -> dict[str, Any]:
        trace = out["trace"]
        images = {}
        drawn = [info for info in trace.images if info.drawn_from is not None]
        if q.images == "all":
            images = {str(i.index): _png_b64(trace.pil_images[i.index - 1]) for i in drawn}
        elif q.images == "last" and drawn:
            images = {str(drawn[-1].index): _png_b64(trace.pil_images[drawn[-1].index - 1])}
        return clean_json({"id": q.id, "trace": trace.to_dict(), "images": images,
                           "server": {"queue_s": round(queue_s, 4), "run_s": out["engine_s"], "engine": engine.describe()}})

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness, and what this server is (robots detect a ``vilasr serve`` from ``service``)."""
        return {"status": "ok", "service": SERVICE, "api": API_VERSION, "version": __version__,
                "engine": engine.describe(), "model_family": served_family}

    @app.get("/ready")
    def ready():
        """200 when a query would be taken now, else 503 with the queue state."""
        with lock:
            state = {"running": metrics.running, "queued": metrics.queued, "workers": workers,
                     "max_queue": config.max_queue}
        full = state["running"] + state["queued"] >= workers + config.max_queue
        return JSONResponse({"ready": not full, **state}, status_code=503 if full else 200)

    @app.get("/metrics")
    def get_metrics() -> dict[str, Any]:
        """Counters since start."""
        with lock:
            return {**vars(metrics), **vars(guards)}

    @app.post("/v1/queries")
    async def post_query(request: Request, query: str = Form(..., description="the query, JSON text"),
                         frames: list[UploadFile] = File(..., description="the frames, in order"),
                         stream: bool = False):
        """Run the draw-to-reason loop over the posted frames (see the module docstring)."""
        check_token(request)
        try:
            blobs = [(f.filename or f"frame{k}", await f.read()) for k, f in enumerate(frames)]
            q = QueryRequest(query, decode_frames(blobs, config), config, served_family)
        except (QueryError, ConfigError) as exc:  # ConfigError: a bad 'loop' value
            with lock:
                metrics.bad_requests += 1
            raise HTTPException(400, str(exc)) from None
        admit()
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        queued_at = time.monotonic()

        def on_turn(trace, turn):
            summary = {"turn": len(trace.turns), "text": turn.text, "finish_reason": turn.finish_reason,
                       "prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens,
                       "cached_tokens": turn.cached_tokens, "engine_s": round(turn.engine_s, 4),
                       "new_images": turn.new_images, "error": turn.error}
            loop.call_soon_threadsafe(events.put_nowait, ("turn", clean_json(summary)))

        future = loop.run_in_executor(pool, run_query, q, cancel, on_turn)

        def finish(fut) -> None:
            try:
                out = fut.result()
                started = out["engine_s"]
                doc = result_document(q, out, time.monotonic() - queued_at - started)
                loop.call_soon_threadsafe(events.put_nowait, ("result", doc))
            except CancelledBeforeStart as exc:  # not a failure of the server: 499, one line
                logger.info("query %r: %s", q.id, exc)
                loop.call_soon_threadsafe(events.put_nowait, ("error", {"error": str(exc), "status": 499}))
            except Exception as exc:  # noqa: BLE001 - reported to the client as an error event / 500, one line
                with lock:
                    metrics.errors += 1
                logger.error("query %r failed: %s: %s", q.id, type(exc).__name__, clean_text(exc)[:300])
                logger.debug("query %r failed", q.id, exc_info=True)
                loop.call_soon_threadsafe(events.put_nowait, ("error", {"error": f"{type(exc).__name__}: {exc}",
                                                                        "status": 500}))

        future.add_done_callback(finish)

        def client_gone() -> None:
            if not cancel.is_set() and not future.done():
                cancel.set()
                with lock:
                    metrics.cancelled_by_client += 1
                logger.info("query %r: the client went away; cancelled after the turn in flight", q.id)

        async def disconnected() -> bool:
            if await request.is_disconnected():
                client_gone()
                return True
            return False

        if stream:
            async def sse():
                delivered = False
                try:
                    while True:
                        try:
                            kind, data = await asyncio.wait_for(events.get(), timeout=1.0)
                        except asyncio.TimeoutError:
                            if await disconnected():
                                return
                            yield ": keep-alive\n\n"
                            continue
                        if await disconnected():
                            return
                        yield f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=True)}\n\n"
                        if kind in ("result", "error"):
                            delivered = True
                            return
                finally:  # cancelled by the server on disconnect, or returned early: stop the loop
                    if not delivered:
                        client_gone()

            return StreamingResponse(sse(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        while True:
            try:
                kind, data = await asyncio.wait_for(events.get(), timeout=0.5)
            except asyncio.TimeoutError:
                if await disconnected():
                    return JSONResponse({"detail": "client went away"}, status_code=499)
                continue
            if kind == "result":
                return JSONResponse(data)
            if kind == "error":
                return JSONResponse({"detail": data["error"]}, status_code=data.get("status", 500))

    def refused() -> None:
        with lock:
            metrics.bad_requests += 1

    app.add_middleware(BodyGuard, max_body_bytes=int(config.max_body_mb * 2**20), body_timeout_s=config.body_timeout_s,
                       max_uploads=config.max_uploads, retry_after_s=1, counters=guards, on_refused=refused)
    app.state.metrics = metrics
    app.state.guards = guards
    app.state.pool = pool
    del fastapi
    return app


def serve(engine, config: ServeConfig) -> None:
    """Run the server until Ctrl-C (uvicorn)."""
    uvicorn = require("uvicorn", "serve")
    app = create_app(engine, config)
    logger.info("vilasr serve on http://%s:%d (engine %s)%s", config.host, config.port, engine.describe(),
                "" if os.environ.get(config.token_env or "") else "; no bearer token required")
    fds = raise_fd_limit()
    max_connections = min(config.max_connections, max(16, fds - 64))  # room for the model, logs and temp files
    # asyncio accepts up to `backlog` sockets per wake-up before the guard's connection_made runs for any
    # of them: bounding it keeps a flood's accepted-but-unguarded sockets inside the fds left over
    # (uvicorn's default 2048 let a flood of 1,100 slow connections reach a 1,024-fd limit on a loaded
    # machine; a quarter of what is left over kept it at 519 with the cores busy: test_serve's flood test)
    backlog = max(16, min(2048, (fds - max_connections - 64) // 4))
    logging.getLogger("asyncio").addFilter(RateLimitFilter("accept"))
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", timeout_graceful_shutdown=5, backlog=backlog,
                http=guarded_protocol(max_connections, config.header_timeout_s, 1, app.state.guards),
                timeout_keep_alive=5, h11_max_incomplete_event_size=64 * 1024)
