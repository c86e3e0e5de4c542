"""``vilasr memory build|info|query``: the keyframe memory on disk (:mod:`vilasr_ros.memory`)."""

from __future__ import annotations

import argparse
import json
import time

from vilasr_ros.cli.common import UserError, positive_int


def near_argument(text: str) -> dict[str, float]:
    """``X,Y,R`` (metres, map frame) → the query's ``near`` object."""
    try:
        x, y, r = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--near takes X,Y,RADIUS in metres, got {text!r}") from None
    if not r > 0:
        raise argparse.ArgumentTypeError(f"--near radius must be > 0, got {r:g}")
    return {"x": x, "y": y, "radius_m": r}


def add_filter_arguments(parser) -> None:
    """The memory filters a query takes, as flags (``vilasr ask --memory``, ``vilasr memory query``)."""
    parser.add_argument("--since", help="from this time: a stamp (s), ISO-8601 or relative ('-20min', '-2h')")
    parser.add_argument("--until", help="to this time (same forms)")
    parser.add_argument("--region", help="a region name of --regions")
    parser.add_argument("--regions", help="YAML of named map polygons (config/regions.example.yaml)")
    parser.add_argument("--near", type=near_argument, help="X,Y,RADIUS: keyframes taken within RADIUS m of (X, Y) in map")


def _stamp(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def memory_query(args: argparse.Namespace, question: str = "(memory query)", frames: int = 16):
    """A :class:`~vilasr_ros.query.Query` carrying the filter flags.

    Raises:
        UserError: A malformed time or near, or ``--region`` without ``--regions``.
    """
    from vilasr_ros.query import BadQueryError, Query

    if args.region and not args.regions:
        raise UserError("--region needs --regions FILE (the named map polygons)")
    try:
        return Query(question=question, frames=frames, since=_stamp(args.since), until=_stamp(args.until),
                     region=args.region, near=args.near, text=getattr(args, "text", None), memory=True)
    except BadQueryError as exc:
        raise UserError(str(exc)) from None


def cmd_build(args: argparse.Namespace) -> int:
    """Keyframes of recorded bags (the node's pairing and keyframe rules) into a memory folder."""
    from vilasr_ros.buffer import BufferConfig, FrameBuffer
    from vilasr_ros.memory import KeyframeMemory, MemoryConfig
    from vilasr_ros.sources import open_source

    memory = KeyframeMemory(args.out, MemoryConfig(max_bytes=args.max_mb * 2**20))
    total = kept = 0
    try:
        for bag in args.bags:
            buffer = FrameBuffer(BufferConfig(max_frames=4), wall_clock=lambda: float("inf"))
            with open_source(f"bag:{bag}") as source:
                for frame in source:
                    total += 1
                    if buffer.add(frame):
                        memory.add(frame)
                        kept += 1
        info = memory.info()
    finally:
        memory.close()
    print(f"{kept} keyframes of {total} frames from {len(args.bags)} bag(s) into {args.out} "
          f"({info['keyframes']} stored, {info['bytes'] / 2**20:.1f} MiB)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from vilasr_ros.retrieval import AgentMemory

    memory = AgentMemory(args.dir, args.regions, readonly=True)
    try:
        latest = {}
        for seen in memory.store.objects():  # newest first: the first of each label is its last sighting
            latest.setdefault(seen["label"], seen)
        info = {**memory.store.info(), "regions": sorted(memory.regions), "objects": list(latest.values())}
    finally:
        memory.close()
    if args.json:
        print(json.dumps(info))
        return 0
    span = "" if info["first_stamp"] is None else \
        f", {info['first_stamp']:.3f} .. {info['last_stamp']:.3f} s ({(info['last_stamp'] - info['first_stamp']) / 60:.1f} min)"
    print(f"{args.dir}: {info['keyframes']} keyframes{span}, {info['bytes'] / 2**20:.1f} MiB of images "
          f"({info['file_bytes'] / 2**20:.1f} MiB on disk)")
    if info["regions"]:
        print("regions: " + ", ".join(info["regions"]))
    for seen in info["objects"]:
        p = seen["position"]
        print(f"{seen['label']}: last seen at {seen['stamp']:.3f} s, [{p[0]:.2f}, {p[1]:.2f}, {p[2]:.2f}] m in "
              f"{seen['frame_id']} (confidence {seen['confidence']}; {len(seen['evidence'])} keyframes)")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from vilasr_ros.retrieval import AgentMemory

    query = memory_query(args, frames=args.frames)
    memory = AgentMemory(args.dir, args.regions, readonly=True, embedder_model=args.embedder_model)
    try:
        frames, info = memory.select(query, args.frames, time.time())
    finally:
        memory.close()
    rows = [{"id": f.index, "stamp": f.stamp_s,
             "position": None if f.T_world_camera is None else [round(float(v), 4) for v in f.T_world_camera[:3, 3]],
             "reason": reason} for f, reason in zip(frames, info["reasons"])]
    if args.json:
        print(json.dumps({"frames": rows, "candidates": info["candidates"]}))
        return 0
    print(f"{len(rows)} of {info['candidates']} matching keyframes ({info['reason']}):")
    for r in rows:
        print(f"  {r['id']:>7}  {r['stamp']:.3f} s  at {r['position']}")
    return 0


def add_parser(sub) -> None:
    """Add ``vilasr memory`` to the command parsers."""
    mem = sub.add_parser("memory", help="the keyframe memory on disk: build from bags, info, query")
    msub = mem.add_subparsers(dest="memory_command", required=True, parser_class=type(mem))
    build = msub.add_parser("build", help="keyframes of recorded bags into a memory folder")
    build.add_argument("bags", nargs="+", help="ROS 2 bags (folders or .mcap/.db3)")
    build.add_argument("--out", required=True, help="memory folder (created; an existing one is continued)")
    build.add_argument("--max-mb", type=positive_int, default=20480, help="size cap (MiB; oldest keyframes go first)")
    build.set_defaults(func=cmd_build)
    info = msub.add_parser("info", help="size, time span and regions of a memory folder")
    info.add_argument("dir")
    info.add_argument("--regions", help="YAML of named map polygons")
    info.add_argument("--json", action="store_true", help="one JSON object (keyframes, first_stamp, last_stamp, bytes, objects)")
    info.set_defaults(func=cmd_info)
    query = msub.add_parser("query", help="which keyframes a query's filters select, and why")
    query.add_argument("dir")
    query.add_argument("--text", help="what to look for (ranked by --embedder-model's text-image similarity)")
    query.add_argument("--embedder-model", help="SigLIP/CLIP folder or cached id (the one the agent embedded with)")
    query.add_argument("--frames", type=positive_int, default=16, help="keyframes to select (default 16)")
    add_filter_arguments(query)
    query.add_argument("--json", action="store_true", help='{"frames": [{"id", "stamp", "position", "reason"}, ...]}')
    query.set_defaults(func=cmd_query)
