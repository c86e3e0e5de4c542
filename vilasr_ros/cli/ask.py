"""``vilasr ask``: one spatial question about images or a frame source, answered and grounded."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vilasr_ros.cli.common import (
    TYPE_SPELLINGS,
    UserError,
    add_engine_arguments,
    build_reasoner,
    check_source_spec,
    choose,
    collect_images,
    loop_config,
    non_negative_float,
    positive_int,
    problem_type,
)
from vilasr_ros.protocol import FinishReason, PromptKind, default_kind
from vilasr_ros.query import SELECTIONS


def cmd_ask(args: argparse.Namespace) -> int:
    """Ask one question (the flags build a :class:`~vilasr_ros.query.Query`), ground its target, save the trace."""
    from vilasr_ros.grounding import GroundingConfig

    query, image_files = _check(args)  # every argument is checked before anything heavy is loaded
    choice = choose(args)
    cfg = loop_config(args)
    grounding = GroundingConfig(standoff_m=args.standoff, remove_floor=args.remove_floor)
    print(choice.sentence)
    reasoner = build_reasoner(choice, cfg)
    frames, images = _inputs(args, query, image_files)
    trace = reasoner.run(images, query.question, query.problem_type, query.options,
                         kind=query.kind or default_kind(len(images)))
    trace.frames = [f.record() for f in frames or []]
    result = None
    if query.target:
        from vilasr_ros.grounding import ground_trace

        result = ground_trace(trace, frames, query.target, grounding)
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


def _check(args: argparse.Namespace):
    """The query the flags ask and the image files named (None with ``--source``).

    Raises:
        UserError: Flags that do not go together, or a query that cannot be asked.
    """
    from vilasr_ros.query import BadQueryError, Query

    _check_inputs(args)
    if args.target:
        from vilasr_ros.geometry import open3d

        open3d()  # grounding needs the geometry extra: say so before the model runs
    if args.type == "multiple choice" and not args.option:
        raise UserError('--type multiple-choice needs its options: --option "A. ..." --option "B. ..."')
    if args.memory:
        from dataclasses import replace

        from vilasr_ros.cli.memory import memory_query

        base = memory_query(args, args.question, args.frames)
    try:
        query = Query(question=args.question, problem_type=args.type, options=args.option or None, target=args.target,
                      frames=args.frames if args.source or args.memory else None, selection=args.selection, kind=args.kind)
        if args.memory:
            query = replace(base, problem_type=query.problem_type, options=query.options, target=query.target,
                            selection=query.selection, kind=query.kind)
    except BadQueryError as exc:
        raise UserError(str(exc)) from None
    if args.source:
        check_source_spec(args.source)
    return query, (collect_images(args.images) if args.images else None)


def _check_inputs(args: argparse.Namespace) -> None:
    """One input (``--images``, ``--source`` or ``--memory``) and the flags that go with it.

    Raises:
        UserError: Which flags do not go together.
    """
    if sum(map(bool, (args.images, args.source, args.memory))) != 1:
        raise UserError("give exactly one of --images FILE|DIR ..., --source SOURCE or --memory DIR")
    if args.target and not (args.source or args.memory):
        raise UserError("--target needs --source or --memory (depth and poses come from RGB-D frames)")
    if not args.memory and (args.since or args.until or args.region or args.near):
        raise UserError("--since/--until/--region/--near filter the keyframe memory: give --memory DIR")


def _inputs(args: argparse.Namespace, query, image_files):
    """``(frames or None, images)``: frames selected from ``--source``, or the ``--images`` files opened.

    Raises:
        UserError: An image file that is missing, truncated or not an image (all of them named).
    """
    if args.memory:
        from vilasr_ros.retrieval import AgentMemory

        memory = AgentMemory(args.memory, args.regions, readonly=True)
        try:
            frames, info = memory.select(query, query.frames, time.time())
        finally:
            memory.close()
        print(f"frames: {len(frames)} of {info['candidates']} remembered keyframes in {args.memory} ({info['reason']})")
        return frames, [f.rgb for f in frames]
    if args.source:
        from vilasr_ros.sources import open_source, select_frames

        with open_source(args.source) as source:
            frames = select_frames(list(source), query.frames, str(query.selection))
        print(f"frames: {len(frames)} selected from {args.source}")
        return frames, [f.rgb for f in frames]
    from vilasr_ros.errors import ImageError
    from vilasr_ros.images import image_problems, open_rgb

    problems = image_problems(image_files)
    if problems:
        raise UserError("--images: " + "; ".join(problems.values()))
    try:
        return None, [open_rgb(p) for p in image_files]
    except ImageError as exc:
        raise UserError(f"--images: {exc}") from None


def _target_line(result) -> str:
    if not result.ok:
        return f"target: none ({result.reason})"
    p, q = result.approach_position, result.approach_orientation
    return (f"target_pose ({result.frame_id}): position [{p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}] m, "
            f"orientation xyzw [{q[0]:.3f}, {q[1]:.3f}, {q[2]:.3f}, {q[3]:.3f}]; object at "
            f"[{', '.join(f'{v:.3f}' for v in result.position_world)}] m, confidence {result.confidence}")


def add_parser(sub) -> None:
    """Add ``vilasr ask`` to the command parsers."""
    from vilasr_ros.agent import AgentConfig
    from vilasr_ros.grounding import GroundingConfig

    ask = sub.add_parser("ask", help="ask one spatial question about images or a frame source")
    src = ask.add_argument_group("input (one of --images / --source / --memory)")
    src.add_argument("--images", nargs="+", help="image files or a folder (sorted by name)")
    src.add_argument("--source", help="frame source: rgbd_folder:PATH, bag:PATH, realsense[:SERIAL|FILE.db3], sim:...")
    src.add_argument("--memory", help="a keyframe memory folder (vilasr agent --memory-dir, vilasr memory build); "
                     "its frames chosen by --since/--until/--region/--near and viewpoint coverage")
    src.add_argument("--frames", type=positive_int, default=AgentConfig.frames,
                     help=f"frames to select from --source (default {AgentConfig.frames})")
    src.add_argument("--selection", default=str(AgentConfig.selection), choices=SELECTIONS)
    src.add_argument("--kind", choices=[k.value for k in PromptKind], help="prompt layout (default by count)")
    from vilasr_ros.cli.memory import add_filter_arguments

    add_filter_arguments(src)
    ask.add_argument("--question", required=True)
    ask.add_argument("--type", default="free-form", type=problem_type, help=", ".join(TYPE_SPELLINGS))
    ask.add_argument("--option", action="append", help="multiple-choice option, repeatable ('A. yes')")
    ask.add_argument("--target", help="ground the model's boxes with this label into a world-frame target")
    ask.add_argument("--standoff", type=non_negative_float, default=GroundingConfig.standoff_m,
                     help=f"approach distance to the target (m; default {GroundingConfig.standoff_m})")
    ask.add_argument("--remove-floor", action=argparse.BooleanOptionalAction, default=True,
                     help="drop floor and background-wall pixels before placing the target (default on: "
                          "z-up world, floor at z=0, as every robot's map/odom; off for y-up data)")
    ask.add_argument("--out", help="trace folder (default runs/ask_<time>)")
    add_engine_arguments(ask)
    ask.set_defaults(func=cmd_ask)
