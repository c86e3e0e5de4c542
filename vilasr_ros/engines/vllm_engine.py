"""The ``vllm`` engine: vLLM in-process with automatic prefix caching (GPU only, ``[vllm]`` extra).

Mirrors the reference's ``eval/infer.py`` setup: the chat text is given as the prompt with
``multi_modal_data={"image": [...]}`` (vLLM expands each vision placeholder), bf16, prefix caching
on so that every turn re-uses the previous turns' KV blocks.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from vilasr_ros.engines.base import Engine, GenerationRequest, GenerationResult
from vilasr_ros.engines.hf import resolve_model_path
from vilasr_ros.families import resolve_family
from vilasr_ros.errors import EngineError, require

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VLLMConfig:
    """Settings of the ``vllm`` engine (see :class:`VLLMEngine`).

    Attributes:
        model: Local folder or Hugging Face id (resolved from the local cache; never downloaded).
        tensor_parallel_size: GPUs per model (None: all visible).
        gpu_memory_utilization: vLLM's memory share (reference: 0.85).
        max_images: ``limit_mm_per_prompt`` for images (reference: 62).
    """

    model: str = "AntResearchNLP/ViLaSR"
    tensor_parallel_size: int | None = None
    gpu_memory_utilization: float = 0.85
    max_images: int = 62

    def __post_init__(self):
        if self.tensor_parallel_size is not None and self.tensor_parallel_size < 1:
            raise ValueError("tensor_parallel_size must be >= 1")
        if not 0.05 <= self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in [0.05, 1], got {self.gpu_memory_utilization}")
        if self.max_images < 1:
            raise ValueError("max_images must be >= 1")


class VLLMEngine(Engine):
    """vLLM ``LLM`` wrapper.

    Args:
        config: A :class:`VLLMConfig`, or its ``model``.
        llm_kwargs: Passed to ``vllm.LLM`` as they are.
        **options: :class:`VLLMConfig` fields, over those of ``config``.
    """

    name = "vllm"
    config_class = VLLMConfig
    primary_option = "model"

    def __init__(self, config: VLLMConfig | str | os.PathLike | None = None, /, *,
                 llm_kwargs: dict[str, Any] | None = None, **options: Any):
        self.config = config = self.resolve_config(config, options)
        vllm = require("vllm", "vllm")
        torch = require("torch", "vllm")
        self.vllm = vllm
        self.model_id = str(config.model)
        path = resolve_model_path(config.model)
        self.family = resolve_family(None, path)  # config.json's model_type: the loop reads its coordinates
        self.llm = vllm.LLM(
            model=str(path),
            dtype="bfloat16",
            tensor_parallel_size=config.tensor_parallel_size or max(1, torch.cuda.device_count()),
            limit_mm_per_prompt={"image": config.max_images},
            gpu_memory_utilization=config.gpu_memory_utilization,
            enable_prefix_caching=True,
            **(llm_kwargs or {}),
        )

    def _params(self, request: GenerationRequest):
        s = request.sampling
        return self.vllm.SamplingParams(
            temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=s.seed, stop_token_ids=[]
        )

    def generate(self, request: GenerationRequest) -> GenerationResult:
        return self.generate_batch([request])[0]

    def generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """One batched vLLM call for several conversations (evaluation, rollouts)."""
        inputs = [{"prompt": r.prompt, "multi_modal_data": {"image": list(r.images)}} for r in requests]
        try:
            outputs = self.llm.generate(inputs, [self._params(r) for r in requests], use_tqdm=False)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"vLLM generation failed: {exc}") from exc
        results = []
        for out in outputs:
            completion = out.outputs[0]
            results.append(
                GenerationResult(
                    text=completion.text,
                    finish_reason="length" if completion.finish_reason == "length" else "stop",
                    prompt_tokens=len(out.prompt_token_ids or []),
                    completion_tokens=len(completion.token_ids),
                    cached_tokens=getattr(out, "num_cached_tokens", None),
                )
            )
        return results

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "model": self.model_id, "model_family": self.family.name}
