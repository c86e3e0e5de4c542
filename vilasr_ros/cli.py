"""The ``vilasr`` command line: ``vilasr ask`` runs the draw-to-reason loop offline.

Examples::

    vilasr ask --images room.png --question "Is the chair left of the table?" \\
        --type multiple-choice --option "A. yes" --option "B. no" --engine transformers
    vilasr ask --images frames/ --question "How many chairs?" --type numerical \\
        --engine openai --base-url http://127.0.0.1:8000/v1 --out runs/q1
    vilasr eval run --dataset vsi_bench --data vsi_bench.json --engine openai \\
        --base-url http://127.0.0.1:8000/v1 --out runs/vsi && vilasr eval score --results runs/vsi \\
        --dataset vsi_bench --out runs/vsi/scored.jsonl && vilasr eval report runs/vsi
    vilasr train sft --config config/training/sft.yaml --set args.output_dir=runs/sft
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from vilasr_ros.errors import VilasrError

logger = logging.getLogger("vilasr_ros.cli")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def _collect_images(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise VilasrError(f"image not found: {path}")
    if not files:
        raise VilasrError(f"no images in {' '.join(paths)}")
    return files


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Engine flags shared by ``ask``, ``agent`` and ``eval``."""
    from vilasr_ros.engines import ENGINE_NAMES

    g = parser.add_argument_group("engine")
    g.add_argument("--engine", default="transformers", choices=ENGINE_NAMES, help="model backend")
    g.add_argument("--model", default=None, help="model folder or Hugging Face id (default AntResearchNLP/ViLaSR)")
    g.add_argument("--base-url", default=None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--api-key-env", default=None, help="environment variable holding the API key")
    g.add_argument("--responses", default=None, help="replay engine: JSON list of model turns")
    g.add_argument("--temperature", type=float, default=None, help="0 for greedy (default 0.75)")
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--max-tokens", type=int, default=None, help="new tokens per turn (default 16384)")
    g.add_argument("--max-pixels", type=int, default=None, help="smart_resize area cap (default 351232)")
    g.add_argument("--max-turns", type=int, default=None, help="model calls per question (default 10)")
    g.add_argument("--no-turn-reuse", action="store_true",
                   help="transformers engine: re-run the whole conversation every turn (no KV/vision reuse)")
    g.add_argument("--reflect", type=float, default=None,
                   help="teacher engine: probability of a deliberate wrong box followed by its correction")


def build_reasoner(args: argparse.Namespace):
    """Engine + Reasoner from parsed engine flags."""
    from vilasr_ros.engines import SamplingConfig, create_engine
    from vilasr_ros.reasoner import Reasoner, ReasonerConfig

    engine = create_engine(
        args.engine,
        model=args.model,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        responses=args.responses,
        reflect=getattr(args, "reflect", None),
        turn_reuse=False if args.engine == "transformers" and getattr(args, "no_turn_reuse", False) else None,
    )
    defaults = SamplingConfig()
    sampling = SamplingConfig(
        temperature=defaults.temperature if args.temperature is None else args.temperature,
        top_p=defaults.top_p if args.top_p is None else args.top_p,
        max_tokens=defaults.max_tokens if args.max_tokens is None else args.max_tokens,
    )
    cfg = ReasonerConfig(sampling=sampling)
    overrides = {k: v for k, v in (("max_pixels", args.max_pixels), ("max_turns", args.max_turns)) if v is not None}
    if overrides:
        cfg = ReasonerConfig(**{**vars(cfg), **overrides})
    return Reasoner(engine, cfg)


def cmd_ask(args: argparse.Namespace) -> int:
    from PIL import Image

    reasoner = build_reasoner(args)
    frames = None
    if args.source:
        from vilasr_ros.sources import open_source, select_frames

        with open_source(args.source) as source:
            frames = select_frames(list(source), args.frames, args.selection)
        images = [f.rgb for f in frames]
        logger.info("selected %d frames from %s", len(frames), args.source)
    elif args.images:
        images = [Image.open(p) for p in _collect_images(args.images)]
    else:
        raise VilasrError("give --images FILE|DIR ... or --source SOURCE")
    kind = args.kind or ("single" if len(images) == 1 else "video")
    trace = reasoner.run(images, args.question, args.type, args.option or None, kind=kind)
    if args.target:
        if frames is None:
            raise VilasrError("--target needs --source (depth and poses come from the frame source)")
        from vilasr_ros.grounding import GroundingConfig, ground_trace

        result = ground_trace(trace, frames, args.target, GroundingConfig(standoff_m=args.standoff, remove_floor=args.remove_floor))
        trace.target = result.to_dict()
    out = Path(args.out or f"runs/ask_{time.strftime('%Y%m%d_%H%M%S')}")
    trace.save(out)
    print(f"engine: {trace.engine.get('engine')} ({trace.engine.get('model', 'scripted')})")
    print(f"answer: {trace.answer if trace.answer is not None else '(none)'}")
    print(f"finish_reason: {trace.finish_reason}" + (f" ({trace.error})" if trace.error else ""))
    if args.target:
        print("target: " + json.dumps(trace.target))
    print(f"turns: {len(trace.turns)}  images: {len(trace.images)}  time: {trace.total_s:.2f}s")
    print(f"trace: {out / 'trace.json'}")
    return 0 if trace.finish_reason not in ("error",) else 1


def cmd_agent(args: argparse.Namespace) -> int:
    if args.localhost or args.domain_id is not None:
        from vilasr_ros.ros.env import apply_loopback_environment

        apply_loopback_environment(args.domain_id)  # before rclpy is imported
    from vilasr_ros.errors import require

    require("rclpy", "ros (pip: ros-jazzy-rclpy and the ros-jazzy-*-msgs wheels, or source /opt/ros/jazzy)")
    from vilasr_ros.ros.launcher import pick_engine, run_agent

    engine, extra, sentence = pick_engine(args.engine, args.model)
    print(sentence)
    agent = {"engine": engine, **extra}
    for key, value in (("model", args.model), ("base_url", args.base_url), ("responses", args.responses),
                       ("trace_root", args.trace_root)):
        if value is not None:
            agent[key] = value
    if args.max_age is not None:
        agent["max_age_s"] = args.max_age
    camera = {"source": args.source} if args.source is not None else {}
    if args.query is not None:
        camera.setdefault("loop", True)
    return run_agent(args.config, camera=camera, agent=agent, query=args.query, wait_frames=args.wait_frames,
                     timeout_s=args.timeout)


def cmd_sim_generate(args: argparse.Namespace) -> int:
    from vilasr_ros_sim.dataset import generate_dataset
    from vilasr_ros_sim.render import RenderConfig
    from vilasr_ros_sim.trajectory import TrajectoryConfig

    items = generate_dataset(args.out, args.scenes, args.seed, mazes=args.mazes, per_type=args.per_type,
                             render=RenderConfig(args.width, args.height, shadows=not args.no_shadows),
                             trajectory=TrajectoryConfig(frames=args.frames))
    print(f"{len(items)} questions in {Path(args.out) / 'questions.json'}")
    return 0


def cmd_sim_view(args: argparse.Namespace) -> int:
    from vilasr_ros_sim.dataset import contact_sheet

    print(contact_sheet(args.dir, args.out, scenes=args.scenes, frames_per_scene=args.frames))
    return 0


def cmd_eval_run(args: argparse.Namespace) -> int:
    from vilasr_ros.evaluation.runner import parse_shard, run_eval

    reasoner = build_reasoner(args)
    summary = run_eval(args.dataset, args.data, reasoner.engine, args.out, config=reasoner.config,
                       shard=parse_shard(args.shard), image_folder=args.image_folder, frames=args.frames,
                       batch_size=args.batch_size, save_traces=not args.no_traces, max_turns_override=args.max_turns,
                       progress=print)
    print(f"{summary.total} items in shard: {summary.resumed} already done, {summary.ran} run now, "
          f"{summary.skipped} skipped (see {Path(args.out) / 'skipped.jsonl'})")
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


def cmd_train(args: argparse.Namespace) -> int:
    from vilasr_ros_training.config import load_config

    config = load_config(args.config, args.set)
    if args.stage == "sft":
        from vilasr_ros_training.sft import train_sft

        summary = train_sft(config)
    elif args.stage == "rrs":
        from vilasr_ros_training.rrs import run_rrs

        summary = run_rrs(config, progress=print)
        print(f"kept {summary['kept']} of {summary['samples']} samples (yield {100 * summary['yield']:.1f} %), "
              f"{summary['items_with_kept']} of {summary['items']} items with at least one")
    else:
        from vilasr_ros_training.grpo import train_grpo

        summary, _ = train_grpo(config)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("losses",)}, indent=1, default=str))
    return 0


