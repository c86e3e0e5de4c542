"""Engines by name — one front end for ``vilasr ask``, ``vilasr agent``, the ROS node, evaluation and
training.

Built in: ``replay``, ``transformers``, ``openai``, ``vllm`` and ``remote`` (a ``vilasr serve``).
Other packages add engines through the ``vilasr_ros.engines`` entry-point group (``vilasr_ros_training``
registers ``teacher``); the core never imports them. Each engine class carries ``config_class``, a
frozen dataclass validated in ``__post_init__``, and ``from_config``; :func:`engine_config` builds
and checks a config from loose options (flags, parameters, YAML) before anything heavy is imported
or loaded, and :func:`create_engine` builds the engine from it.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from vilasr_ros.configs import build_config
from vilasr_ros.engines.base import Engine, GenerationRequest, GenerationResult, SamplingConfig
from vilasr_ros.errors import ConfigError

DEFAULT_MODEL_ID = "AntResearchNLP/ViLaSR"
ENTRY_POINT_GROUP = "vilasr_ros.engines"
BUILTIN_ENGINES = {
    "replay": "vilasr_ros.engines.replay:ReplayEngine",
    "transformers": "vilasr_ros.engines.hf:TransformersEngine",
    "openai": "vilasr_ros.engines.openai_compat:OpenAIEngine",
    "vllm": "vilasr_ros.engines.vllm_engine:VLLMEngine",
    "remote": "vilasr_ros.engines.remote:RemoteEngine",
}

__all__ = [
    "DEFAULT_MODEL_ID",
    "Engine",
    "GenerationRequest",
    "GenerationResult",
    "SamplingConfig",
    "create_engine",
    "engine_class",
    "engine_config",
    "engine_names",
]


def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def engine_names() -> tuple[str, ...]:
    """Every engine name: the built-in ones, then those registered by installed packages."""
    return tuple(BUILTIN_ENGINES) + tuple(sorted(set(_plugins()) - set(BUILTIN_ENGINES)))


def engine_class(name: str) -> type:
    """The engine class registered under ``name`` (its module is imported; the engine is not built).

    Raises:
        ConfigError: Unknown name.
        MissingDependencyError: Its package cannot be imported.
    """
    if name in BUILTIN_ENGINES:
        module, _, attr = BUILTIN_ENGINES[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    plugin = _plugins().get(name)
    if plugin is None:
        raise ConfigError(f"unknown engine {name!r}; use one of {', '.join(engine_names())}")
    return plugin.load()


def engine_config(name: str, **options: Any) -> Any:
    """A validated config of engine ``name`` from options; None values mean "the default".

    Raises:
        ConfigError: Unknown engine, an option that engine does not have, a wrong type or range.
    """
    cls = engine_class(name)
    return build_config(cls.config_class, {k: v for k, v in options.items() if v is not None}, f"the {name} engine")


def create_engine(name: str, config: Any = None, **options: Any) -> Engine:
    """Build an engine by name.

    Args:
        name: One of :func:`engine_names`.
        config: Its config (``engine_class(name).config_class``); built from ``options`` when None.
        **options: Fields of that config (None values are ignored).

    Returns:
        The engine.

    Raises:
        ConfigError: Unknown engine name, unknown options, missing or invalid values.
        ModelNotFoundError: Weights absent (transformers, vllm).
        MissingDependencyError: The engine's optional extra is not installed.
    """
    cls = engine_class(name)
    if config is None:
        config = engine_config(name, **options)
    return cls.from_config(config)


def choose_engine(name: str, *, model: str | None = None, base_url: str | None = None) -> tuple[str, str]:
    """Resolve ``auto`` the same way for every front end (``vilasr ask``, ``vilasr agent``, the node).

    ``auto``: a ``base_url`` means a server — ``remote`` when its ``/health`` says it is a
    ``vilasr serve``, else ``openai``; without one, the ``transformers`` engine when the
    weights (``model``, default ``AntResearchNLP/ViLaSR``) are in a local folder or the local Hugging
    Face cache; else the ``replay`` engine with the shipped demo script — and the sentence says, in
    capitals, that its answer is scripted.

    Returns:
        ``(engine name, a plain sentence saying which engine answers and why)``.

    Raises:
        ConfigError: An unknown engine name.
    """
    if name != "auto":
        if name not in engine_names():
            raise ConfigError(f"unknown engine {name!r}; use auto or one of {', '.join(engine_names())}")
        return name, f"engine: {name}"
    if base_url:
        from vilasr_ros.engines.remote import detect_server
        from vilasr_ros.sanitize import redact_url

        if detect_server(base_url) == "remote":
            return "remote", f"engine: remote — the vilasr serve at {redact_url(base_url)} runs the loop"
        return "openai", f"engine: openai — the server at {redact_url(base_url)}"
    from vilasr_ros.errors import VilasrError

    try:
        from vilasr_ros.engines.hf import resolve_model_path

        path = resolve_model_path(model or DEFAULT_MODEL_ID)
        return "transformers", f"engine: transformers — ViLaSR weights at {path}"
    except (VilasrError, ImportError, OSError) as exc:
        return "replay", (
            f"engine: replay — no ViLaSR weights here ({exc}); the answer below is SCRIPTED (the shipped "
            "demo script), not a model's. Download the weights or pass --base-url to a server.")


def engine_options(name: str, given: dict[str, Any], spelling: dict[str, str] | None = None) -> dict[str, Any]:
    """The options in ``given`` (values the user set; None = not set) for engine ``name``.

    Args:
        name: A resolved engine name.
        given: ``{option: value}``; None values are dropped.
        spelling: How the user wrote each option (``{"base_url": "--base-url"}``), for messages.

    Raises:
        ConfigError: The user set an option the engine does not take (``--reflect`` with ``openai``):
            silently ignoring it would run something other than what was asked.
    """
    spelling = spelling or {}
    fields = set(getattr(engine_class(name).config_class, "__dataclass_fields__", {}))
    out = {}
    for option, value in given.items():
        if value is None:
            continue
        if option not in fields:
            takes = ", ".join(spelling.get(f, f) for f in sorted(fields) if f in spelling or not spelling) or "nothing"
            raise ConfigError(f"{spelling.get(option, option)} does not apply to the {name} engine (it takes: {takes})")
        out[option] = value
    return out
