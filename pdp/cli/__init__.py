"""The `pdp` command line. Each command group lives in its own module here and
registers its subcommands; this module only assembles them."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module defines `register(subparsers)`; a subcommand sets `func(args) -> int`.
COMMAND_MODULES = (
    "pdp.cli.policy",
    "pdp.cli.serve",
    "pdp.cli.audit",
    "pdp.cli.identity",
    "pdp.cli.publish",
    "pdp.cli.assignments",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pdp",
        description="Policy decision point: validate, test and query policy sets, and serve decisions.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0
