"""``vilasr sim generate|view`` — registered in the ``vilasr_ros.commands`` entry-point group."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_generate(args: argparse.Namespace) -> int:
    from vilasr_ros_sim.dataset import generate_dataset
    from vilasr_ros_sim.render import RenderConfig
    from vilasr_ros_sim.trajectory import TrajectoryConfig

    items = generate_dataset(args.out, args.scenes, args.seed, mazes=args.mazes, per_type=args.per_type,
                             render=RenderConfig(args.width, args.height, shadows=not args.no_shadows),
                             trajectory=TrajectoryConfig(frames=args.frames), progress=not args.quiet)
    print(f"{len(items)} questions in {Path(args.out) / 'questions.json'}")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from vilasr_ros_sim.dataset import contact_sheet

    print(contact_sheet(args.dir, args.out, scenes=args.scenes, frames_per_scene=args.frames))
    return 0


def register(sub) -> None:
    """Add ``sim`` and its subcommands to the ``vilasr`` parser's subparsers."""
    from vilasr_ros.cli import non_negative_int, positive_int

    sim = sub.add_parser("sim", help="simulated MuJoCo scenes with ground truth (vilasr_ros_sim)")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True, parser_class=type(sim))
    gen = sim_sub.add_parser("generate", help="render scenes and mazes, write DIR/questions.json (ViLaSR-eval format)")
    gen.add_argument("--out", required=True, help="dataset folder")
    gen.add_argument("--scenes", type=non_negative_int, default=10, help="rooms to generate (default 10)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--mazes", type=non_negative_int, help="maze images (default: one per scene)")
    gen.add_argument("--per-type", type=positive_int, default=1, help="questions per task type and scene (default 1)")
    gen.add_argument("--frames", type=positive_int, default=16, help="walkthrough frames per scene (default 16)")
    gen.add_argument("--width", type=positive_int, default=640)
    gen.add_argument("--height", type=positive_int, default=480)
    gen.add_argument("--no-shadows", action="store_true")
    gen.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=cmd_generate)
    view = sim_sub.add_parser("view", help="contact sheet PNG of generated frames with ground-truth boxes")
    view.add_argument("dir", help="dataset folder written by `vilasr sim generate`")
    view.add_argument("--out", help="PNG path (default DIR/contact_sheet.png)")
    view.add_argument("--scenes", type=positive_int, default=4)
    view.add_argument("--frames", type=positive_int, default=6, help="frames per scene")
    view.set_defaults(func=cmd_view)
