"""`pdp serve`: run the gRPC decision service."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pdp import config as settings
from pdp import logs


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve decisions over gRPC",
        description="Serve the policy set over gRPC. Every setting also reads from the TOML "
        "file given by --config and from a PDP_ environment variable; the command line wins.",
    )
    settings.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = settings.from_args(args)
        config.cache.validate()
    except settings.ConfigError as exc:
        print(f"pdp serve: {exc}", file=sys.stderr)
        return 2
    from pdp.observability import config_problem as observability_problem
    from pdp.redis_sync import config_problem

    problem = config_problem(config) or observability_problem(config.audit, config.metrics.listen)
    if problem:
        print(f"pdp serve: {problem}", file=sys.stderr)
        return 2
    logs.configure(config.log.level, config.log.format)
    workers = settings.worker_count(config)
    if workers > 1:
        from pdp.observability import run_pool
        from pdp.workers import supervise

        return run_pool(config, workers, supervise)
    from pdp.server import run as run_server

    return run_server(config)
