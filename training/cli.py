"""``vilasr train sft|rrs|grpo|site|tiny-model`` — registered in the ``vilasr_ros.commands`` group."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_stage(args: argparse.Namespace) -> int:
    from vilasr_ros_training.config import load_config

    config = load_config(args.config, args.set, stage=args.stage)
    if args.stage == "sft":
        from vilasr_ros_training.sft import train_sft

        summary = train_sft(config)
    elif args.stage == "rrs":
        from vilasr_ros_training.rrs import run_rrs

        summary = run_rrs(config, progress=not args.quiet)
        print(f"kept {summary['kept']} of {summary['samples']} samples (yield {100 * summary['yield']:.1f} %), "
              f"{summary['items_with_kept']} of {summary['items']} items with at least one")
    else:
        from vilasr_ros_training.grpo import train_grpo

        summary, _ = train_grpo(config)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("losses",)}, indent=1, default=str))
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    from vilasr_ros_training.site import convert_site

    items = convert_site(args.questions, args.out, frames=args.frames)
    print(f"{len(items)} questions in {Path(args.out) / 'questions.json'}")
    return 0


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from vilasr_ros.tiny_model import build_tiny_qwen2_5_vl

    print(build_tiny_qwen2_5_vl(args.out, seed=args.seed, family=args.family))
    return 0


def register(sub) -> None:
    """Add ``train`` and its subcommands to the ``vilasr`` parser's subparsers."""
    from vilasr_ros.cli import positive_int

    tr = sub.add_parser("train", help="the three-stage recipe (vilasr_ros_training): sft, rrs, grpo; data tools")
    tr_sub = tr.add_subparsers(dest="train_command", required=True, parser_class=type(tr))
    for stage, text in (("sft", "stage 1 (cold start) or any SFT: trl SFTTrainer, assistant-only loss"),
                        ("rrs", "stage 2: reflective rejection sampling with the stage-1 model, then SFT"),
                        ("grpo", "stage 3: trl GRPOTrainer with multi-turn drawing rollouts")):
        st = tr_sub.add_parser(stage, help=text)
        st.add_argument("--config", required=True, help=f"YAML, e.g. config/training/{stage}.yaml")
        st.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted path, YAML value), e.g. args.max_steps=5; repeatable")
        st.add_argument("-q", "--quiet", action="store_true", help="no progress bar (rrs)")
        st.set_defaults(func=cmd_stage, stage=stage)
    site = tr_sub.add_parser("site", help="ROS 2 bags + a JSONL of questions about time windows -> ViLaSR-eval items")
    site.add_argument("--questions", required=True, help="JSONL: id, bag, window [start_s, end_s], question, answer, type")
    site.add_argument("--out", required=True, help="output folder (questions.json, frames/)")
    site.add_argument("--frames", type=positive_int, default=16, help="frames per question (default 16)")
    site.set_defaults(func=cmd_site)
    tiny = tr_sub.add_parser("tiny-model", help="build a tiny random Qwen2.5-VL (or Qwen3-VL) offline (CPU smoke runs)")
    tiny.add_argument("out", help="model folder")
    tiny.add_argument("--family", choices=("qwen2_5_vl", "qwen3_vl"), default="qwen2_5_vl",
                      help="model family (default qwen2_5_vl, ViLaSR's)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=cmd_tiny_model)
