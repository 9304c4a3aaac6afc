"""Engine benchmark: our decide() against cedarpy and pycasbin on one scenario.

For each size (10 rules / 100 subjects, 1k / 10k, 100k / 100k) the same
scenario (benchmarks/gen_policies.py) is written in the three languages. Each
(size, engine) is measured in a fresh process pinned to one CPU:

- compile: the time to load the policy set from disk (our load_policy_dir,
  cedarpy PolicySet.from_str + Entities.from_json_str, casbin Enforcer(model, csv));
- memory: the growth of the process's resident set over that load (and, for
  our engine, the tracemalloc figures: what the compiled policy keeps, and the
  peak while compiling);
- decision cost: calls timed with perf_counter_ns in batches of --batch
  consecutive requests; each batch gives one per-decision sample (its time
  divided by its size). Median, p99 and mean are over those samples. Nothing
  is cached between calls by the harness; every call returns reasons (ours)
  or a full authorization answer (cedarpy, casbin).

All engines must agree on every request they answered (mismatches must be 0).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import multiprocessing
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.gen_policies import (
    REQUESTS,
    SIZES,
    Req,
    Size,
    Written,
    cedar_request,
    casbin_request,
    load_requests,
    make_scenario,
    write_all,
)

NAME = "engine"
ENGINES = ("ours", "cedarpy", "casbin")
TARGET_US = 5.0
TARGET_RATIO = 2.0
TARGET_COMPILE_S = 10.0


@dataclass(frozen=True, slots=True)
class Plan:
    """How many requests each engine answers at one size, and how often."""

    requests: dict[str, int]  # engine -> requests (0 = skipped)
    rounds: dict[str, int]


def plans(quick: bool) -> dict[str, Plan]:
    """Requests per engine and size: the others scan every rule, so they get subsets."""
    if quick:
        return {
            "10": Plan({"ours": REQUESTS, "cedarpy": 2_000, "casbin": 1_000}, {"ours": 2}),
            "1k": Plan({"ours": REQUESTS, "cedarpy": 500, "casbin": 100}, {"ours": 2}),
            "100k": Plan({"ours": REQUESTS, "cedarpy": 0, "casbin": 0}, {"ours": 1}),
        }
    return {
        "10": Plan({"ours": REQUESTS, "cedarpy": REQUESTS, "casbin": REQUESTS}, {"ours": 5}),
        "1k": Plan({"ours": REQUESTS, "cedarpy": REQUESTS, "casbin": 1_000}, {"ours": 5}),
        "100k": Plan({"ours": REQUESTS, "cedarpy": 100, "casbin": 10}, {"ours": 3}),
    }


# ---- measurement, in a child process ----


@dataclass(slots=True)
class Result:
    engine: str
    size: str
    compile_s: float = 0.0
    rss_mib: float = 0.0
    median_us: float = 0.0
    p99_us: float = 0.0
    mean_us: float = 0.0
    answered: int = 0
    decisions: str = ""  # "1"/"0" per request answered, in order
    notes: list[str] = field(default_factory=list)
    error: str = ""


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _pin_one_cpu() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})


def time_calls(
    call: Callable[[Any], bool], items: Sequence[Any], rounds: int, batch: int
) -> tuple[list[float], list[bool]]:
    """Per-decision samples in ns (one per batch) and the first round's answers."""
    clock = time.perf_counter_ns
    for item in items[:200]:  # warm up caches of the interpreter, not of the engine
        call(item)
    answers = [call(item) for item in items]
    samples: list[float] = []
    for _ in range(rounds):
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            t0 = clock()
            for item in chunk:
                call(item)
            samples.append((clock() - t0) / len(chunk))
    return samples, answers


def _ours(written: Written, reqs: list[Req]) -> tuple[Any, Callable[[Any], bool], list[Any]]:
    from pdp.engine import decide
    from pdp.loader import load_policy_dir
    from pdp.model import EMPTY, Request

    policy = load_policy_dir(written.ours)
    items = [
        Request(
            r.stype,
            r.sid,
            r.action,
            r.rtype,
            r.rid,
            resource_properties={"owner": r.owner} if r.owner is not None else EMPTY,
        )
        for r in reqs
    ]

    def call(request: Any) -> bool:
        return decide(policy, request).allowed

    return policy, call, items