def cmd_train_site(args: argparse.Namespace) -> int:
    from vilasr_ros_training.site import convert_site

    items = convert_site(args.questions, args.out, frames=args.frames)
    print(f"{len(items)} questions in {Path(args.out) / 'questions.json'}")
    return 0


def cmd_train_tiny_model(args: argparse.Namespace) -> int:
    from vilasr_ros.tiny_model import build_tiny_qwen2_5_vl

    print(build_tiny_qwen2_5_vl(args.out, seed=args.seed))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vilasr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="ask one spatial question about images or a frame source")
    src = ask.add_argument_group("input")
    src.add_argument("--images", nargs="+", help="image files or a folder (sorted by name)")
    src.add_argument("--source", help="frame source: rgbd_folder:PATH, bag:PATH, realsense[:SERIAL|FILE.db3], sim:...")
    src.add_argument("--frames", type=int, default=16, help="frames to select from --source (default 16)")
    src.add_argument("--selection", default="uniform", choices=("uniform", "latest", "coverage"))
    src.add_argument("--kind", choices=("single", "video", "multi_view"), help="prompt layout (default by count)")
    ask.add_argument("--question", required=True)
    ask.add_argument("--type", default="free-form", help="multiple-choice, numerical, regression, free-form")
    ask.add_argument("--option", action="append", help="multiple-choice option, repeatable ('A. yes')")
    ask.add_argument("--target", help="ground the last box with this label into a world-frame target")
    ask.add_argument("--standoff", type=float, default=0.8, help="approach distance to the target in metres")
    ask.add_argument("--remove-floor", action="store_true",
                     help="drop floor and background-wall pixels before placing the target (z-up world, floor at z=0)")
    ask.add_argument("--out", help="trace folder (default runs/ask_<time>)")
    add_engine_arguments(ask)
    ask.set_defaults(func=cmd_ask)

    ag = sub.add_parser("agent", help="run camera_node + vilasr_agent in one process (no ros2 CLI needed)",
                        description="Both ROS 2 nodes from config/agent.yaml in one process. With --query: wait "
                        "for frames, ask over the ~/query topic, print the answer and target pose, exit.")
    ag.add_argument("--config", help="ROS 2 parameter file (default: the shipped config/agent.yaml)")
    ag.add_argument("--source", help="camera_node source (rgbd_folder:PATH, bag:PATH, realsense[:...], sim:...); "
                    "empty string: no camera node, frames come from other processes")
    ag.add_argument("--engine", default="auto", choices=("auto", "replay", "transformers", "openai", "vllm"),
                    help="auto: ViLaSR weights if present locally, else the scripted replay demo (says so)")
    ag.add_argument("--model", help="model folder or Hugging Face id")
    ag.add_argument("--base-url", help="openai engine: OpenAI-compatible server URL")
    ag.add_argument("--responses", help="replay engine: JSON list of model turns")
    ag.add_argument("--trace-root", help="folder for per-query traces")
    ag.add_argument("--max-age", type=float, help="refuse queries when the newest frame is older (s; 0: never)")
    ag.add_argument("--query", help='query JSON, e.g. \'{"question": "Go to the chair", "target": "chair"}\'')
    ag.add_argument("--wait-frames", type=int, default=16, help="keyframes to buffer before sending --query")
    ag.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for frames and the answer")
    ag.add_argument("--localhost", action="store_true",
                    help="keep DDS on this machine: loopback discovery, the shipped Fast DDS profile, temp log dir")
    ag.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID (implies --localhost)")
    ag.set_defaults(func=cmd_agent)

    sim = sub.add_parser("sim", help="simulated MuJoCo scenes with ground truth (vilasr_ros_sim)")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    gen = sim_sub.add_parser("generate", help="render scenes and mazes, write DIR/questions.json (ViLaSR-eval format)")
    gen.add_argument("--out", required=True, help="dataset folder")
    gen.add_argument("--scenes", type=int, default=10, help="rooms to generate (default 10)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--mazes", type=int, help="maze images (default: one per scene)")
    gen.add_argument("--per-type", type=int, default=1, help="questions per task type and scene (default 1)")
    gen.add_argument("--frames", type=int, default=16, help="walkthrough frames per scene (default 16)")
    gen.add_argument("--width", type=int, default=640)
    gen.add_argument("--height", type=int, default=480)
    gen.add_argument("--no-shadows", action="store_true")
    gen.set_defaults(func=cmd_sim_generate)
    view = sim_sub.add_parser("view", help="contact sheet PNG of generated frames with ground-truth boxes")
    view.add_argument("dir", help="dataset folder written by `vilasr sim generate`")
    view.add_argument("--out", help="PNG path (default DIR/contact_sheet.png)")
    view.add_argument("--scenes", type=int, default=4)
    view.add_argument("--frames", type=int, default=6, help="frames per scene")
    view.set_defaults(func=cmd_sim_view)

    from vilasr_ros.evaluation.datasets import DATASETS

    ev = sub.add_parser("eval", help="benchmarks and sim datasets: run, score as the authors do, report")
    ev_sub = ev.add_subparsers(dest="eval_command", required=True)
    run = ev_sub.add_parser("run", help="run an engine over a dataset; resumable JSON lines in OUT")
    run.add_argument("--dataset", required=True, choices=DATASETS)
    run.add_argument("--data", required=True, help="question file (.json/.jsonl) or its folder")
    run.add_argument("--image-folder", help="root of image_path (default: the question file's folder)")
    run.add_argument("--out", required=True, help="run folder (an existing one is resumed)")
    run.add_argument("--shard", default="0/1", help="i/n: run the i-th of n contiguous slices (default 0/1)")
    run.add_argument("--frames", type=int, default=16, help="frames per video item (default 16)")
    run.add_argument("--batch-size", type=int, default=8, help="items in flight for engines that batch (default 8)")
    run.add_argument("--no-traces", action="store_true", help="do not save traces/<id>/")
    add_engine_arguments(run)
    run.set_defaults(func=cmd_eval_run)
    sc = ev_sub.add_parser("score", help="add scores (spec §6), print the per-type table, write a JSON summary")
    sc.add_argument("--results", required=True, help="results.jsonl or a run folder (shards merged)")
    sc.add_argument("--dataset", required=True, choices=DATASETS)
    sc.add_argument("--out", required=True, help="scored JSONL; the summary goes beside it as .summary.json")
    sc.set_defaults(func=cmd_eval_score)
    rep = ev_sub.add_parser("report", help="Markdown page with plots comparing runs")
    rep.add_argument("runs", nargs="+", help="run folders")
    rep.add_argument("--out", help="report folder (default <first run>/report)")
    rep.add_argument("--gallery", type=int, default=4, help="traces shown per run")
    rep.set_defaults(func=cmd_eval_report)

    tr = sub.add_parser("train", help="the three-stage recipe (vilasr_ros_training): sft, rrs, grpo; data tools")
    tr_sub = tr.add_subparsers(dest="train_command", required=True)
    for stage, text in (("sft", "stage 1 (cold start) or any SFT: trl SFTTrainer, assistant-only loss"),
                        ("rrs", "stage 2: reflective rejection sampling with the stage-1 model, then SFT"),
                        ("grpo", "stage 3: trl GRPOTrainer with multi-turn drawing rollouts")):
        st = tr_sub.add_parser(stage, help=text)
        st.add_argument("--config", required=True, help=f"YAML, e.g. config/training/{stage}.yaml")
        st.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted path, YAML value), e.g. args.max_steps=5; repeatable")
        st.set_defaults(func=cmd_train, stage=stage)
    site = tr_sub.add_parser("site", help="ROS 2 bags + a JSONL of questions about time windows -> ViLaSR-eval items")
    site.add_argument("--questions", required=True, help="JSONL: id, bag, window [start_s, end_s], question, answer, type")
    site.add_argument("--out", required=True, help="output folder (questions.json, frames/)")
    site.add_argument("--frames", type=int, default=16, help="frames per question (default 16)")
    site.set_defaults(func=cmd_train_site)
    tiny = tr_sub.add_parser("tiny-model", help="build a tiny random Qwen2.5-VL offline (CPU smoke runs)")
    tiny.add_argument("out", help="model folder")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=cmd_train_tiny_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except (VilasrError, ValueError, OSError) as exc:
        print(f"vilasr: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
