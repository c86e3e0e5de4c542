"""Training configs: one YAML per stage (``config/training/<stage>.yaml``) plus ``--set`` overrides.

A config has the stage's own keys (``model``, ``data``, ``max_pixels``, ...: the fields of
:class:`SFTStage`, :class:`RRSStage`, :class:`GRPOStage`, each default written there once) and
an ``args`` block passed to trl's ``SFTConfig``/``GRPOConfig`` (``output_dir``, ``learning_rate``,
...; any field those classes take). ``--set args.max_steps=5`` sets one key (dotted path; the value
is read as YAML).

Everything is checked when the config is loaded, before a model is touched: YAML syntax (file and
``--set`` values), unknown keys (stage keys and trl fields), value types (against the stage schema and
the trl dataclass' annotations) and ranges (:data:`ARG_RANGES`). Every problem is a one-line
``ValueError`` naming the file or flag and the key.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from vilasr_ros import protocol
from vilasr_ros.configs import build_config, check_value
from vilasr_ros.errors import ConfigError

RL_MAX_IMAGES = 42
"""``MAX_IMAGES`` of the RL rollout (``verl/workers/rollout/vllm_rollout/vllm_rollout_spmd_video.py`` L52);
evaluation allows 45."""
RL_MAX_RESPONSE_TOKENS = 13312
"""``data.max_response_length`` of ``train/rl/train_grpo.sh`` L10: a whole trajectory's budget."""


ADVANTAGE_EPSILON = 1e-6
"""verl's ``eps`` in ``compute_grpo_outcome_advantage`` (``verl/trainer/core_algos.py`` L138, L172)."""


def _under(path: str | None, data_dir: str | None) -> str | None:
    """``path`` under ``data_dir`` unless absolute (or no ``data_dir``)."""
    if path is None:
        return None
    p = Path(path)
    return str(p if p.is_absolute() or data_dir is None else Path(data_dir) / p)


