"""Handler benchmark: server CPU per Check and per BatchCheck entry, without the transport.

The real `DecisionServicer` (built as `pdp serve` builds it, audit off) is
called in a loop with the gRPC scenario's requests (benchmarks/grpc.py, 1,000
cases, parsed once), and each response is serialized, as gRPC would. The
figure is the thread's CPU time per call (time.thread_time_ns), the best of
several rounds: unlike throughput, it hardly moves when other jobs load the
machine. It is a warm-loop figure; inside a busy server the same code costs
2-3 times more (cold CPU caches), see the README. Parts of a Check are timed
the same way on their own.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.grpc import BATCH, CASES, SCENARIO, cases, pdp_request
from pdp import config as settings
from pdp.engine import decide, decision_key
from pdp.grpc_mapping import to_request, to_response
from pdp.loader import load_policy_dir
from pdp.policy import CompiledPolicy
from pdp.server import DecisionServicer, build_service
from pdp.service import Outcome, PolicyHolder, new_decision_id
from pdp.v1 import decision_pb2

ROUNDS = 7


def servicer(policy: CompiledPolicy, flags: Sequence[str]) -> DecisionServicer:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    config = settings.from_args(parser.parse_args(["--policies", str(SCENARIO / "pdp"), *flags]), env={})
    return DecisionServicer(build_service(config, PolicyHolder(policy)), config)


def cpu_us(run: Callable[[], Any], calls: int, rounds: int) -> float:
    """Best round's thread CPU per call, in µs (after one warm-up round)."""
    run()
    best = float("inf")
    for _ in range(rounds):
        start = time.thread_time_ns()
        run()
        best = min(best, time.thread_time_ns() - start)
    return best / calls / 1000


def run(args: argparse.Namespace) -> list[str]:
    rounds = 3 if args.quick else ROUNDS
    scenario = cases(CASES)
    checks = [pdp_request(c) for c in scenario]
    batches = [decision_pb2.BatchCheckRequest(requests=checks[i:i + BATCH])
               for i in range(0, len(checks), BATCH)]
    policy = load_policy_dir(SCENARIO / "pdp")
    wire = [m.SerializeToString() for m in checks]
    rows = []
    for label, flags in (("cache on", []), ("cache off", ["--cache-size", "0"])):
        handler = servicer(policy, flags)

        def check(h: DecisionServicer = handler) -> None:
            for data in wire:
                h.Check(data, None)  # type: ignore[arg-type]

        def batch(h: DecisionServicer = handler) -> None:
            for msg in batches:
                h.BatchCheck(msg, None).SerializeToString()  # type: ignore[arg-type]

        rows.append(f"| Check, {label} | {cpu_us(check, len(checks), rounds):.1f} |")
        rows.append(f"| BatchCheck x{BATCH}, {label}, per entry | {cpu_us(batch, len(checks), rounds):.1f} |")
    limits = settings.LimitsConfig()
    requests = [to_request(m, limits) for m in checks]
    outcomes = [Outcome(decide(policy, r), new_decision_id(), False, 0.0) for r in requests]
    parts: dict[str, Callable[[], Any]] = {
        "to_request (validate, convert)": lambda: [to_request(m, limits) for m in checks],
        "decision_key": lambda: [decision_key(policy, r) for r in requests],
        "decide (no cache)": lambda: [decide(policy, r) for r in requests],
        "to_response": lambda: [to_response(o) for o in outcomes],
        "new_decision_id": lambda: [new_decision_id() for _ in checks],
    }
    rows += [f"| part: {name} | {cpu_us(fn, len(checks), rounds):.2f} |" for name, fn in parts.items()]
    return [
        "## Handler CPU (no transport)",
        "",
        f"Thread CPU per call, best of {rounds} rounds over the {CASES} scenario requests.",
        "",
        "| what | µs CPU |",
        "| --- | ---: |",
        *rows,
    ]
