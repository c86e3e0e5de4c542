"""Building frozen config dataclasses from loose options (CLI flags, ROS parameters, YAML, ``--set``).

One rule everywhere: an option the config does not have is an error that lists the ones it has; a
value of the wrong type is an error naming the field and the type; ints are accepted for float
fields and numeric strings are not guessed at. Range checks live in each config's
``__post_init__``, so what :func:`build_config` returns is valid.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any

from vilasr_ros.errors import ConfigError


def _allowed_types(annotation: Any) -> tuple[type, ...] | None:
    """The runtime types a field accepts; None when the annotation is too loose to check."""
    if annotation is Any or annotation is None:
        return None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        out: list[type] = []
        for arg in typing.get_args(annotation):
            allowed = _allowed_types(arg)
            if allowed is None:
                return None
            out.extend(allowed)
        return tuple(out)
    if annotation is type(None):
        return (type(None),)
    if origin in (list, tuple, dict):
        return (origin,) if origin is not tuple else (tuple, list)
    if annotation is float:
        return (float, int)
    if isinstance(annotation, type):
        return (annotation,)
    return None


def check_value(name: str, value: Any, annotation: Any, context: str) -> Any:
    """``value`` when it fits ``annotation`` (an int for a float field becomes a float).

    Raises:
        ConfigError: It does not.
    """
    allowed = _allowed_types(annotation)
    if allowed is None:
        return value
    if str in allowed and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bool) and bool not in allowed:  # True is an int; never a number here
        raise ConfigError(f"{context}: {name} must be {_type_name(allowed)}, got {value!r}")
    if not isinstance(value, allowed):
        raise ConfigError(f"{context}: {name} must be {_type_name(allowed)}, got {value!r} ({type(value).__name__})")
    declared = _declared(annotation)
    if isinstance(value, int) and float in declared and int not in declared:
        return float(value)
    return value


def _declared(annotation: Any) -> tuple:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _type_name(allowed: tuple[type, ...]) -> str:
    names = []
    for t in allowed:
        if t is type(None):
            names.append("null")
        elif t is int and float in allowed:
            continue
        else:
            names.append({"str": "a string", "float": "a number", "int": "an integer", "bool": "true or false",
                          "list": "a list", "dict": "a mapping", "tuple": "a list"}.get(t.__name__, t.__name__))
    return " or ".join(dict.fromkeys(names))


def build_config(cls: type, options: dict[str, Any], context: str) -> Any:
    """``cls(**options)`` for a dataclass ``cls``, with unknown names and wrong types refused.

    Args:
        cls: A dataclass (frozen, validating in ``__post_init__``).
        options: Field values; keys not given keep the defaults.
        context: What is being configured, for messages (``"openai engine"``).

    Raises:
        ConfigError: An unknown option, a value of the wrong type, or what ``__post_init__`` raises
            (a ``ValueError`` becomes a ``ConfigError`` with the same text).
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ConfigError(f"{context} has no option {', '.join(unknown)} (its options: {', '.join(sorted(fields))})")
    values = {name: check_value(name, value, hints.get(name, Any), context) for name, value in options.items()}
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{context}: {exc}") from exc


def describe_fields(cls: type) -> dict[str, Any]:
    """``{field: default}`` of a dataclass (``MISSING`` shown as ``None``)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
        else:
            out[f.name] = None
    return out


def resolve_config(config_class: type, primary_option: str | None, config: Any, options: dict[str, Any]) -> Any:
    """A component's config from what its constructor was given: a ``config_class`` instance
    (``options`` override its fields), the value of ``primary_option`` (``BagSource("/bags/run1")``,
    ``TransformersEngine("/models/ViLaSR")``), or nothing (``options`` build one).

    Raises:
        TypeError: ``config`` is neither the config nor a value for ``primary_option``.
        ValueError / ConfigError: What the config's ``__post_init__`` refuses.
    """
    if config is not None and not isinstance(config, config_class):
        if primary_option is None:
            raise TypeError(f"expected a {config_class.__name__}, got {type(config).__name__}")
        options, config = {primary_option: config, **options}, None
    if config is None:
        return config_class(**options)
    return dataclasses.replace(config, **options) if options else config
