"""``vilasr eval run|score|report``: benchmarks and sim datasets, scored as the authors do."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vilasr_ros.cli.common import Parser, UserError, add_engine_arguments, build_reasoner, choose, loop_config, positive_int


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


def add_parser(sub) -> None:
    """Add ``vilasr eval`` to the command parsers."""
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
