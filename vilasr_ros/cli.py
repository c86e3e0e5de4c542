"""The ``vilasr`` command line.

Examples::

    vilasr ask --source sim:seed=3 --question "Where is the sofa? Go to it." --target sofa
    vilasr ask --images room.png --question "Is the chair left of the table?" \\
        --type multiple-choice --option "A. yes" --option "B. no" --model /models/ViLaSR
    vilasr ask --images frames/ --question "How many chairs?" --type numerical \\
        --base-url http://127.0.0.1:8000/v1 --out runs/q1
    vilasr agent --localhost --query '{"question": "Go to the sofa", "target": "sofa"}'
    vilasr view runs/q1                                  # runs/q1/trace.html
    vilasr eval run --dataset vsi_bench --data vsi_bench.json --base-url http://127.0.0.1:8000/v1 --out runs/vsi
    vilasr train sft --config config/training/sft.yaml --set args.output_dir=runs/sft

Every command takes its engine the same way: ``--engine auto`` (the default) means a server when
``--base-url`` is given, else the ViLaSR weights when they are here, else the scripted demo (said so).
A mistake on the command line is one line on stderr and exit code 2; a run that fails is exit code 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from vilasr_ros.errors import MissingDependencyError, VilasrError
from vilasr_ros.protocol import FinishReason, PromptKind, default_kind
from vilasr_ros.query import SELECTIONS

logger = logging.getLogger("vilasr_ros.cli")

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
    if sampling:
        s = parser.add_argument_group("reasoning loop")
        s.add_argument("--temperature", type=non_negative_float, help="0 for greedy (default 0.75)")
        s.add_argument("--top-p", type=float, help="nucleus sampling (default 0.9)")
        s.add_argument("--max-tokens", type=positive_int, help="new tokens per turn (default 16384)")
        s.add_argument("--max-pixels", type=positive_int, help="smart_resize area cap (default 351232)")
        s.add_argument("--max-turns", type=positive_int, help="model calls per question (default 10)")


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

    try:
        return reasoner_config(max_pixels=args.max_pixels, max_turns=args.max_turns, temperature=args.temperature,
                               top_p=args.top_p, max_tokens=args.max_tokens)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def build_reasoner(choice: EngineChoice, config):
    from vilasr_ros.engines import create_engine
    from vilasr_ros.reasoner import Reasoner

    return Reasoner(create_engine(choice.name, choice.config), config)


# ----------------------------------------------------------------------------- ask


def cmd_ask(args: argparse.Namespace) -> int:
    from vilasr_ros.grounding import GroundingConfig

    # Every argument is checked before anything heavy is loaded.
    if bool(args.images) == bool(args.source):
        raise UserError("give exactly one of --images FILE|DIR ... or --source SOURCE")
    if args.target and not args.source:
        raise UserError("--target needs --source (depth and poses come from an RGB-D frame source)")
    if args.target:
        from vilasr_ros.geometry import open3d

        open3d()  # grounding needs the geometry extra: say so before the model runs
    if args.type == "multiple choice" and not args.option:
        raise UserError('--type multiple-choice needs its options: --option "A. ..." --option "B. ..."')
    image_files = collect_images(args.images) if args.images else None
    if args.source:
        _check_source_spec(args.source)
    choice = choose(args)
    cfg = loop_config(args)
    grounding = GroundingConfig(standoff_m=args.standoff, remove_floor=args.remove_floor)

    print(choice.sentence)
    reasoner = build_reasoner(choice, cfg)
    frames = None
    if args.source:
        from vilasr_ros.sources import open_source, select_frames

        with open_source(args.source) as source:
            frames = select_frames(list(source), args.frames, args.selection)
        images = [f.rgb for f in frames]
        print(f"frames: {len(frames)} selected from {args.source}")
    else:
        from PIL import Image

        from vilasr_ros.protocol import to_rgb

        images = []
        for p in image_files:
            try:
                with Image.open(p) as im:
                    images.append(to_rgb(im))
            except OSError as exc:
                raise UserError(f"--images: cannot read {p}: {exc}") from None
    kind = args.kind or default_kind(len(images))
    trace = reasoner.run(images, args.question, args.type, args.option or None, kind=kind)
    trace.frames = [f.record() for f in frames or []]
    result = None
    if args.target:
        from vilasr_ros.grounding import ground_trace

        result = ground_trace(trace, frames, args.target, grounding)
        trace.target = result.to_dict()
    out = Path(args.out or f"runs/ask_{time.strftime('%Y%m%d_%H%M%S')}")
    trace.save(out)
    print(f"answer: {trace.answer if trace.answer is not None else '(none)'}")
    print(f"finish_reason: {trace.finish_reason}" + (f" ({trace.error})" if trace.error else ""))
    if result is not None:
        print(_target_line(result))
    print(f"turns: {len(trace.turns)}  images: {len(trace.images)}  time: {trace.total_s:.2f}s")
    print(f"trace: {out / 'trace.json'}   (look at it: vilasr view {out})")
    return 0 if trace.finish_reason != FinishReason.ERROR else 1


def _target_line(result) -> str:
    if not result.ok:
        return f"target: none ({result.reason})"
    p, q = result.approach_position, result.approach_orientation
    return (f"target_pose ({result.frame_id}): position [{p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}] m, "
            f"orientation xyzw [{q[0]:.3f}, {q[1]:.3f}, {q[2]:.3f}, {q[3]:.3f}]; object at "
            f"[{', '.join(f'{v:.3f}' for v in result.position_world)}] m, confidence {result.confidence}")


def _check_source_spec(spec: str) -> None:
    from vilasr_ros.sources import source_kinds

    kind = spec.partition(":")[0]
    if kind not in source_kinds():
        raise UserError(f"--source {spec!r}: unknown kind {kind!r}; use one of "
                        + ", ".join(f"{k}:..." for k in source_kinds()))


# ----------------------------------------------------------------------------- agent


def cmd_agent(args: argparse.Namespace) -> int:
    query = None
    if args.query is not None:
        from vilasr_ros.agent import BadQueryError, parse_query

        try:
            parse_query(args.query, max_bytes=1 << 20)
        except BadQueryError as exc:
            raise UserError(f"--query: {exc} (example: --query '{{\"question\": \"Go to the sofa\", "
                            f"\"target\": \"sofa\"}}')") from None
        query = args.query
    if args.source:
        _check_source_spec(args.source)
    choice = choose(args)
    cfg = loop_config(args)
    if args.localhost or args.domain_id is not None:
        from vilasr_ros.ros.env import apply_loopback_environment

        apply_loopback_environment(args.domain_id)  # before rclpy is imported
    from vilasr_ros.errors import require

    require("rclpy", "ros (pip: the ros-jazzy-* wheels of the [ros] extra, or source /opt/ros/jazzy)")
    from vilasr_ros.ros.launcher import run_agent

    print(choice.sentence)
    agent: dict[str, Any] = {"engine": choice.name}
    node_names = {"timeout_s": "request_timeout_s"}
    for option, value in choice.options.items():
        agent[node_names.get(option, option)] = value
    for name in ("temperature", "top_p", "max_tokens", "max_pixels", "max_turns"):
        value = getattr(cfg.sampling, name, None) if name in ("temperature", "top_p", "max_tokens") else getattr(cfg, name)
        if getattr(args, name) is not None:
            agent[name] = value
    if args.trace_root is not None:
        agent["trace_root"] = args.trace_root
    if args.max_age is not None:
        agent["max_age_s"] = args.max_age
    if args.remove_floor is not None:
        agent["remove_floor"] = args.remove_floor
    camera = {"source": args.source} if args.source is not None else {}
    if query is not None and args.source:
        camera.setdefault("loop", False)  # a finite source ends: its frames are the keyframes, no copies
    return run_agent(args.config, camera=camera, agent=agent, query=query, wait_frames=args.wait_frames,
                     timeout_s=args.timeout)


# ----------------------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    from vilasr_ros.configs import build_config
    from vilasr_ros.errors import ConfigError
    from vilasr_ros.serve import ServeConfig, serve

    try:
        config = build_config(ServeConfig, {k: v for k, v in (
            ("host", args.host), ("port", args.port), ("token_env", args.token_env_serve), ("workers", args.workers),
            ("max_queue", args.max_queue), ("max_frames", args.max_frames), ("max_body_mb", args.max_body_mb),
            ("default_deadline_s", args.default_deadline), ("max_deadline_s", args.max_deadline)) if v is not None},
            "vilasr serve")
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    choice = choose(args)
    if choice.name == "remote":
        raise UserError("a vilasr serve cannot serve through another vilasr serve: give --engine and --model "
                        "(or --base-url of an OpenAI-compatible server such as vllm serve)")
    from vilasr_ros.engines import create_engine

    print(choice.sentence, flush=True)
    serve(create_engine(choice.name, choice.config), config)
    return 0


# ----------------------------------------------------------------------------- view


def cmd_view(args: argparse.Namespace) -> int:
    trace_dir = Path(args.trace_dir)
    if not (trace_dir / "trace.json").is_file():
        raise UserError(f"{trace_dir} holds no trace.json (a folder written by vilasr ask, the agent or eval)")
    if args.rerun:
        from vilasr_ros.rerun_view import write_rerun

        try:
            out = write_rerun(trace_dir, args.out, source=args.source, connect=args.connect)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    else:
        from vilasr_ros.view import write_html

        out = write_html(trace_dir, args.out)
    print(out)
    return 0


# ----------------------------------------------------------------------------- eval


def cmd_eval_run(args: argparse.Namespace) -> int:
    from vilasr_ros.evaluation.runner import parse_shard, run_eval

    shard = parse_shard(args.shard)
    choice = choose(args, standalone=False)
    if choice.name == "replay" and choice.config.responses is None:
        raise UserError("nothing to evaluate: no ViLaSR weights here and no --base-url "
                        "(give --model PATH, --base-url URL or --engine NAME)")
    from dataclasses import replace

    cfg = replace(loop_config(args), on_tool_error=args.on_tool_error)
    print(choice.sentence, file=sys.stderr)
    reasoner = build_reasoner(choice, cfg)
    summary = run_eval(args.dataset, args.data, reasoner.engine, args.out, config=reasoner.config,
                       shard=shard, image_folder=args.image_folder, frames=args.frames,
                       batch_size=args.batch_size, save_traces=not args.no_traces, max_turns_override=args.max_turns,
                       progress=not args.quiet)
    skipped_path = Path(args.out) / "skipped.jsonl"
    lines = skipped_path.read_text(encoding="utf-8").splitlines() if skipped_path.exists() else []
    for line in lines[:20]:
        entry = json.loads(line)
        print(f"SKIPPED {entry['id']}: {entry['reason']} {' '.join(entry.get('missing') or [])}".rstrip())
    if len(lines) > 20:
        print(f"... and {len(lines) - 20} more in {skipped_path}")
    print(f"{summary.total} items in shard: {summary.resumed} already done, {summary.ran} run now, "
          f"{summary.skipped} skipped (see {skipped_path})")
    print(f"results: {summary.results_path}")
    return 0


def cmd_eval_score(args: argparse.Namespace) -> int:
    from vilasr_ros.evaluation.scores import format_table, score_file

    summary = score_file(args.results, args.dataset, args.out)
    print(format_table(summary))
    print(f"scored: {args.out}  summary: {Path(args.out).with_suffix('.summary.json')}")
    return 0


def cmd_eval_report(args: argparse.Namespace) -> int:
    from vilasr_ros.evaluation.report import write_report

    print(write_report(args.runs, args.out, gallery=args.gallery))
    return 0


# ----------------------------------------------------------------------------- parser


def _version() -> str:
    from vilasr_ros import __version__

    return f"vilasr {__version__} (vilasr_ros, Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vilasr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    ask = sub.add_parser("ask", help="ask one spatial question about images or a frame source")
    src = ask.add_argument_group("input (one of --images / --source)")
    src.add_argument("--images", nargs="+", help="image files or a folder (sorted by name)")
    src.add_argument("--source", help="frame source: rgbd_folder:PATH, bag:PATH, realsense[:SERIAL|FILE.db3], sim:...")
    src.add_argument("--frames", type=positive_int, default=16, help="frames to select from --source (default 16)")
    src.add_argument("--selection", default="uniform", choices=SELECTIONS)
    src.add_argument("--kind", choices=[k.value for k in PromptKind], help="prompt layout (default by count)")
    ask.add_argument("--question", required=True)
    ask.add_argument("--type", default="free-form", type=problem_type, help=", ".join(TYPE_SPELLINGS))
    ask.add_argument("--option", action="append", help="multiple-choice option, repeatable ('A. yes')")
    ask.add_argument("--target", help="ground the model's boxes with this label into a world-frame target")
    ask.add_argument("--standoff", type=non_negative_float, default=0.8, help="approach distance to the target (m)")
    ask.add_argument("--remove-floor", action=argparse.BooleanOptionalAction, default=True,
                     help="drop floor and background-wall pixels before placing the target (default on: "
                          "z-up world, floor at z=0, as every robot's map/odom; off for y-up data)")
    ask.add_argument("--out", help="trace folder (default runs/ask_<time>)")
    add_engine_arguments(ask)
    ask.set_defaults(func=cmd_ask)

    ag = sub.add_parser("agent", help="run camera_node + vilasr_agent in one process (no ros2 CLI needed)",
                        description="Both ROS 2 nodes from config/agent.yaml in one process. With --query: wait "
                        "for frames, ask over the ~/query topic, print the answer and target pose, exit.")
    ag.add_argument("--config", help="ROS 2 parameter file (default: the shipped config/agent.yaml)")
    ag.add_argument("--source", help="camera_node source (rgbd_folder:PATH, bag:PATH, realsense[:...], sim:...); "
                    "empty string: no camera node, frames come from other processes")
    ag.add_argument("--trace-root", help="folder for per-query traces")
    ag.add_argument("--max-age", type=non_negative_float, help="refuse queries when no frame arrived for this long (s; 0: never)")
    ag.add_argument("--remove-floor", action=argparse.BooleanOptionalAction, default=None,
                    help="floor and background-wall removal in grounding (default: the YAML's, on)")
    ag.add_argument("--query", help='query JSON, e.g. \'{"question": "Go to the sofa", "target": "sofa"}\'')
    ag.add_argument("--wait-frames", type=positive_int, default=16,
                    help="keyframes to buffer before sending --query (a finite source may end with fewer)")
    ag.add_argument("--timeout", type=non_negative_float, default=600.0, help="seconds to wait for frames and the answer")
    ag.add_argument("--localhost", action="store_true",
                    help="keep DDS on this machine: loopback discovery, the shipped Fast DDS profile, temp log dir")
    ag.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID (implies --localhost)")
    add_engine_arguments(ag)
    ag.set_defaults(func=cmd_agent)

    sv = sub.add_parser("serve", help="run the draw-to-reason loop next to the model for robots (HTTP, FastAPI)",
                        description="A robot posts its frames once per query; the loop runs here beside the model and "
                        "every turn streams back. OpenAPI at /openapi.json, docs at /docs.")
    sv.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=positive_int, help="TCP port (default 8080)")
    sv.add_argument("--auth-token-env", dest="token_env_serve", metavar="VAR",
                    help="environment variable with the bearer token clients must send (default VILASR_SERVE_TOKEN)")
    sv.add_argument("--workers", type=positive_int, help="queries run at once (default: the engine's concurrency)")
    sv.add_argument("--max-queue", type=non_negative_int, help="queries waiting at most; more get HTTP 429 (default 16)")
    sv.add_argument("--max-frames", type=positive_int, help="frames per query at most (default 64)")
    sv.add_argument("--max-body-mb", type=non_negative_float, help="request body at most, MiB (default 64)")
    sv.add_argument("--default-deadline", type=non_negative_float, help="deadline of a query naming none, s (300)")
    sv.add_argument("--max-deadline", type=non_negative_float, help="cap on any query's deadline, s (1800)")
    add_engine_arguments(sv, sampling=False)
    sv.set_defaults(func=cmd_serve, max_pixels=None, max_turns=None, temperature=None, top_p=None, max_tokens=None)

    view = sub.add_parser("view", help="look at a trace: one self-contained HTML page (or a rerun .rrd)")
    view.add_argument("trace_dir", help="a trace folder (trace.json + images/)")
    view.add_argument("--out", help="output file (default TRACE_DIR/trace.html, or trace.rrd with --rerun)")
    view.add_argument("--rerun", action="store_true", help="write a rerun recording (3D: poses, depth, target)")
    view.add_argument("--source", help="--rerun: the frame source the trace was asked on (adds depth clouds and the object's points)")
    view.add_argument("--connect", metavar="URL", help="--rerun: stream to a running viewer (rerun+http://HOST:9876/proxy) instead of a file")
    view.set_defaults(func=cmd_view)

    from vilasr_ros.evaluation.datasets import ALIASES, DATASETS, canonical_dataset

    dataset_help = f"one of {', '.join(DATASETS)} (the reference's {', '.join(ALIASES)} accepted)"

    ev = sub.add_parser("eval", help="benchmarks and sim datasets: run, score as the authors do, report")
    ev_sub = ev.add_subparsers(dest="eval_command", required=True, parser_class=Parser)
    run = ev_sub.add_parser("run", help="run an engine over a dataset; resumable JSON lines in OUT")
    run.add_argument("--dataset", required=True, type=canonical_dataset, choices=DATASETS, metavar="DATASET",
                     help=dataset_help)
    run.add_argument("--data", required=True, help="question file (.json/.jsonl) or its folder (ViLaSR-eval: the "
                                                   "benchmark folder, DIR/<dataset>.json is taken)")
    run.add_argument("--image-folder", help="root of image_path (default: the question file's folder)")
    run.add_argument("--out", required=True, help="run folder (an existing one is resumed)")
    run.add_argument("--shard", default="0/1", help="i/n: run the i-th of n contiguous slices (default 0/1)")
    run.add_argument("--frames", type=positive_int, default=16, help="frames per video item (default 16)")
    run.add_argument("--batch-size", type=positive_int, default=8, help="items in flight for engines that batch (default 8)")
    run.add_argument("--no-traces", action="store_true", help="do not save traces/<id>/")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run.add_argument("--on-tool-error", choices=("retry", "stop"), default="retry",
                     help="a tool call that fails to draw: discard it and generate again, the turn budget "
                          "counting down, as the reference's eval/infer.py does (retry, default); or end with ToolError")
    add_engine_arguments(run)
    run.set_defaults(func=cmd_eval_run)
    sc = ev_sub.add_parser("score", help="add scores (spec §6), print the per-type table, write a JSON summary")
    sc.add_argument("--results", required=True, help="results.jsonl or a run folder (shards merged)")
    sc.add_argument("--dataset", required=True, type=canonical_dataset, choices=DATASETS, metavar="DATASET",
                    help=dataset_help)
    sc.add_argument("--out", required=True, help="scored JSONL; the summary goes beside it as .summary.json")
    sc.set_defaults(func=cmd_eval_score)
    rep = ev_sub.add_parser("report", help="Markdown page with plots comparing runs")
    rep.add_argument("runs", nargs="+", help="run folders")
    rep.add_argument("--out", help="report folder (default <first run>/report)")
    rep.add_argument("--gallery", type=int, default=4, help="traces shown per run")
    rep.set_defaults(func=cmd_eval_report)

    # Commands of installed subpackages (vilasr_ros_sim: sim; vilasr_ros_training: train; serve).
    for ep in sorted(entry_points(group="vilasr_ros.commands"), key=lambda e: e.name):
        try:
            ep.load()(sub)
        except ImportError as exc:  # its extra is not installed: say so when it is asked for
            missing = sub.add_parser(ep.name, help=f"(unavailable: {exc})")
            missing.set_defaults(func=_unavailable(ep.name, exc))
    return parser


def _unavailable(name: str, exc: Exception):
    def run(args):
        raise MissingDependencyError(f"`vilasr {name}` cannot run here: {exc}")

    return run


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    prog = f"vilasr {args.command}"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except ImportError as exc:  # an optional dependency not installed (MissingDependencyError is one)
        if args.verbose:
            logger.exception("failed")
        print(f"{prog}: error: {_missing(exc)}", file=sys.stderr)
        return 2
    except (VilasrError, ValueError, OSError) as exc:
        if args.verbose:
            logger.exception("failed")
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, (UserError, ValueError, FileNotFoundError)) else 1
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback with -v
        if args.verbose:
            logger.exception("internal error")
        print(f"{prog}: internal error: {type(exc).__name__}: {_one_line(exc)} (run with -v for the traceback)",
              file=sys.stderr)
        return 1


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


if __name__ == "__main__":
    sys.exit(main())
