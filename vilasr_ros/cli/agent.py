"""``vilasr agent``: camera_node + vilasr_agent in one process; with ``--query``, one question over ROS."""

from __future__ import annotations

import argparse
from typing import Any

from vilasr_ros.cli.common import (
    UserError,
    add_engine_arguments,
    check_source_spec,
    choose,
    loop_config,
    non_negative_float,
    positive_int,
)


FLAG_PARAMETERS = {"trace_root": "trace_root", "max_age": "max_age_s", "remove_floor": "remove_floor",
                   "memory_dir": "memory_dir", "regions": "regions_file", "embedder_model": "embedder_model"}
"""``vilasr agent`` flags (argparse names) → the ``vilasr_agent`` parameters they set."""


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
        check_source_spec(args.source)
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
    if args.model_family is not None:
        agent["model_family"] = cfg.model_family
    if args.no_tools:
        agent["tools"] = False
    for name in ("temperature", "top_p", "max_tokens", "max_pixels", "max_turns"):
        value = getattr(cfg.sampling, name, None) if name in ("temperature", "top_p", "max_tokens") else getattr(cfg, name)
        if getattr(args, name) is not None:
            agent[name] = value
    for flag, parameter in FLAG_PARAMETERS.items():
        if getattr(args, flag) is not None:
            agent[parameter] = getattr(args, flag)
    camera = {"source": args.source} if args.source is not None else {}
    if query is not None and args.source:
        camera.setdefault("loop", False)  # a finite source ends: its frames are the keyframes, no copies
    return run_agent(args.config, camera=camera, agent=agent, query=query, wait_frames=args.wait_frames,
                     timeout_s=args.timeout)


def add_parser(sub) -> None:
    """Add ``vilasr agent`` to the command parsers."""
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
    ag.add_argument("--memory-dir", help="keyframe memory folder: every keyframe kept on disk, found again by a "
                    "query's since/until/region/near (a restart continues it)")
    ag.add_argument("--regions", help="YAML of named map polygons for queries' region (config/regions.example.yaml)")
    ag.add_argument("--embedder-model", help="SigLIP/CLIP folder or cached id: the memory's text search")
    ag.add_argument("--query", help='query JSON, e.g. \'{"question": "Go to the sofa", "target": "sofa"}\'')
    ag.add_argument("--wait-frames", type=positive_int, default=16,
                    help="keyframes to buffer before sending --query (a finite source may end with fewer)")
    ag.add_argument("--timeout", type=non_negative_float, default=600.0, help="seconds to wait for frames and the answer")
    ag.add_argument("--localhost", action="store_true",
                    help="keep DDS on this machine: loopback discovery, the shipped Fast DDS profile, temp log dir")
    ag.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID (implies --localhost)")
    add_engine_arguments(ag)
    ag.set_defaults(func=cmd_agent)
