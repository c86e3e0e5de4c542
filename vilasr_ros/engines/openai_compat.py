"""The ``openai`` engine: any OpenAI-compatible chat-completions server (``vllm serve``), through the
official ``openai`` SDK.

Images are sent already resized (spec §1: the server's processor leaves a 28-multiple image as is)
as base64 data URLs (lossless PNG by default); the conversation is sent as chat messages whose
rendering by the server's Qwen2.5-VL chat template is byte-identical to the reference's text.

Sampling: ``temperature``, ``top_p``, ``max_tokens`` and ``seed`` as the OpenAI API names them,
plus vLLM's ``top_k`` (-1: off) and ``repetition_penalty`` (1.0) sent explicitly in the body — the
values of the reference's ``SamplingParams`` (``eval/infer.py``); a recent ``vllm serve`` would
otherwise fill them from the model's ``generation_config.json``.

Bounds (a robot must never hang on a server): each model call has a **wall-clock deadline**
(``timeout_s``, covering connect, the SDK's retries, and reading the reply — a server that drips one
byte every few seconds is cut off at the deadline, not kept alive by each byte), a cap on the reply
size (``max_reply_bytes``), and every field of the reply is checked before it is used. Failures are
typed: :class:`~vilasr_ros.errors.EngineUnavailableError` (refused, unreachable, deadline) and
:class:`~vilasr_ros.errors.EngineError` (HTTP errors, malformed or oversized replies). Credentials in
``base_url`` never appear in messages, logs or :meth:`describe`.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from vilasr_ros.engines.base import Engine, GenerationRequest, GenerationResult
from vilasr_ros.errors import ConfigError, EngineError, EngineUnavailableError, require
from vilasr_ros.sanitize import clean_text, redact, redact_url

logger = logging.getLogger(__name__)


IMAGE_FORMATS = {"png": ("PNG", {"compress_level": 1}), "bmp": ("BMP", {}), "jpeg": ("JPEG", {"quality": 95})}
"""Transport encodings: PNG (lossless, compact), BMP (lossless, fastest, ~1.2 MB per 644×476 image),
JPEG q95 (smallest, lossy: drawn lines get compression artefacts)."""

REFERENCE_EXTRA_SAMPLING = {"top_k": -1, "repetition_penalty": 1.0}
"""vLLM ``SamplingParams`` defaults the reference ran with (``eval/infer.py``), sent explicitly."""


def image_data_url(image, image_format: str = "png") -> str:
    """Base64 data URL of a PIL image in one of :data:`IMAGE_FORMATS`."""
    fmt, kwargs = IMAGE_FORMATS[image_format]
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return f"data:image/{image_format};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _count(value: Any) -> int | None:
    """A token count from a reply: a non-negative int, else None (servers send odd things)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value < 0 or value > 1e12:  # NaN, negative, absurd
        return None
    return int(value)


