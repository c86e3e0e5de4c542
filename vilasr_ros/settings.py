"""Settings whose default, help text, range and run-time mutability are written once.

A setting is a dataclass field made by :func:`setting`: its ``metadata`` carries the help text, the
allowed range or choices, whether it may change while a node runs, the ROS parameter name (dotted
names such as ``buffer.max_frames``) and, where the value is another component's setting, where its
default comes from (:func:`default_of`). The node's parameter descriptors, the CLI flags that mirror
them and the check of ``config/agent.yaml`` are generated from these fields
(:func:`specs`); nothing else repeats a default.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from vilasr_ros.errors import ConfigError


@dataclass(frozen=True)
class Spec:
    """One setting, as a node declares it.

    Attributes:
        name: The ROS parameter name (``buffer.max_frames``).
        attr: The dataclass field.
        default: Its default.
        help: One line: what it does, with its unit.
        low, high: Inclusive numeric range, or None.
        choices: The allowed values, or None.
        dynamic: May change while the node runs (read-only otherwise: restart to change).
        source: ``"Class.field"`` whose default this one is (None: its own).
    """

    name: str
    attr: str
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    dynamic: bool = False
    source: str | None = None

    def check(self, value: Any) -> None:
        """Raises ConfigError when ``value`` is outside this setting's range or choices."""
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{self.name}={value!r} is not one of {', '.join(map(str, self.choices))}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise ConfigError(f"{self.name}={value!r} is outside {self.low:g}..{self.high:g}")


@dataclass(frozen=True)
class Inherited:
    """A default taken from another component (:func:`default_of`): the value and ``"Class.attr"``."""

    value: Any
    source: str


def default_of(cls: type, attr: str, convert: Callable[[Any], Any] | None = None) -> Inherited:
    """The default of a dataclass field or of a keyword of ``cls.__init__`` — for a setting whose
    default is another component's (optionally converted: bytes → MiB, None → 0).

    Raises:
        KeyError: ``cls`` has no such field or keyword.
    """
    if dataclasses.is_dataclass(cls):
        f = {f.name: f for f in dataclasses.fields(cls)}[attr]
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    else:
        value = inspect.signature(cls.__init__).parameters[attr].default
    return Inherited(convert(value) if convert else value, f"{cls.__name__}.{attr}")


def setting(default: Any, help: str, *, name: str | None = None, low: float | None = None, high: float | None = None,
            choices: tuple | None = None, dynamic: bool = False) -> Any:
    """A dataclass field carrying its parameter description (see the module docstring).

    Args:
        default: The default, or ``default_of(...)`` when it is another component's.
        help: One line with the unit.
        name: The ROS parameter name when it is not the field's (dotted names).
        low, high: Inclusive range of a number.
        choices: The allowed values.
        dynamic: May change at run time.
    """
    source = None
    if isinstance(default, Inherited):
        default, source = default.value, default.source
    meta = {"help": help, "name": name, "low": low, "high": high, "choices": choices, "dynamic": dynamic, "source": source}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def specs(cls: type) -> dict[str, Spec]:
    """``{parameter name: Spec}`` of a settings dataclass, in field order."""
    out = {}
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        m = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        name = m["name"] or f.name
        out[name] = Spec(name, f.name, default, m["help"], m["low"], m["high"], m["choices"], m["dynamic"], m["source"])
    return out


def check_settings(obj: Any) -> None:
    """Check every field of a settings dataclass against its range and choices (``__post_init__``).

    Raises:
        ConfigError: The first value outside its range or choices.
    """
    for spec in specs(type(obj)).values():
        spec.check(getattr(obj, spec.attr))


def from_parameters(cls: type, values: dict[str, Any]) -> Any:
    """A settings dataclass from ``{parameter name: value}`` (names not given keep their defaults).

    Raises:
        ConfigError: A name the class does not have, or a value outside its range or choices.
    """
    table = specs(cls)
    unknown = sorted(set(values) - set(table))
    if unknown:
        raise ConfigError(f"unknown parameters {unknown}")
    return cls(**{table[name].attr: value for name, value in values.items()})
