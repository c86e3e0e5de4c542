"""Training configs: one YAML per stage (``config/training/<stage>.yaml``) plus ``--set`` overrides.

A config has the stage's own keys (``model``, ``data``, ``max_pixels``, ...; :data:`STAGE_KEYS`) and
an ``args`` block passed to trl's ``SFTConfig``/``GRPOConfig`` (``output_dir``, ``learning_rate``,
...; any field those classes take). ``--set args.max_steps=5`` sets one key (dotted path; the value
is read as YAML).

Everything is checked when the config is loaded, before a model is touched: YAML syntax (file and
``--set`` values), unknown keys (stage keys and trl fields), value types (against the stage schema and
the trl dataclass' annotations) and ranges (:data:`ARG_RANGES`). Every problem is a one-line
``ValueError`` naming the file or flag and the key.
"""

from __future__ import annotations

import math
import typing
from pathlib import Path
from typing import Any

import yaml

from vilasr_ros.configs import check_value
from vilasr_ros.errors import ConfigError

# Stage keys: name -> (allowed types, required). ``args`` is checked against trl's config class.
_SFT_KEYS: dict[str, tuple[Any, bool]] = {
    "model": (str, True), "data_dir": (str | None, False), "data": (list, False), "max_pixels": (int, False),
    "max_length": (int | None, False), "sft_format": (str, False),
    "freeze_vision": (bool, False), "lora": (dict | None, False), "resume": (bool | str | None, False),
    "attn_implementation": (str | None, False), "args": (dict, False),
}
STAGE_KEYS: dict[str, dict[str, tuple[Any, bool]]] = {
    "sft": _SFT_KEYS,
    "rrs": {"data_dir": (str | None, False), "items": (dict, True), "engine": (dict | None, False), "samples": (int, False),
            "sampling": (dict | None, False), "min_accuracy": (float, False), "max_pixels": (int, False),
            "batch_size": (int, False), "seed": (int, False), "out": (str, True), "sft": (dict | None, False),
            "args": (dict, False)},
    "grpo": {"model": (str, True), "data_dir": (str | None, False), "items": (dict, True), "max_pixels": (int, False), "max_images": (int, False),
             "max_tokens_per_turn": (int | None, False), "max_response_tokens": (int | None, False),
             "prompt_layout": (str, False), "on_tool_error": (str, False),
             "freeze_vision": (bool, False), "lora": (dict | None, False),
             "resume": (bool | str | None, False), "attn_implementation": (str | None, False), "args": (dict, False)},
}
TRL_CLASS = {"sft": "SFTConfig", "grpo": "GRPOConfig", "rrs": None}

# Ranges of the settings people get wrong; (low, high, low inclusive).
ARG_RANGES: dict[str, tuple[float, float, bool]] = {
    "learning_rate": (0.0, math.inf, False), "num_train_epochs": (0.0, math.inf, False),
    "per_device_train_batch_size": (1, math.inf, True), "gradient_accumulation_steps": (1, math.inf, True),
    "logging_steps": (0.0, math.inf, False), "save_steps": (0.0, math.inf, False),
    "warmup_steps": (0.0, math.inf, True), "weight_decay": (0.0, math.inf, True), "num_generations": (2, math.inf, True),
    "temperature": (0.0, math.inf, True), "beta": (0.0, math.inf, True), "max_grad_norm": (0.0, math.inf, True),
    "epsilon": (0.0, 1.0, True), "epsilon_high": (0.0, math.inf, True),
}
_STAGE_RANGES = {"max_pixels": 3136, "max_images": 1, "samples": 1, "batch_size": 1, "max_length": 1,
                 "max_tokens_per_turn": 1, "max_response_tokens": 1}


def _yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{where}:{line} YAML error: {problem}") from None


