"""The engine interface: one model turn from a conversation so far.

An engine receives both forms of the conversation: ``prompt`` (the exact Qwen2.5-VL chat text with
one vision placeholder per image, what the reference tokenizes) with ``images`` (PIL, already
resized), and ``messages`` (HF chat messages, for OpenAI-compatible servers). It returns the text of
the assistant turn without the end token, and why generation stopped.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from vilasr_ros.protocol import prompts


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings (spec §6 published defaults).

    Attributes:
        temperature: 0 means greedy.
        top_p: Nucleus mass.
        max_tokens: New tokens per turn.
        seed: Optional sampling seed (engines that support one).
    """

    temperature: float = prompts()["sampling"]["temperature"]
    top_p: float = prompts()["sampling"]["top_p"]
    max_tokens: int = prompts()["sampling"]["max_tokens"]
    seed: int | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class GenerationRequest:
    """One model call.

    Attributes:
        prompt: Chat text ending in ``<|im_start|>assistant\\n``.
        images: RGB ``PIL.Image`` list, one per vision placeholder, in order.
        messages: The same conversation as HF chat messages (images as ``image_index`` parts).
        sampling: Decoding settings.
        metadata: What the caller knows about the query beyond the conversation (an evaluation
            item with its ground truth, for example); models ignore it, the ``teacher`` engine
            reads it. Never sent to a server.
        query: The query as asked (``question``, ``problem_type``, ``options``, ``kind``) and the loop
            settings (``loop``: ``ReasonerConfig`` fields and sampling) — what the ``remote`` engine
            sends to a ``vilasr serve`` so it runs the same loop.
    """

    prompt: str
    images: list
    messages: list[dict[str, Any]]
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    metadata: dict[str, Any] | None = None
    query: dict[str, Any] | None = None


@dataclass
class GenerationResult:
    """What one model call produced.

    Attributes:
        text: The assistant turn, without the end-of-turn token.
        finish_reason: ``"stop"`` (end token) or ``"length"`` (token limit), as vLLM reports them.
        prompt_tokens: Tokens prefilled (None when the engine cannot count).
        completion_tokens: Tokens generated (None when unknown).
        cached_tokens: Prompt tokens served from a cache (None when unknown).
    """

    text: str
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None


class Engine(abc.ABC):
    """A model that writes one assistant turn at a time."""

    name: str = "engine"
    #: The frozen, validated settings dataclass of this engine (built by ``engines.engine_config``).
    config_class: type | None = None
    #: Options that must be set when the engine answers on its own (``vilasr ask``/``agent``), not
    #: from an evaluation item (the teacher needs its dataset folder there).
    standalone_requires: tuple[str, ...] = ()
    #: How many conversations may call :meth:`generate` at once from different threads (servers
    #: batch concurrent requests; in-process engines with per-conversation state take one).
    max_concurrency: int = 1

    #: The config field a bare first positional argument sets (``TransformersEngine("/models/ViLaSR")``).
    primary_option: str | None = None

    @classmethod
    def from_config(cls, config: Any) -> "Engine":
        """Build the engine from its :attr:`config_class` instance."""
        return cls(config)

    @classmethod
    def resolve_config(cls, config: Any, options: dict[str, Any]) -> Any:
        """The engine's config from its constructor's arguments (:func:`vilasr_ros.configs.resolve_config`)."""
        from vilasr_ros.configs import resolve_config

        assert cls.config_class is not None
        return resolve_config(cls.config_class, cls.primary_option, config, options)

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Write the next assistant turn.

        Raises:
            EngineError: Generation failed; ``EngineUnavailableError`` for unreachable servers.
        """

    def reset(self) -> None:
        """Forget per-conversation state (caches, scripted positions). Called at each new query."""

    def finish(self) -> None:
        """The current query's loop ended (answered, failed or cancelled): release what it holds."""

    def close(self) -> None:
        """Release resources (GPU memory, sessions)."""

    def describe(self) -> dict[str, Any]:
        """Settings worth recording in a trace (name, model id, ...)."""
        return {"engine": self.name}

    def count_tokens(self, text: str) -> int | None:
        """Tokens of ``text`` with the model's tokenizer (no special tokens added), or None when the
        engine has no tokenizer at hand (``ReasonerConfig.max_response_tokens`` then counts the
        model's own tokens only)."""
        return None
