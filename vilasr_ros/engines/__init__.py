"""Engines by name: ``replay``, ``transformers``, ``openai``, ``vllm`` (and ``teacher`` from training).

Heavy engines import their libraries only when created.
"""

from __future__ import annotations

from typing import Any

from vilasr_ros.engines.base import Engine, GenerationRequest, GenerationResult, SamplingConfig
from vilasr_ros.errors import QueryError

DEFAULT_MODEL_ID = "AntResearchNLP/ViLaSR"
ENGINE_NAMES = ("replay", "transformers", "openai", "vllm", "teacher")

__all__ = [
    "DEFAULT_MODEL_ID",
    "ENGINE_NAMES",
    "Engine",
    "GenerationRequest",
    "GenerationResult",
    "SamplingConfig",
    "create_engine",
]


def create_engine(name: str, **options: Any) -> Engine:
    """Build an engine by name.

    Args:
        name: One of :data:`ENGINE_NAMES`.
        **options: ``responses`` (replay); ``model`` (transformers/vllm/openai: path or HF id);
            ``base_url``, ``api_key_env``, ``timeout_s``, ``max_retries`` (openai); ``device``,
            ``dtype`` (transformers); ``model`` (teacher: a generated sim dataset folder),
            ``reflect``, ``seed`` (teacher); extra keyword arguments are passed to the engine class.

    Returns:
        The engine.

    Raises:
        QueryError: Unknown engine name or a missing required option.
        ModelNotFoundError: Weights absent (transformers, vllm).
        MissingDependencyError: The engine's optional extra is not installed.
    """
    options = {k: v for k, v in options.items() if v is not None}
    if name == "replay":
        from vilasr_ros.engines.replay import ReplayEngine

        if "responses" not in options:
            raise QueryError("the replay engine needs --responses FILE (a JSON list of model turns)")
        return ReplayEngine(options["responses"])
    if name == "transformers":
        from vilasr_ros.engines.hf import TransformersEngine

        return TransformersEngine(options.pop("model", DEFAULT_MODEL_ID), **options)
    if name == "openai":
        from vilasr_ros.engines.openai_compat import OpenAIEngine

        return OpenAIEngine(model=options.pop("model", DEFAULT_MODEL_ID), **options)
    if name == "vllm":
        from vilasr_ros.engines.vllm_engine import VLLMEngine

        return VLLMEngine(options.pop("model", DEFAULT_MODEL_ID), **options)
    if name == "teacher":
        from vilasr_ros_training.teacher import TeacherEngine

        return TeacherEngine(**options)
    raise QueryError(f"unknown engine {name!r}; use one of {', '.join(ENGINE_NAMES)}")