def _cedar(written: Written, reqs: list[Req]) -> tuple[Any, Callable[[Any], bool], list[Any]]:
    import cedarpy

    policies = cedarpy.PolicySet.from_str(written.cedar_policies.read_text())
    entities = cedarpy.Entities.from_json_str(written.cedar_entities.read_text())
    is_authorized = cedarpy.is_authorized

    def call(request: Any) -> bool:
        return bool(is_authorized(request, policies, entities).allowed)

    return (policies, entities), call, [cedar_request(r) for r in reqs]


_GLOBS: dict[str, re.Pattern[str]] = {}


def _obj_match(key: str, pattern: str) -> bool:
    """keyMatch, except that `*` also matches inside the pattern (any run of characters)."""
    star = pattern.find("*")
    if star < 0:
        return key == pattern
    if star == len(pattern) - 1:
        return key.startswith(pattern[:star])
    glob = _GLOBS.get(pattern)
    if glob is None:
        glob = _GLOBS[pattern] = re.compile(".*".join(map(re.escape, pattern.split("*"))))
    return glob.fullmatch(key) is not None


def _casbin(written: Written, reqs: list[Req]) -> tuple[Any, Callable[[Any], bool], list[Any]]:
    import casbin

    enforcer = casbin.Enforcer(str(written.casbin_model), str(written.casbin_policy))
    enforcer.add_function("objMatch", _obj_match)
    enforce = enforcer.enforce

    def call(args: Any) -> bool:
        return bool(enforce(*args))

    return enforcer, call, [casbin_request(r) for r in reqs]


LOADERS = {"ours": _ours, "cedarpy": _cedar, "casbin": _casbin}


def _tracemalloc_note(written: Written) -> str:
    import tracemalloc

    from pdp.loader import load_policy_dir

    gc.collect()
    tracemalloc.start()
    policy = load_policy_dir(written.ours)
    gc.collect()
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del policy
    return f"tracemalloc: compiled policy {kept / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB"


def measure(
    engine: str, size: str, written: Written, count: int, rounds: int, batch: int, trace: bool
) -> Result:
    """Runs in a fresh process: load, then time `count` requests."""
    _pin_one_cpu()
    result = Result(engine, size)
    reqs = load_requests(written.requests)[:count]
    gc.collect()
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    try:
        state, call, items = LOADERS[engine](written, reqs)
    except Exception as err:  # a missing or broken engine is a row, not a crash
        result.error = f"{type(err).__name__}: {err}"[:300]
        return result
    result.compile_s = time.perf_counter() - t0
    items = items[:count]
    gc.collect()
    result.rss_mib = (_rss_bytes() - rss0) / 2**20
    gc.freeze()  # the loaded policy is long-lived: keep it out of the collector's scans
    samples, answers = time_calls(call, items, rounds, batch)
    result.median_us = statistics.median(samples) / 1000
    result.p99_us = statistics.quantiles(samples, n=100)[98] / 1000 if len(samples) > 1 else 0.0
    result.mean_us = statistics.fmean(samples) / 1000
    result.answered = len(answers)
    result.decisions = "".join("1" if a else "0" for a in answers)
    del state
    if trace and engine == "ours":
        gc.unfreeze()
        result.notes.append(_tracemalloc_note(written))
    return result


def measure_in_child(*args: Any) -> Result:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(measure, *args).result()


# ---- the suite ----


def mismatches(results: list[Result]) -> tuple[int, int]:
    """(requests compared, requests on which some engines disagree)."""
    answered = [r.decisions for r in results if r.decisions]
    if len(answered) < 2:
        return 0, 0
    n = min(len(d) for d in answered)
    bad = sum(1 for i in range(n) if len({d[i] for d in answered}) > 1)
    return n, bad


