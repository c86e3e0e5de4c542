"""``vilasr view``: a trace as one self-contained HTML page, or a rerun recording."""

from __future__ import annotations

import argparse
from pathlib import Path

from vilasr_ros.cli.common import UserError


def cmd_view(args: argparse.Namespace) -> int:
    trace_dir = Path(args.trace_dir)
    if not (trace_dir / "trace.json").is_file():
        raise UserError(f"{trace_dir} holds no trace.json (a folder written by vilasr ask, the agent or eval)")
    if args.rerun:
        from vilasr_ros.rerun_view import write_rerun

        try:
            out = write_rerun(trace_dir, args.out, source=args.source, connect=args.connect, memory=args.memory)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    else:
        from vilasr_ros.view import write_html

        out = write_html(trace_dir, args.out)
    print(out)
    return 0


def add_parser(sub) -> None:
    """Add ``vilasr view`` to the command parsers."""
    view = sub.add_parser("view", help="look at a trace: one self-contained HTML page (or a rerun .rrd)")
    view.add_argument("trace_dir", help="a trace folder (trace.json + images/)")
    view.add_argument("--out", help="output file (default TRACE_DIR/trace.html, or trace.rrd with --rerun)")
    view.add_argument("--rerun", action="store_true", help="write a rerun recording (3D: poses, depth, target)")
    view.add_argument("--source", help="--rerun: the frame source the trace was asked on (adds depth clouds and the object's points)")
    view.add_argument("--connect", metavar="URL", help="--rerun: stream to a running viewer (rerun+http://HOST:9876/proxy) instead of a file")
    view.add_argument("--memory", help="--rerun: a keyframe memory folder (its trajectory and remembered objects)")
    view.set_defaults(func=cmd_view)
