"""The ``vilasr`` command line.

Examples::

    vilasr ask --source sim:seed=3 --question "Where is the sofa? Go to it." --target sofa
    vilasr ask --images room.png --question "Is the chair left of the table?" \\
        --type multiple-choice --option "A. yes" --option "B. no" --model /models/ViLaSR
    vilasr ask --images frames/ --question "How many chairs?" --type numerical \\
        --base-url http://127.0.0.1:8000/v1 --out runs/q1
    vilasr agent --localhost --query '{"question": "Go to the sofa", "target": "sofa"}'
    vilasr view runs/q1                                  # runs/q1/trace.html
    vilasr memory query runs/memory --since -20min --json   # which remembered keyframes a filter selects
    vilasr eval run --dataset vsi_bench --data vsi_bench.json --base-url http://127.0.0.1:8000/v1 --out runs/vsi
    vilasr train sft --config config/training/sft.yaml --set args.output_dir=runs/sft

Every command takes its engine the same way: ``--engine auto`` (the default) means a server when
``--base-url`` is given, else the ViLaSR weights when they are here, else the scripted demo (said so).
A mistake on the command line is one line on stderr and exit code 2; a run that fails is exit code 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import entry_points

from vilasr_ros.cli import agent, ask, evaluate, memory, serve, view
from vilasr_ros.cli.common import (
    Parser,
    UserError,
    _missing,
    _one_line,
    choose,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from vilasr_ros.errors import MissingDependencyError, VilasrError

logger = logging.getLogger("vilasr_ros.cli")
__all__ = ["Parser", "UserError", "build_parser", "choose", "main", "non_negative_float", "non_negative_int", "positive_int"]


def _version() -> str:
    from vilasr_ros import __version__

    return f"vilasr {__version__} (vilasr_ros, Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    """The ``vilasr`` parser: the core's commands, then those of installed subpackages."""
    parser = Parser(prog="vilasr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in (ask, agent, serve, view, evaluate, memory):
        command.add_parser(sub)

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
