"""``vilasr serve``: the draw-to-reason loop next to the model, for robots (HTTP)."""

from __future__ import annotations

import argparse

from vilasr_ros.cli.common import UserError, add_engine_arguments, choose, non_negative_float, non_negative_int, positive_int


def cmd_serve(args: argparse.Namespace) -> int:
    from vilasr_ros.configs import build_config
    from vilasr_ros.errors import ConfigError
    from vilasr_ros.serve import ServeConfig, serve

    try:
        config = build_config(ServeConfig, {k: v for k, v in (
            ("host", args.host), ("port", args.port), ("token_env", args.token_env_serve), ("workers", args.workers),
            ("max_queue", args.max_queue), ("max_frames", args.max_frames), ("max_body_mb", args.max_body_mb),
            ("default_deadline_s", args.default_deadline), ("max_deadline_s", args.max_deadline),
            ("max_connections", args.max_connections), ("header_timeout_s", args.header_timeout),
            ("body_timeout_s", args.body_timeout), ("max_uploads", args.max_uploads),
            ("max_frame_pixels", args.max_frame_pixels), ("max_request_pixels", args.max_request_pixels)) if v is not None},
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


def add_parser(sub) -> None:
    """Add ``vilasr serve`` to the command parsers."""
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
    g = sv.add_argument_group("budgets against slow, many or hostile clients (README: Failure behaviour)")
    g.add_argument("--max-connections", type=positive_int, help="open connections at most (512)")
    g.add_argument("--header-timeout", type=non_negative_float, help="a request head must arrive within this, s (10)")
    g.add_argument("--body-timeout", type=non_negative_float, help="a request body must arrive within this, s (120)")
    g.add_argument("--max-uploads", type=positive_int, help="request bodies read at once (8)")
    g.add_argument("--max-frame-pixels", type=positive_int, help="pixels per frame, from its header (16000000)")
    g.add_argument("--max-request-pixels", type=positive_int, help="pixels of all frames of a request (100000000)")
    add_engine_arguments(sv, sampling=False)
    sv.set_defaults(func=cmd_serve, max_pixels=None, max_turns=None, temperature=None, top_p=None, max_tokens=None)
