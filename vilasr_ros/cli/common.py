"""What every ``vilasr`` command shares: one-line errors, number parsers, and the engine flags
(``--engine`` and its options, checked against the engine chosen before anything is loaded)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vilasr_ros.errors import VilasrError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
TYPE_SPELLINGS = ("free-form", "multiple-choice", "numerical", "regression", "vci")
ENGINE_FLAGS = {
    "model": "--model", "base_url": "--base-url", "api_key_env": "--api-key-env", "responses": "--responses",
    "device": "--device", "turn_reuse": "--no-turn-reuse", "reflect": "--reflect",
    "timeout_s": "--request-timeout", "image_format": "--image-format", "token_env": "--token-env",
}


class UserError(VilasrError, ValueError):
    """A mistake on the command line: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage block is one ``--help`` away)."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def problem_type(text: str) -> str:
    """argparse ``type=`` for ``--type``: the CLI spellings, normalised to the reference's keys."""
    from vilasr_ros.errors import QueryError
    from vilasr_ros.protocol import normalize_problem_type

    try:
        return normalize_problem_type(text)
    except QueryError:
        raise argparse.ArgumentTypeError(f"unknown --type {text!r}; use one of {', '.join(TYPE_SPELLINGS)}") from None


def _at_least(text: str, cast, low) -> float | int:
    """``cast(text)`` when it is a number ``>= low``; else the one-line argparse error."""
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a {'whole number' if cast is int else 'number'}, got {text!r}") from None
    if not value >= low:
        raise argparse.ArgumentTypeError(f"expected a number >= {low}, got {text}")
    return value


def positive_int(text: str) -> int:
    return _at_least(text, int, 1)


def non_negative_int(text: str) -> int:
    return _at_least(text, int, 0)


def non_negative_float(text: str) -> float:
    return _at_least(text, float, 0)


def collect_images(paths: list[str]) -> list[Path]:
    """Image files named, or found (sorted by name) in folders named.

    Raises:
        UserError: A path that does not exist, or no image found.
    """
    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"--images: {path} does not exist")
    if not files:
        raise UserError(f"--images: no .png/.jpg/.bmp/.webp images in {' '.join(paths)}")
    return files


# ----------------------------------------------------------------------------- engines


def add_engine_arguments(parser: argparse.ArgumentParser, *, sampling: bool = True) -> None:
    """Engine flags shared by ``ask``, ``agent``, ``eval run`` and ``serve``."""
    from vilasr_ros.engines import engine_names

    g = parser.add_argument_group("engine (the same for every command)")
    g.add_argument("--engine", default="auto", choices=("auto",) + engine_names(),
                   help="auto (default): a server with --base-url, else local ViLaSR weights, else the scripted demo")
    g.add_argument("--model", help="model folder or Hugging Face id (default AntResearchNLP/ViLaSR); teacher: a sim dataset")
    g.add_argument("--base-url", help="server: OpenAI-compatible (http://gpu:8000/v1) or a `vilasr serve`")
    g.add_argument("--api-key-env", help="environment variable holding the server's API key")
    g.add_argument("--token-env", help="remote engine: environment variable holding the `vilasr serve` token")
    g.add_argument("--responses", help="replay engine: JSON list of model turns or a trace.json (default: the demo)")
    g.add_argument("--device", help="transformers engine: cpu | cuda | cuda:N (default: cuda when available)")
    g.add_argument("--request-timeout", type=non_negative_float, help="server engines: deadline of one model call (s)")
    g.add_argument("--image-format", choices=("png", "jpeg", "bmp"), help="server engines: how frames travel (png)")
    g.add_argument("--no-turn-reuse", action="store_true",
                   help="transformers engine: re-run the whole conversation every turn (no KV/vision reuse)")
    g.add_argument("--reflect", type=non_negative_float,
                   help="teacher engine: probability of a deliberate wrong box followed by its correction")
    if sampling:  # the flags that mirror the node's parameters take their help and defaults from them
        from vilasr_ros.agent_settings import AgentNodeSettings
        from vilasr_ros.settings import specs

        table = specs(AgentNodeSettings)
        s = parser.add_argument_group("reasoning loop")
        for flag, name, kind in (("--temperature", "temperature", non_negative_float), ("--top-p", "top_p", float),
                                 ("--max-tokens", "max_tokens", positive_int), ("--max-pixels", "max_pixels", positive_int),
                                 ("--max-turns", "max_turns", positive_int)):
            s.add_argument(flag, type=kind, help=f"{table[name].help} (default {table[name].default})")
        s.add_argument("--model-family", help=table["model_family"].help)
        s.add_argument("--no-tools", action="store_true",
                       help="the no-tools baseline: the same question without the drawing tools, one plain answer")


