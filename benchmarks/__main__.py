"""Run the benchmark suites: `python -m benchmarks [--quick] [--only NAME ...]`.

A suite is a module of this package listed in SUITES. It provides
`run(args) -> list[str]` (markdown lines: a heading, a table, notes) and may
provide `add_arguments(parser)` for options of its own. Each suite's output is
printed and written to benchmarks/out/NAME.md.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

# To add a suite: create benchmarks/NAME.py with run(args), and list NAME here.
SUITES: tuple[str, ...] = (
    "engine", "identity", "convergence", "gateway", "cache", "grpc", "audit", "handler",
)

OUT = Path(__file__).resolve().parent / "out"


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"benchmarks.{name}")


def _parser(modules: dict[str, ModuleType]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="smaller samples, for a check in under two minutes")
    parser.add_argument("--only", action="append", choices=SUITES, metavar="NAME",
                        help=f"run only this suite (repeatable; one of {', '.join(SUITES)})")
    parser.add_argument("--out", type=Path, default=OUT,
                        help="where to write NAME.md for each suite (default benchmarks/out)")
    for module in modules.values():
        add = getattr(module, "add_arguments", None)
        if add is not None:
            add(parser)
    return parser


def _run_suite(module: ModuleType, name: str, args: argparse.Namespace) -> bool:
    """Runs one suite; a suite that fails is reported and the others still run."""
    t0 = time.perf_counter()
    try:
        lines = module.run(args)
    except Exception:
        traceback.print_exc()
        print(f"[{name}] FAILED after {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return False
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    (args.out / f"{name}.md").write_text(text)
    took = time.perf_counter() - t0
    print(f"[{name}] {took:.0f} s; written to {args.out / f'{name}.md'}", file=sys.stderr)
    return True


def main(argv: list[str] | None = None) -> int:
    modules = {name: _load(name) for name in SUITES}
    args = _parser(modules).parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    ok = [_run_suite(modules[name], name, args) for name in args.only or SUITES]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
