"""Training configs: one YAML per stage (``config/training/<stage>.yaml``) plus ``--set`` overrides.

A config has the stage's own keys (``model``, ``data``, ``max_pixels``, ...) and an ``args`` block
passed as is to trl's ``SFTConfig``/``GRPOConfig`` (``output_dir``, ``learning_rate``, ...; any field
those classes take). ``--set args.max_steps=5`` sets one key (dotted path; the value is read as YAML).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def set_key(config: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` (value parsed as YAML: ``5``, ``1e-5``, ``[a, b]``, ``null``).

    Raises:
        ValueError: No ``=``, or a path through a non-mapping.
    """
    if "=" not in assignment:
        raise ValueError(f"--set takes key=value, got {assignment!r}")
    key, value = assignment.split("=", 1)
    node = config
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {key}: {part!r} is not a mapping")
    node[parts[-1]] = yaml.safe_load(value)


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a stage config and apply overrides.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a mapping, or a bad override.
    """
    config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a training config is a YAML mapping")
    for assignment in overrides or []:
        set_key(config, assignment)
    config.setdefault("args", {})
    return config