def set_key(config: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` (value parsed as YAML: ``5``, ``1e-5``, ``[a, b]``, ``null``).

    Raises:
        ValueError: No ``=``, an empty key or key part, a value that is not YAML, or a path through
            a non-mapping.
    """
    if "=" not in assignment:
        raise ValueError(f"--set takes KEY=VALUE, got {assignment!r}")
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(p.strip() for p in parts):
        raise ValueError(f"--set {assignment!r}: empty key (write e.g. args.max_steps=5)")
    parsed = _yaml(value, f"--set {key}")
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {key}: {part!r} is not a mapping")
    node[parts[-1]] = parsed


def _check_range(name: str, value: Any, where: str) -> None:
    if name == "max_steps":
        if isinstance(value, int) and (value == -1 or value > 0):
            return
        raise ValueError(f"{where}: max_steps must be a positive number of steps (or -1: use num_train_epochs), got {value!r}")
    if name in ARG_RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high, inclusive = ARG_RANGES[name]
        ok = (value >= low if inclusive else value > low) and value <= high and math.isfinite(value)
        if not ok:
            bound = f"{'>=' if inclusive else '>'} {low}" + (f" and <= {high}" if high != math.inf else "")
            raise ValueError(f"{where}: {name} must be {bound}, got {value!r}")


def check_args(stage: str, args: dict[str, Any], where: str) -> None:
    """Check an ``args`` block against trl's config class of ``stage``: names, types, ranges.

    Raises:
        ValueError: The first problem found.
    """
    name = TRL_CLASS.get(stage)
    if name is None:
        if args:
            raise ValueError(f"{where}: the {stage} stage takes no args block (its SFT settings go under sft.args)")
        return
    import dataclasses

    from vilasr_ros.errors import require

    trl = require("trl", "train")
    cls = getattr(trl, name)
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in args.items():
        if key not in fields:
            raise ValueError(f"{where}: args.{key} is not a trl {name} setting")
        try:
            check_value(f"args.{key}", value, hints.get(key, Any), where)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        _check_range(f"args.{key}".split(".")[-1], value, f"{where}: args")


def check_config(stage: str, config: dict[str, Any], where: str) -> None:
    """Check a stage config (keys, types, ranges; ``args`` against trl; rrs's ``sft`` block as sft).

    Raises:
        ValueError: The first problem found, as one line naming ``where`` and the key.
    """
    schema = STAGE_KEYS.get(stage)
    if schema is None:
        raise ValueError(f"unknown training stage {stage!r}; use one of {', '.join(STAGE_KEYS)}")
    unknown = sorted(set(config) - set(schema))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} for the {stage} stage "
                         f"(its keys: {', '.join(sorted(schema))})")
    for key, (types, required) in schema.items():
        if key not in config:
            if required:
                raise ValueError(f"{where}: the {stage} stage needs {key!r}")
            continue
        try:
            check_value(key, config[key], types, where)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        value = config[key]
        if key in _STAGE_RANGES and isinstance(value, int) and value < _STAGE_RANGES[key]:
            raise ValueError(f"{where}: {key} must be >= {_STAGE_RANGES[key]}, got {value}")
    if stage == "rrs" and not 0.0 <= float(config.get("min_accuracy", 1.0)) <= 1.0:
        raise ValueError(f"{where}: min_accuracy must be in [0, 1]")
    check_args(stage, config.get("args") or {}, where)
    if stage == "rrs" and config.get("sft"):
        check_config("sft", config["sft"], f"{where} (sft block)")


def load_config(path: str | Path, overrides: list[str] | None = None, stage: str | None = None) -> dict[str, Any]:
    """Read a stage config, apply overrides and (with ``stage``) check it.

    Raises:
        FileNotFoundError: No such file.
        ValueError: YAML errors, a bad override, or a config that does not check (one line each).
    """
    path = Path(path)
    config = _yaml(path.read_text(encoding="utf-8"), str(path)) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a training config is a YAML mapping")
    for assignment in overrides or []:
        set_key(config, assignment)
    config.setdefault("args", {})
    if stage is not None:
        check_config(stage, config, f"{path}" + (" with --set" if overrides else ""))
    return config
