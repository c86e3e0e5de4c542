"""The ``openai`` engine: any OpenAI-compatible chat-completions server (``vllm serve``).

Images are sent already resized (spec §1: the server's processor leaves a 28-multiple image as is)
as base64 PNG data URLs; the conversation is sent as chat messages whose rendering by the server's
Qwen2.5-VL chat template is byte-identical to the reference's text. Every request has a timeout and
a bounded number of retries with exponential backoff; a server that stays down or slow ends in
:class:`~vilasr_ros.errors.EngineUnavailableError`.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import time
from typing import Any

from vilasr_ros.engines.base import Engine, GenerationRequest, GenerationResult
from vilasr_ros.errors import EngineError, EngineUnavailableError, QueryError, require

logger = logging.getLogger(__name__)


IMAGE_FORMATS = {"png": ("PNG", {"compress_level": 1}), "bmp": ("BMP", {}), "jpeg": ("JPEG", {"quality": 95})}
"""Transport encodings: PNG (lossless, compact), BMP (lossless, fastest, ~1.2 MB per 644×476 image),
JPEG q95 (smallest, lossy: drawn lines get compression artefacts)."""


def image_data_url(image, image_format: str = "png") -> str:
    """Base64 data URL of a PIL image in one of :data:`IMAGE_FORMATS`."""
    fmt, kwargs = IMAGE_FORMATS[image_format]
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return f"data:image/{image_format};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class OpenAIEngine(Engine):
    """Chat completions over HTTP.

    Args:
        model: Model name the server serves (``vllm serve AntResearchNLP/ViLaSR`` → that id).
        base_url: Server root including ``/v1``, e.g. ``http://127.0.0.1:8000/v1``.
        api_key_env: Environment variable holding the API key (default ``OPENAI_API_KEY``; unset
            means no ``Authorization`` header).
        timeout_s: Per-request timeout (connect and read).
        max_retries: Retries after the first attempt for connection errors, timeouts and 5xx.
        backoff_s: First retry delay; doubles each retry.
        image_format: Transport encoding, see :data:`IMAGE_FORMATS` (each image is encoded once per
            conversation and cached).

    Raises:
        QueryError: No ``base_url`` or an unknown image format.
    """

    name = "openai"
    max_concurrency = 16  # the server batches concurrent requests (vLLM continuous batching)

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 300.0,
        max_retries: int = 2,
        backoff_s: float = 1.0,
        image_format: str = "png",
    ):
        self.requests = require("requests", "openai")
        if not base_url:
            raise QueryError("the openai engine needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        if timeout_s <= 0 or max_retries < 0 or backoff_s < 0:
            raise QueryError("timeout_s must be > 0, max_retries and backoff_s >= 0")
        if image_format not in IMAGE_FORMATS:
            raise QueryError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
        self.image_format = image_format
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.session = self.requests.Session()
        self._urls: dict[int, tuple[Any, str]] = {}

    def reset(self) -> None:
        self._urls.clear()

    def _url(self, image) -> str:
        cached = self._urls.get(id(image))
        if cached is None or cached[0] is not image:
            cached = (image, image_data_url(image, self.image_format))
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

    def generate(self, request: GenerationRequest) -> GenerationResult:
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.to_openai_messages(request),
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "skip_special_tokens": True,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env or "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = f"{self.base_url}/chat/completions"
        last_error: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self.session.post(url, json=body, headers=headers, timeout=self.timeout_s)
            except (self.requests.ConnectionError, self.requests.Timeout) as exc:
                last_error = exc
                logger.warning("%s: attempt %d/%d failed: %s", url, attempt + 1, self.max_retries + 1, exc)
                continue
            if response.status_code >= 500:
                last_error = EngineError(f"HTTP {response.status_code}: {response.text[:300]}")
                logger.warning("%s: attempt %d answered %d", url, attempt + 1, response.status_code)
                continue
            if response.status_code != 200:
                raise EngineError(f"{url} answered HTTP {response.status_code}: {response.text[:500]}")
            return self._result(response)
        raise EngineUnavailableError(
            f"{url} did not answer after {self.max_retries + 1} attempts "
            f"(timeout {self.timeout_s:g}s each): {last_error}"
        ) from last_error

    @staticmethod
    def _result(response) -> GenerationResult:
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
            reason = choice.get("finish_reason") or "stop"
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EngineError(f"malformed chat-completions response: {response.text[:300]}") from exc
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return GenerationResult(
            text=text,
            finish_reason="length" if reason == "length" else "stop",
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            cached_tokens=details.get("cached_tokens"),
        )

    def close(self) -> None:
        self.session.close()

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "model": self.model, "base_url": self.base_url}