def given_engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options the user set on the command line (None = not set)."""
    return {
        "model": args.model, "base_url": args.base_url, "api_key_env": args.api_key_env,
        "token_env": getattr(args, "token_env", None), "responses": args.responses, "device": args.device,
        "turn_reuse": False if args.no_turn_reuse else None, "reflect": args.reflect,
        "timeout_s": args.request_timeout, "image_format": args.image_format,
    }


@dataclass
class EngineChoice:
    """An engine chosen and its config validated — nothing loaded yet."""

    name: str
    config: Any
    sentence: str
    options: dict[str, Any]


def choose(args: argparse.Namespace, *, standalone: bool = True) -> EngineChoice:
    """Resolve ``--engine`` and check every engine flag against that engine (no model is loaded).

    Raises:
        UserError: A flag the engine does not take, a missing or invalid value.
    """
    from vilasr_ros.engines import choose_engine, engine_class, engine_config, engine_options
    from vilasr_ros.errors import ConfigError

    try:
        name, sentence = choose_engine(args.engine, model=args.model, base_url=args.base_url)
        options = engine_options(name, given_engine_options(args), ENGINE_FLAGS)
        config = engine_config(name, **options)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    if name in ("transformers", "vllm"):  # weights are checked here, before torch or the model load
        from vilasr_ros.engines.hf import resolve_model_path
        from vilasr_ros.errors import ModelNotFoundError

        try:
            resolve_model_path(config.model)
        except ModelNotFoundError as exc:
            raise UserError(str(exc)) from None
    if standalone:
        for option in engine_class(name).standalone_requires:
            if getattr(config, option, None) is None:
                raise UserError(f"the {name} engine needs {ENGINE_FLAGS.get(option, option)} here "
                                f"(see `vilasr ask --help`)")
    return EngineChoice(name, config, sentence, options)


def loop_config(args: argparse.Namespace):
    from vilasr_ros.errors import ConfigError
    from vilasr_ros.reasoner import reasoner_config

    from vilasr_ros.families import detect_family, model_family

    try:
        model, family = getattr(args, "model", None), getattr(args, "model_family", None)
        found = model_family(family) if family else detect_family(model) if model and Path(model).is_dir() else None
        return reasoner_config(max_pixels=args.max_pixels, max_turns=args.max_turns, temperature=args.temperature,
                               top_p=args.top_p, max_tokens=args.max_tokens, model_family=found and found.name,
                               prompt_layout="baseline" if getattr(args, "no_tools", False) else None)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def build_reasoner(choice: EngineChoice, config):
    from vilasr_ros.engines import create_engine
    from vilasr_ros.reasoner import Reasoner

    return Reasoner(create_engine(choice.name, choice.config), config)


def check_source_spec(spec: str) -> None:
    """Raises UserError for a ``--source`` whose kind is not installed."""
    from vilasr_ros.sources import source_kinds

    kind = spec.partition(":")[0]
    if kind not in source_kinds():
        raise UserError(f"--source {spec!r}: unknown kind {kind!r}; use one of "
                        + ", ".join(f"{k}:..." for k in source_kinds()))


MODULE_EXTRAS = {"torch": "transformers", "accelerate": "transformers", "openai": "openai", "httpx2": "openai",
                 "vllm": "vllm", "mujoco": "sim", "matplotlib": "eval", "trl": "train", "peft": "train",
                 "datasets": "train", "tensorboard": "train", "pyrealsense2": "realsense", "cv2": "geometry",
                 "rosbags": "bags", "mcap": "bags", "fastapi": "serve", "uvicorn": "serve", "rclpy": "ros",
                 "open3d": "geometry", "rerun": "rerun"}


def _missing(exc: ImportError) -> str:
    """One line naming the extra that provides a missing module."""
    from vilasr_ros.errors import MissingDependencyError

    if isinstance(exc, MissingDependencyError):
        return _one_line(exc)
    top = (exc.name or "").partition(".")[0]
    extra = MODULE_EXTRAS.get(top)
    if extra:
        return f"this needs the '{extra}' extra: pip install 'vilasr_ros[{extra}]' (no module named {top!r})"
    return f"a dependency is missing: {_one_line(exc)} (pip install 'vilasr_ros[all-cpu]' installs every CPU extra)"


def _one_line(exc: BaseException) -> str:
    from vilasr_ros.sanitize import clean_text

    return " ".join(clean_text(exc).split()) or type(exc).__name__