def _fmt(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def _row(r: Result, rules: int, ours: Result | None) -> str:
    if r.error:
        return f"| {r.size} | {r.engine} | {rules:,} | | | | | | | | {r.error} |"
    if not r.answered:
        return f"| {r.size} | {r.engine} | {rules:,} | | | | | | | | {'; '.join(r.notes)} |"
    ratio = ""
    if ours and ours.answered and not ours.error and r is not ours:
        ratio = f"{r.median_us / ours.median_us:,.0f}×"
    notes = list(r.notes)
    if r.answered < REQUESTS:
        notes.append(f"subset: first {r.answered:,} requests")
    return (
        f"| {r.size} | {r.engine} | {rules:,} | {r.compile_s:.2f} | {r.rss_mib:,.0f} "
        f"| {_fmt(r.median_us, 2)} | {_fmt(r.p99_us, 2)} | {_fmt(r.mean_us, 2)} "
        f"| {r.answered:,} | {ratio} | {'; '.join(notes)} |"
    )


HEADER = [
    "| size | engine | rules | compile s | RSS Δ MiB | median µs | p99 µs | mean µs "
    "| requests | × ours | notes |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
]


def bench_size(size: Size, root: Path, plan: Plan, args: argparse.Namespace) -> list[Result]:
    t0 = time.perf_counter()
    scn = make_scenario(size)
    written = write_all(scn, root / size.name)
    print(f"[engine] {size.name}: generated {scn.rule_count():,} rules, "
          f"{len(scn.directory):,} subjects in {time.perf_counter() - t0:.1f} s", flush=True)
    del scn
    results = []
    for engine in args.engines:
        count = plan.requests.get(engine, 0)
        if not count:
            skipped = Result(engine, size.name, notes=["skipped at this size (too slow)"])
            results.append(skipped)
            continue
        rounds = plan.rounds.get(engine, 1)
        res = measure_in_child(engine, size.name, written, count, rounds, args.batch, args.trace)
        print(f"[engine] {size.name} {engine}: "
              + (res.error or f"compile {res.compile_s:.2f} s, median {res.median_us:.2f} µs"),
              flush=True)
        results.append(res)
    return results


def summary_lines(all_results: dict[str, list[Result]]) -> list[str]:
    lines = []
    base = None
    for size_name, results in all_results.items():
        n, bad = mismatches(results)
        ours = next((r for r in results if r.engine == "ours" and r.answered), None)
        engines = ", ".join(r.engine for r in results if r.decisions)
        if ours:
            allow = ours.decisions.count("1") / len(ours.decisions)
            lines.append(f"- {size_name}: {allow:.0%} of the requests are ALLOW.")
        lines.append(f"- {size_name}: decision mismatches between {engines}: "
                     f"**{bad}** of {n:,} requests compared.")
        if ours and base is None:
            base = ours
        if ours and base is not None:
            ratio = ours.median_us / base.median_us
            verdict = "ok" if ours.median_us <= TARGET_US else "MISSED"
            lines.append(f"- {size_name}: ours median {ours.median_us:.2f} µs "
                         f"(target ≤ {TARGET_US:g} µs: {verdict}); "
                         f"{ratio:.2f}× the {base.size} set (target ≤ {TARGET_RATIO:g}×: "
                         f"{'ok' if ratio <= TARGET_RATIO else 'MISSED'}); "
                         f"compile {ours.compile_s:.2f} s"
                         + (f" (target < {TARGET_COMPILE_S:g} s: "
                            f"{'ok' if ours.compile_s < TARGET_COMPILE_S else 'MISSED'})"
                            if size_name == "100k" else ""))
    return lines


def run(args: argparse.Namespace) -> list[str]:
    """The suite entry point for `python -m benchmarks`."""
    args.engines = getattr(args, "engines", None) or ENGINES
    args.batch = getattr(args, "batch", None) or 10
    args.trace = not args.quick
    sizes = [s for s in SIZES if not args.sizes or s.name in args.sizes]
    plan = plans(args.quick)
    all_results: dict[str, list[Result]] = {}
    with tempfile.TemporaryDirectory(prefix="pdp-bench-") as tmp:
        for size in sizes:
            all_results[size.name] = bench_size(size, Path(tmp), plan[size.name], args)
    rules = {s.name: s.rules for s in SIZES}
    lines = [f"## Engine: decision cost by policy size{' (--quick)' if args.quick else ''}", ""]
    lines += HEADER
    for size_name, results in all_results.items():
        ours = next((r for r in results if r.engine == "ours"), None)
        lines += [_row(r, rules[size_name], ours) for r in results]
    lines += ["", *summary_lines(all_results), ""]
    lines.append(f"Per-decision samples: batches of {args.batch} calls timed with "
                 "perf_counter_ns, one CPU, fresh process per row; RSS Δ is the growth over "
                 f"the load. Machine: {os.cpu_count()} CPUs, `{platform_line()}`.")
    return lines


def platform_line() -> str:
    import platform

    return f"Python {platform.python_version()} on {platform.machine()}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine suite")
    group.add_argument("--sizes", nargs="+", choices=[s.name for s in SIZES],
                       help="policy sizes to run (default: all)")
    group.add_argument("--engines", nargs="+", choices=ENGINES,
                       help="engines to run (default: all)")
    group.add_argument("--batch", type=int, default=10,
                       help="consecutive calls per timing sample (default 10)")
