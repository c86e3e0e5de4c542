"""The ``replay`` engine: scripted model turns (spec §7).

For debugging, tests and re-running a saved trace. A replay file is a JSON list with one entry per
model turn: a string (a turn that ended normally) or ``{"text": ..., "finish_reason": "stop" |
"length"}``. A saved ``trace.json`` is accepted too (its turns are replayed).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vilasr_ros.engines.base import Engine, GenerationRequest, GenerationResult
from vilasr_ros.errors import ConfigError, EngineError


def load_responses(source: str | Path | list) -> list[dict[str, Any]]:
    """Normalise a replay list (or a file holding one, or a ``trace.json``) to dicts.

    Raises:
        ConfigError: The file is missing, not JSON, or entries are malformed.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"replay file not found: {path}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"replay file {path} is not JSON: {exc}") from exc
        if isinstance(data, dict) and "turns" in data:  # a saved trace
            data = [{"text": t["text"], "finish_reason": t.get("finish_reason", "stop")} for t in data["turns"]]
    else:
        data = source
    if not isinstance(data, list):
        raise ConfigError("a replay list must be a JSON list of strings or {text, finish_reason} objects")
    out = []
    for i, entry in enumerate(data):
        if isinstance(entry, str):
            out.append({"text": entry, "finish_reason": "stop"})
        elif isinstance(entry, dict) and isinstance(entry.get("text"), str):
            reason = entry.get("finish_reason", "stop")
            if reason not in ("stop", "length"):
                raise ConfigError(f"replay entry {i}: finish_reason must be 'stop' or 'length', got {reason!r}")
            out.append({"text": entry["text"], "finish_reason": reason})
        else:
            raise ConfigError(f"replay entry {i} is neither a string nor an object with 'text': {entry!r}")
    return out


def demo_responses() -> Path:
    """The scripted model turns shipped with the package (the demo scene's answer, see README);
    what ``replay`` plays when no file is given."""
    from importlib import resources

    return Path(str(resources.files("vilasr_ros.resources").joinpath("demo_responses.json")))


@dataclass(frozen=True)
class ReplayConfig:
    """Attributes:
    responses: A replay file (JSON list of turns, or a saved ``trace.json``) or the list itself; None
        plays the shipped demo script (:func:`demo_responses`) and says so in :meth:`ReplayEngine.describe`.
    delay_s: Seconds each turn takes (a stand-in for a model's latency in load tests and benchmarks).
    """

    responses: str | Path | list | None = None
    delay_s: float = 0.0

    def __post_init__(self):
        if self.delay_s < 0:
            raise ConfigError("delay_s must be >= 0")
        if isinstance(self.responses, (str, Path)) and not Path(self.responses).is_file():
            raise ConfigError(f"replay file not found: {self.responses}")


class ReplayEngine(Engine):
    """Returns scripted turns in order; each new query starts from the first one again. The position
    is kept per thread, so concurrent queries (a server's workers, evaluation batches) each replay
    the whole script.

    Args:
        config: A :class:`ReplayConfig`, or its ``responses`` (a replay list, a file holding one, or a
            ``trace.json``; None: the shipped demo).
        **options: :class:`ReplayConfig` fields (``delay_s``).
    """

    name = "replay"
    config_class = ReplayConfig
    primary_option = "responses"
    max_concurrency = 8

    def __init__(self, config: ReplayConfig | str | Path | list | None = None, /, **options: Any):
        self.config = self.resolve_config(config, options)
        self.delay_s = float(self.config.delay_s)
        self.scripted_demo = self.config.responses is None
        self.responses = load_responses(demo_responses() if self.scripted_demo else self.config.responses)
        self._local = threading.local()

    @property
    def _position(self) -> int:
        return getattr(self._local, "position", 0)

    @_position.setter
    def _position(self, value: int) -> None:
        self._local.position = value

    def reset(self) -> None:
        self._position = 0

    def generate(self, request: GenerationRequest) -> GenerationResult:
        position = self._position
        if position >= len(self.responses):
            raise EngineError(
                f"the replay script has {len(self.responses)} turns and the loop asked for turn {position + 1}"
            )
        entry = self.responses[position]
        self._position = position + 1
        if self.delay_s:
            import time

            time.sleep(self.delay_s)
        return GenerationResult(text=entry["text"], finish_reason=entry["finish_reason"])

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"engine": self.name, "turns": len(self.responses), "model": "scripted"}
        if self.scripted_demo:
            out["responses"] = "shipped demo script"
        return out