@dataclass(frozen=True)
class ItemsSpec:
    """Questions with answers for stages 2 and 3 (:func:`vilasr_ros_training.data.load_items`).

    Attributes:
        path: A dataset file or folder; relative to the stage's ``data_dir`` (resolved at load).
        dataset: ``sim``, a benchmark name of :func:`vilasr_ros.evaluation.datasets.load_dataset`,
            or ``vilasr_rl`` (the official RL file).
        image_folder: Where a benchmark's images are (relative to ``data_dir``).
        frames: Frames per video question.
        types: Keep only these ``original_question_type`` values.
        limit: Keep the first N items.
        data_dir: The stage's ``data_dir`` (the RL file's image root); set at load.
    """

    path: str
    dataset: str = "sim"
    image_folder: str | None = None
    frames: int = 16
    types: list | None = None
    limit: int | None = None
    data_dir: str | None = None

    def __post_init__(self):
        if self.frames < 1:
            raise ValueError(f"items.frames must be >= 1, got {self.frames}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"items.limit must be >= 1, got {self.limit}")
        if self.types is not None and not all(isinstance(t, str) for t in self.types):
            raise ValueError(f"items.types must be a list of question types, got {self.types!r}")

    def resolved(self, data_dir: str | None) -> "ItemsSpec":
        """This spec with its paths under ``data_dir`` and ``data_dir`` kept."""
        return replace(self, path=_under(self.path, data_dir), image_folder=_under(self.image_folder, data_dir),
                       data_dir=data_dir)


DATA_FORMATS = ("llamafactory", "vilasr", "sim_teacher", "traces")


@dataclass(frozen=True)
class DataSpec:
    """One ``data:`` entry of an SFT stage (:func:`vilasr_ros_training.data.load_source`).

    Attributes:
        format: ``llamafactory`` (a dataset of ``data_dir/dataset_info.json``), ``vilasr`` (one
            ShareGPT file), ``sim_teacher`` (teacher trajectories on a sim dataset), ``traces``
            (saved traces, e.g. stage 2's output).
        dataset: The ``llamafactory`` dataset name.
        path: The file or folder of the other formats (relative to ``data_dir``, resolved at load).
        image_root: Images of a ``vilasr`` file (default: ``data_dir``, else the file's folder).
        out: Where ``sim_teacher`` writes its traces (default ``PATH/teacher``).
        reflect: ``sim_teacher``: share of reflective trajectories, in [0, 1].
        seed: ``sim_teacher`` seed.
        limit: Keep the first N examples.
        data_dir: The stage's ``data_dir``; set at load.
    """

    format: str
    dataset: str | None = None
    path: str | None = None
    image_root: str | None = None
    out: str | None = None
    reflect: float = 0.0
    seed: int = 0
    limit: int | None = None
    data_dir: str | None = None

    def __post_init__(self):
        if self.format not in DATA_FORMATS:
            raise ValueError(f"data format must be one of {DATA_FORMATS}, got {self.format!r}")
        if self.format == "llamafactory" and not self.dataset:
            raise ValueError("a data entry of format llamafactory needs 'dataset' (and the stage's data_dir)")
        if self.format != "llamafactory" and not self.path:
            raise ValueError(f"a data entry of format {self.format} needs 'path'")
        if not 0.0 <= self.reflect <= 1.0:
            raise ValueError(f"data reflect must be in [0, 1], got {self.reflect}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"data limit must be >= 1, got {self.limit}")

    def resolved(self, data_dir: str | None) -> "DataSpec":
        return replace(self, path=_under(self.path, data_dir), image_root=_under(self.image_root, data_dir),
                       data_dir=data_dir)


def _check_family(stage: Any) -> None:
    """An unknown ``model_family``: a one-line ConfigError listing the known ones, at load."""
    if getattr(stage, "model_family", None) is not None:
        from vilasr_ros.families import model_family

        model_family(stage.model_family)


def _at_least(stage: Any, names: dict[str, int]) -> None:
    for name, low in names.items():
        value = getattr(stage, name)
        if value is not None and value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")


@dataclass(frozen=True, kw_only=True)
class PolicyStage:
    """What the SFT and GRPO stages share: the policy being trained.

    Attributes:
        freeze_vision: Freeze the vision tower and its merger.
        lora: None (full fine-tuning) or ``{r, alpha, dropout, target_modules?}``.
        resume: True (the last checkpoint in ``output_dir``) or a checkpoint folder.
        attn_implementation: transformers' ``attn_implementation``.
        model_family: ``qwen2_5_vl`` / ``qwen3_vl`` (:mod:`vilasr_ros.families`); None: from the
            model folder's ``config.json``. It picks the loading class, the image resize, the
            LLaMA-Factory template and the coordinates the data is converted to.
        args: trl ``SFTConfig`` / ``GRPOConfig`` fields.
    """

    freeze_vision: bool = True
    lora: dict | None = None
    resume: bool | str | None = None
    attn_implementation: str | None = None
    model_family: str | None = None
    args: dict = field(default_factory=dict)

    def family(self, model_path=None):
        """The :class:`~vilasr_ros.families.ModelFamily` of this stage's policy (``model_family``, else
        ``model_path``'s ``config.json``, else the default).

        Raises:
            ConfigError: An unknown family name or ``model_type``.
        """
        from vilasr_ros.families import resolve_family

        return resolve_family(self.model_family, model_path)


@dataclass(frozen=True)
class SFTStage(PolicyStage):
    """Stage 1 (cold start) or any SFT (:func:`vilasr_ros_training.sft.train_sft`); defaults: the
    authors' LLaMA-Factory run (``config/training/sft.yaml`` names each source).

    Attributes:
        model: Folder or HF id in the local cache (never downloaded).
        data_dir: Folder the relative data paths are under (ViLaSR-data: holds ``dataset_info.json``).
        data: The training sources.
        max_pixels: Image area cap (``image_max_pixels`` 1003520).
        max_length: Token cap per example (``cutoff_len``); None: no cap.
        sft_format: ``llamafactory`` (LLaMA-Factory's tokens) or ``runtime`` (``Trace.chat_text``).
        (and the :class:`PolicyStage` fields; ``args``: trl ``SFTConfig`` fields)
    """

    model: str
    data_dir: str | None = None
    data: list = field(default_factory=list)
    max_pixels: int = protocol.prompts()["image_max_pixels"]["cold_start_sft"]
    max_length: int | None = None
    sft_format: str = "llamafactory"

    def __post_init__(self):
        _at_least(self, {"max_pixels": protocol.MIN_PIXELS, "max_length": 1})
        _check_family(self)
        if self.sft_format not in ("llamafactory", "runtime"):
            raise ValueError(f"sft_format must be llamafactory or runtime, got {self.sft_format!r}")
        object.__setattr__(self, "data", [_nested(DataSpec, d, "data entry").resolved(self.data_dir)
                                          for d in self.data])


@dataclass(frozen=True)
class RRSStage:
    """Stage 2, reflective rejection sampling (:func:`vilasr_ros_training.rrs.run_rrs`).

    Attributes:
        items: The questions sampled.
        out: Output folder (``samples.jsonl``, ``kept/``, ``rrs_summary.json``).
        data_dir: Folder the relative item paths are under.
        engine: ``{name, model, ...}`` for :func:`vilasr_ros.engines.create_engine` (the stage-1
            model); None: ``transformers`` with its defaults.
        samples: K trajectories per item (8).
        sampling: ``temperature``/``top_p``/``max_tokens``/``seed`` (1.0, 1.0, 2048).
        min_accuracy: A trajectory is correct when its accuracy reward reaches this, in [0, 1].
        max_pixels: Image area cap (the evaluation's 351232).
        batch_size: Items in flight (engines that take concurrent requests).
        seed: Sample k of an item uses ``seed + k``.
        sft: Then SFT on the kept traces (an SFT stage without ``data``).
        model_family: The sampled model's family (:mod:`vilasr_ros.families`; None: the engine's own,
            e.g. from a ``transformers`` model's ``config.json``; set it for a served model).
    """

    items: ItemsSpec
    out: str
    data_dir: str | None = None
    engine: dict | None = None
    samples: int = 8
    sampling: dict | None = None
    min_accuracy: float = 1.0
    max_pixels: int = protocol.prompts()["image_max_pixels"]["eval_default"]
    batch_size: int = 16
    seed: int = 0
    sft: SFTStage | None = None
    model_family: str | None = None
    args: dict = field(default_factory=dict)

    def __post_init__(self):
        _at_least(self, {"samples": 1, "batch_size": 1, "max_pixels": protocol.MIN_PIXELS})
        _check_family(self)
        if not 0.0 <= self.min_accuracy <= 1.0:
            raise ValueError(f"min_accuracy must be in [0, 1], got {self.min_accuracy}")
        object.__setattr__(self, "items", _nested(ItemsSpec, self.items, "items").resolved(self.data_dir))
        if self.sft is not None:
            object.__setattr__(self, "sft", _nested(SFTStage, self.sft, "sft block"))


@dataclass(frozen=True)
class GRPOStage(PolicyStage):
    """Stage 3 (:func:`vilasr_ros_training.grpo.train_grpo`); defaults: the authors' run
    (``train/rl/train_grpo.sh``; ``config/training/grpo.yaml`` names each source).

    Attributes:
        model: The stage-2 model.
        items: The questions (``{dataset: vilasr_rl, path: rl/vilasr_rl_data.jsonl}``: the official file).
        data_dir: Folder the relative item paths are under.
        max_pixels: Image area cap (200704, the RL setting).
        max_images: Images per trajectory (42, the rollout's ``MAX_IMAGES``).
        max_tokens_per_turn: Tokens per model call (None: the spec's 1024).
        max_response_tokens: A whole trajectory's budget after the first prompt (13312).
        prompt_layout: First turn: ``rl`` (default for ``vilasr_rl`` items) or ``eval`` (other items).
        on_tool_error: ``retry`` (the rollout drops a failed drawing and generates again) or ``stop``.
        lockstep: A sample's tool call at its last call, while a batch-mate still has calls, is drawn
            and then nothing more is generated (:attr:`ReasonerConfig.batch_max_turns`).
        advantage_epsilon: ``(r - mean) / (std + eps)`` (verl 1e-6; trl's own 1e-4).
        (and the :class:`PolicyStage` fields; ``args``: trl ``GRPOConfig`` fields)
    """

    model: str
    items: ItemsSpec
    data_dir: str | None = None
    max_pixels: int = protocol.prompts()["image_max_pixels"]["rl_training"]
    max_images: int = RL_MAX_IMAGES
    max_tokens_per_turn: int | None = None
    max_response_tokens: int | None = RL_MAX_RESPONSE_TOKENS
    prompt_layout: str | None = None
    on_tool_error: str = "retry"
    lockstep: bool = True
    advantage_epsilon: float = ADVANTAGE_EPSILON

    def __post_init__(self):
        _at_least(self, {"max_pixels": protocol.MIN_PIXELS, "max_images": 1, "max_tokens_per_turn": 1,
                         "max_response_tokens": 1})
        _check_family(self)
        if self.on_tool_error not in ("retry", "stop"):
            raise ValueError(f"on_tool_error must be retry or stop, got {self.on_tool_error!r}")
        if not self.advantage_epsilon >= 0.0:
            raise ValueError(f"advantage_epsilon must be >= 0, got {self.advantage_epsilon}")
        items = _nested(ItemsSpec, self.items, "items").resolved(self.data_dir)
        object.__setattr__(self, "items", items)
        if self.prompt_layout is None:
            object.__setattr__(self, "prompt_layout", "rl" if items.dataset == "vilasr_rl" else "eval")
        if self.prompt_layout not in protocol.LAYOUTS:
            raise ValueError(f"prompt_layout must be one of {protocol.LAYOUTS}, got {self.prompt_layout!r}")


def _nested(cls: type, value: Any, what: str) -> Any:
    """A nested stage block (a dict from YAML) as ``cls``; already one: as is."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a mapping, got {value!r}")
    return _build(cls, value, what)


def _build(cls: type, options: dict[str, Any], what: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)} - {"data_dir"} if cls in (ItemsSpec, DataSpec) else \
        {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} for the {what} (its keys: {', '.join(sorted(names))})")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in options
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"the {what} needs {missing[0]!r}")
    options = dict(options)
    for key, nested in (("items", ItemsSpec), ("sft", SFTStage)):  # nested blocks first: build_config checks types
        if key in names and options.get(key) is not None:
            options[key] = _nested(nested, options[key], f"{key} block" if key == "sft" else key)
    try:
        return build_config(cls, options, what)
    except ConfigError as exc:
        raise ValueError(str(exc).replace(f"{what}: {what}", what)) from None


def as_spec(cls: type, spec: Any, data_dir: Any, what: str) -> Any:
    """``spec`` (a mapping or ``cls``: :class:`ItemsSpec`, :class:`DataSpec`) as ``cls`` with its
    paths resolved under ``data_dir`` (a spec resolved at load keeps its own)."""
    data_dir = None if data_dir is None else str(data_dir)
    if isinstance(spec, cls):
        return spec if data_dir is None or spec.data_dir is not None else spec.resolved(data_dir)
    return _nested(cls, spec, what).resolved(data_dir)


STAGES: dict[str, type] = {"sft": SFTStage, "rrs": RRSStage, "grpo": GRPOStage}


def stage_config(stage: str, config: Any, where: str = "config") -> Any:
    """A stage config (a mapping, or already the dataclass) as its validated dataclass.

    Raises:
        ValueError: An unknown stage, an unknown or missing key, a wrong type or a value out of
            range — one line naming ``where`` and the key.
    """
    cls = STAGES.get(stage)
    if cls is None:
        raise ValueError(f"unknown training stage {stage!r}; use one of {', '.join(STAGES)}")
    if isinstance(config, cls):
        return config
    try:
        built = _build(cls, dict(config), f"{stage} stage")
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    check_args(stage, built.args, where)
    if isinstance(built, RRSStage) and built.sft is not None:
        check_args("sft", built.sft.args, f"{where} (sft block)")
    return built


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


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_extended(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """A config file, with its ``extends:`` (a path relative to the file) read first and merged under it."""
    if path.resolve() in seen:
        raise ValueError(f"{path}: extends itself ({' -> '.join(str(p) for p in (*seen, path))})")
    config = _yaml(path.read_text(encoding="utf-8"), str(path)) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a training config is a YAML mapping")
    parent = config.pop("extends", None)
    if parent is None:
        return config
    if not isinstance(parent, str):
        raise ValueError(f"{path}: extends must be a path (relative to this file), got {parent!r}")
    base_path = (path.parent / parent)
    if not base_path.is_file():
        raise ValueError(f"{path}: extends {parent!r}, but {base_path} does not exist")
    return _merged(_read_extended(base_path, (*seen, path.resolve())), config)


def load_config(path: str | Path, overrides: list[str] | None = None, stage: str | None = None) -> Any:
    """Read a stage config and apply overrides; with ``stage``, return its validated dataclass
    (:class:`SFTStage`, :class:`RRSStage`, :class:`GRPOStage`; relative data paths resolved against
    ``data_dir``), else the mapping.

    A config may start from another: ``extends: ../sft.yaml`` (relative to the file) reads that one
    first and lays this file's keys over it (mappings such as ``args`` merge key by key; lists such
    as ``data`` are replaced) — the ``config/training/qwen3_vl/`` variants are written that way.

    Raises:
        FileNotFoundError: No such file.
        ValueError: YAML errors, a bad override, a missing or circular ``extends``, or a config that
            does not check (one line each).
    """
    path = Path(path)
    config = _read_extended(path, ())
    for assignment in overrides or []:
        set_key(config, assignment)
    config.setdefault("args", {})
    if stage is not None:
        return stage_config(stage, config, f"{path}" + (" with --set" if overrides else ""))
    return config