def parse_chat_completion(raw: bytes) -> GenerationResult:
    """A chat-completions reply body → :class:`GenerationResult`, every field checked.

    ``choices[0].message.content`` must be a string (or null: empty text); ``finish_reason``
    ``length`` means the token limit, anything else ends the turn normally; ``usage`` counts that
    are not non-negative numbers are dropped (None), never fatal.

    Raises:
        EngineError: Not JSON, or no usable ``choices[0].message.content``.
    """
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise EngineError(f"malformed chat-completions reply (not JSON): {clean_text(raw[:200])!r}") from exc
    try:
        choice = data["choices"][0]
        message = choice["message"]
        content = message.get("content")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise EngineError(f"malformed chat-completions reply (no choices[0].message): {clean_text(raw[:200])!r}") from exc
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise EngineError(f"malformed chat-completions reply: content is {type(content).__name__}, not text")
    reason = choice.get("finish_reason") if isinstance(choice, dict) else None
    usage = data.get("usage") if isinstance(data, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    return GenerationResult(
        text=clean_text(content),
        finish_reason="length" if reason == "length" else "stop",
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        cached_tokens=_count(details.get("cached_tokens")),
    )


@dataclass(frozen=True)
class OpenAIConfig:
    """Settings of the ``openai`` engine.

    Attributes:
        base_url: Server root including ``/v1``, e.g. ``http://127.0.0.1:8000/v1``.
        model: Model name the server serves (``vllm serve AntResearchNLP/ViLaSR`` → that id).
        api_key_env: Environment variable holding the API key (unset: the SDK gets ``EMPTY``, which
            ``vllm serve`` without ``--api-key`` accepts).
        timeout_s: Wall-clock deadline of one model call (connect + retries + whole reply), seconds.
        max_retries: The SDK's retries for connection errors, 408/409/429 and 5xx (within the deadline).
        image_format: Transport encoding, see :data:`IMAGE_FORMATS`.
        max_reply_bytes: Larger replies are cut off and the call fails (16384 tokens ≈ 100 KB).
    """

    base_url: str = ""
    model: str = "AntResearchNLP/ViLaSR"
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 300.0
    max_retries: int = 2
    image_format: str = "png"
    max_reply_bytes: int = 4 * 2**20

    def __post_init__(self):
        if not self.base_url:
            raise ConfigError("the openai engine needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        if not str(self.base_url).startswith(("http://", "https://")):
            raise ConfigError(f"--base-url must start with http:// or https://, got {redact_url(self.base_url)!r}")
        if not self.timeout_s > 0 or self.max_retries < 0 or self.max_reply_bytes < 1024:
            raise ConfigError("openai engine: timeout_s must be > 0, max_retries >= 0, max_reply_bytes >= 1024")
        if self.image_format not in IMAGE_FORMATS:
            raise ConfigError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {self.image_format!r}")


MAX_ERROR_BYTES = 64 * 1024
"""An error reply is read up to this many bytes (the SDK would read all of it)."""


class ErrorReply(Exception):
    """Raised from the HTTP client's response hook for a 4xx/5xx reply, after at most
    :data:`MAX_ERROR_BYTES` of its body were read."""


def _bounded_error(response, refused: list) -> None:
    """httpx response hook: an error reply's body is read within :data:`MAX_ERROR_BYTES` and the reply
    refused here, before the SDK would read it whole (a 1.5 GB error body must not reach memory)."""
    if response.status_code < 400:
        return
    body = b""
    try:
        for chunk in response.iter_raw():
            body += chunk
            if len(body) >= MAX_ERROR_BYTES:
                break
    finally:
        response.close()
    refused.append((response.status_code, body[:MAX_ERROR_BYTES]))
    raise ErrorReply(f"HTTP {response.status_code}")


class ReplyTooLargeError(EngineError):
    """The server's reply exceeded ``max_reply_bytes``."""


class OpenAIEngine(Engine):
    """Chat completions over HTTP with the ``openai`` SDK (see the module docstring).

    Args:
        config: An :class:`OpenAIConfig`, or its ``base_url`` (the server root with ``/v1``).
        **options: :class:`OpenAIConfig` fields, over those of ``config``.

    Raises:
        ConfigError: Bad settings (no ``base_url``, unknown image format, ...).
        MissingDependencyError: The ``openai`` extra is not installed.
    """

    name = "openai"
    max_concurrency = 16  # the server batches concurrent requests (vLLM continuous batching)
    config_class = OpenAIConfig

    primary_option = "base_url"

    def __init__(self, config: OpenAIConfig | str | None = None, /, **options: Any):
        self.config = self.resolve_config(config, options)
        self.openai = require("openai", "openai")
        self.httpx = require("httpx2", "openai")
        self.model = self.config.model
        self.base_url = self.config.base_url.rstrip("/")
        self.timeout_s = self.config.timeout_s
        self._urls: dict[int, tuple[Any, str]] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="openai-call")

    def reset(self) -> None:
        with self._lock:
            self._urls.clear()

    def _url(self, image) -> str:
        with self._lock:
            cached = self._urls.get(id(image))
        if cached is None or cached[0] is not image:
            cached = (image, image_data_url(image, self.config.image_format))
            with self._lock:
                self._urls[id(image)] = cached
        return cached[1]

    def to_openai_messages(self, request: GenerationRequest) -> list[dict[str, Any]]:
        """Our chat messages with ``image_index`` parts replaced by ``image_url`` data URLs."""
        out = []
        for message in request.messages:
            content = message["content"]
            if isinstance(content, str):
                out.append({"role": message["role"], "content": content})
                continue
            parts = []
            for part in content:
                if part.get("type") == "image":
                    url = self._url(request.images[part["image_index"]])
                    parts.append({"type": "image_url", "image_url": {"url": url}})
                else:
                    parts.append({"type": "text", "text": part["text"]})
            out.append({"role": message["role"], "content": parts})
        return out

    def _secrets(self) -> list[str]:
        key = os.environ.get(self.config.api_key_env or "")
        return [key] if key else []

    def _call(self, client, kwargs: dict[str, Any], deadline: float) -> bytes:
        """Runs on a worker thread: the request, then the body read in chunks within the caps."""
        chunks, size = [], 0
        with client.chat.completions.with_streaming_response.create(**kwargs) as response:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.config.max_reply_bytes:
                    raise ReplyTooLargeError(
                        f"reply larger than max_reply_bytes={self.config.max_reply_bytes} (cut off)")
                if time.monotonic() > deadline:
                    raise TimeoutError("deadline passed while reading the reply")
                chunks.append(chunk)
        return b"".join(chunks)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        sampling = request.sampling
        start = time.monotonic()
        deadline = start + self.timeout_s
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": self.to_openai_messages(request),
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "extra_body": {**REFERENCE_EXTRA_SAMPLING, "skip_special_tokens": True},
        }
        if sampling.seed is not None:
            kwargs["seed"] = sampling.seed
        where = redact_url(self.base_url)
        key = os.environ.get(self.config.api_key_env or "") or "EMPTY"
        # One HTTP client per call: closing it is how a call past its deadline is cut off without
        # touching other robots' calls in flight.
        refused: list[tuple[int, bytes]] = []
        http = self.httpx.Client(timeout=self.httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0)),
                                 event_hooks={"response": [lambda r: _bounded_error(r, refused)]})
        client = self.openai.OpenAI(base_url=self.base_url, api_key=key, http_client=http,
                                    max_retries=self.config.max_retries, timeout=self.timeout_s)
        future = self._pool.submit(self._call, client, kwargs, deadline)
        try:
            raw = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout as exc:
            raise EngineUnavailableError(
                f"{where} gave no complete reply within the {self.timeout_s:g} s deadline of a model call") from exc
        except self.openai.APIConnectionError as exc:
            if not refused:
                cause = redact(exc.__cause__ or exc, self._secrets())
                raise EngineUnavailableError(
                    f"cannot reach {where} after {self.config.max_retries + 1} attempt(s): {cause}") from exc
            status, body = refused[-1]  # an error reply, read no further than MAX_ERROR_BYTES
            raise EngineError(f"{where} answered HTTP {status}: "
                              f"{redact(body.decode('utf-8', 'replace')[:300], self._secrets())}") from None
        except TimeoutError as exc:
            raise EngineUnavailableError(f"{where}: reply still arriving at the {self.timeout_s:g} s deadline") from exc
        except self.openai.APITimeoutError as exc:
            raise EngineUnavailableError(f"{where} timed out ({self.timeout_s:g} s deadline per model call)") from exc
        except self.openai.APIStatusError as exc:
            body = redact(getattr(exc.response, "text", "")[:300], self._secrets())
            raise EngineError(f"{where} answered HTTP {exc.status_code}: {body}") from exc
        except EngineError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything else the SDK or socket raises is an engine failure
            raise EngineError(f"{where}: {type(exc).__name__}: {redact(exc, self._secrets())}") from exc
        finally:
            http.close()
        return parse_chat_completion(raw)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "model": self.model, "base_url": redact_url(self.base_url)}
