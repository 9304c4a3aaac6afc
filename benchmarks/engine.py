"""Engine benchmark: our decide() against cedarpy and pycasbin on one scenario.

For each size (10 rules / 100 subjects, 1k / 10k, 100k / 100k) the same
scenario (benchmarks/gen_policies.py) is written in the three languages. Each
(size, engine) is measured in a fresh process pinned to one CPU:

- compile: the time to load the policy set from disk (our load_policy_dir,
  cedarpy PolicySet.from_str + Entities.from_json_str, casbin Enforcer(model, csv));
- memory: the growth of the process's resident set over that load (and, for
  our engine, the tracemalloc figures: what the compiled policy keeps, and the
  peak while compiling);
- decision cost: calls timed with perf_counter_ns, ours in batches of --batch
  consecutive requests (each batch gives one per-decision sample: its time
  divided by its size), the others call by call. Median, p99 and mean are over
  those samples. No decision cache: every call computes the decision and its
  reasons (ours) or a full authorization answer (cedarpy, casbin). Our compiled
  policy keeps memo tables (subject -> roles, roles+action+type -> rule
  buckets): the "ours" row is timed with them warm (after one untimed pass);
  the "ours, memo cleared" row empties them before every call, which is the
  cost of a subject, or a role set, seen for the first time.

All engines must agree on every request they answered (mismatches must be 0).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import gc
import math
import multiprocessing
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.gen_policies import (
    REQUESTS,
    SCENARIO,
    SIZES,
    Req,
    Size,
    Written,
    casbin_request,
    cedar_request,
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
    """How many requests each engine answers at one size, and how often.

    Ours needs 2+ rounds: the answers come from an untimed first pass, so the
    timed rounds see its memo tables warm (the "memo cleared" row is the cold cost)."""

    requests: dict[str, int]  # engine -> requests (0 = skipped)
    rounds: dict[str, int]


def plans(quick: bool) -> dict[str, Plan]:
    """Requests per engine and size: the others scan every rule, so they get subsets."""
    if quick:
        return {
            "10": Plan({"ours": REQUESTS, "cedarpy": 2_000, "casbin": 1_000}, {"ours": 2}),
            "1k": Plan({"ours": REQUESTS, "cedarpy": 500, "casbin": 100}, {"ours": 2}),
            "100k": Plan({"ours": 2_000, "cedarpy": 0, "casbin": 0}, {"ours": 2}),
        }
    return {
        "10": Plan({"ours": REQUESTS, "cedarpy": REQUESTS, "casbin": REQUESTS}, {"ours": 5}),
        "1k": Plan({"ours": REQUESTS, "cedarpy": REQUESTS, "casbin": 1_000}, {"ours": 5}),
        "100k": Plan({"ours": REQUESTS, "cedarpy": 50, "casbin": 10}, {"ours": 3}),
    }


# ---- measurement, in a child process ----


@dataclass(slots=True)
class Result:
    engine: str
    size: str
    compile_s: float = 0.0
    compile_cpu_s: float = 0.0  # process CPU time: steadier than wall time on a busy machine
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
    """Per-decision samples in ns (one per batch of calls) and the answers, in order.

    With one round the answers come from the timed round itself (the slow
    engines are not run twice); with more, from an untimed first pass, so
    that every timed round sees the same warm state."""
    clock = time.perf_counter_ns
    for item in items[: min(200, max(1, len(items) // 10))]:  # warm the interpreter
        call(item)
    answers = [call(item) for item in items] if rounds > 1 else []
    samples: list[float] = []
    for _ in range(rounds):
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            t0 = clock()
            if rounds == 1:
                answers.extend([call(item) for item in chunk])
            else:
                for item in chunk:
                    call(item)
            samples.append((clock() - t0) / len(chunk))
    return samples, answers


# Each engine: load(written) -> state (what is timed as compile), and
# prepare(state, requests) -> (call, items) where call(item) -> allowed.
Prepared = tuple[Callable[[Any], bool], list[Any]]


def _ours_load(written: Written) -> Any:
    from pdp.loader import load_policy_dir

    return load_policy_dir(written.ours)


def _ours_prepare(policy: Any, reqs: list[Req]) -> Prepared:
    from pdp.engine import decide
    from pdp.model import EMPTY, Request

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

    return call, items


def _cedar_load(written: Written) -> Any:
    import cedarpy

    policies = cedarpy.PolicySet.from_str(written.cedar_policies.read_text())
    entities = cedarpy.Entities.from_json_str(written.cedar_entities.read_text())
    return policies, entities


def _cedar_prepare(state: Any, reqs: list[Req]) -> Prepared:
    import cedarpy

    policies, entities = state
    is_authorized = cedarpy.is_authorized

    def call(request: Any) -> bool:
        return bool(is_authorized(request, policies, entities).allowed)

    return call, [cedar_request(r) for r in reqs]


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


def _casbin_load(written: Written) -> Any:
    import casbin

    enforcer = casbin.Enforcer(str(written.casbin_model), str(written.casbin_policy))
    enforcer.add_function("objMatch", _obj_match)
    return enforcer


def _casbin_prepare(enforcer: Any, reqs: list[Req]) -> Prepared:
    enforce = enforcer.enforce

    def call(args: Any) -> bool:
        return bool(enforce(*args))

    return call, [casbin_request(r) for r in reqs]


ENGINE_NOTES = {
    "cedarpy": ("memory includes the entity store (roles, subjects, resources)",),
    "casbin": ("one p line per action; custom objMatch for `**`",),
}

LOADERS = {
    "ours": (_ours_load, _ours_prepare),
    "cedarpy": (_cedar_load, _cedar_prepare),
    "casbin": (_casbin_load, _casbin_prepare),
}


def clear_memos(policy: Any) -> None:
    """Empty the compiled policy's memo tables (fields named *_memo), for a cold decision."""
    for f in dataclasses.fields(policy):
        memo = getattr(policy, f.name)
        if f.name.endswith("_memo") and isinstance(memo, dict):
            memo.clear()


def time_cold(policy: Any, call: Callable[[Any], bool], items: Sequence[Any]) -> list[float]:
    """Per-call ns with the memo tables emptied before each call (timer overhead removed)."""
    clock = time.perf_counter_ns
    overhead = statistics.median(-clock() + clock() for _ in range(1000))
    samples = []
    for item in items:
        clear_memos(policy)
        t0 = clock()
        call(item)
        samples.append(clock() - t0 - overhead)
    return samples


def _ours_cold_row(policy: Any, call: Callable[[Any], bool], items: list[Any], size: str) -> Result:
    cold = Result("ours, memo cleared", size, answered=len(items))
    cold.notes.append("per call, memo tables emptied before each")
    _fill(cold, time_cold(policy, call, items))
    return cold


CEDAR_BATCH = 100


def _cedar_batch_row(state: Any, call: Callable[[Any], bool], items: list[Any], size: str) -> Result:
    """is_authorized_batch: amortizes the crossing into Rust over CEDAR_BATCH requests."""
    import cedarpy

    policies, entities = state
    row = Result(f"cedarpy, batch of {CEDAR_BATCH}", size, answered=len(items))
    row.notes.append("is_authorized_batch; per-decision = batch time / batch size")
    clock = time.perf_counter_ns
    samples = []
    for start in range(0, len(items), CEDAR_BATCH):
        chunk = items[start : start + CEDAR_BATCH]
        t0 = clock()
        cedarpy.is_authorized_batch(chunk, policies, entities)
        samples.append((clock() - t0) / len(chunk))
    _fill(row, samples)
    return row


EXTRA_ROWS: dict[str, Callable[[Any, Callable[[Any], bool], list[Any], str], Result]] = {
    "ours": _ours_cold_row,
    "cedarpy": _cedar_batch_row,
}


def _fill(result: Result, samples: list[float]) -> None:
    result.median_us = statistics.median(samples) / 1000
    # A p99 of fewer than 100 samples would be made up; NaN prints as "n/a".
    enough = len(samples) >= 100
    result.p99_us = statistics.quantiles(samples, n=100)[98] / 1000 if enough else math.nan
    result.mean_us = statistics.fmean(samples) / 1000


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
) -> list[Result]:
    """Runs in a fresh process: load, then time `count` requests."""
    _pin_one_cpu()
    result = Result(engine, size)
    reqs = load_requests(written.requests)[:count]
    load, prepare = LOADERS[engine]
    gc.collect()
    rss0 = _rss_bytes()
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        state = load(written)
    except Exception as err:  # a missing or broken engine is a row, not a crash
        result.error = f"{type(err).__name__}: {err}"[:300]
        return [result]
    result.compile_s = time.perf_counter() - t0
    result.compile_cpu_s = time.process_time() - c0
    gc.collect()
    result.rss_mib = (_rss_bytes() - rss0) / 2**20
    call, items = prepare(state, reqs)
    gc.freeze()  # the loaded policy is long-lived: keep it out of the collector's scans
    samples, answers = time_calls(call, items, rounds, batch)
    _fill(result, samples)
    result.answered = len(answers)
    result.decisions = "".join("1" if a else "0" for a in answers)
    result.notes.extend(ENGINE_NOTES.get(engine, ()))
    results = [result]
    extra = EXTRA_ROWS.get(engine)
    if extra is not None:
        results.append(extra(state, call, items, size))
    del state
    if trace and engine == "ours":
        gc.unfreeze()
        result.notes.append(_tracemalloc_note(written))
    return results


def measure_in_child(*args: Any) -> list[Result]:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(measure, *args).result()


# ---- the suite ----


def mismatches(a: Result, b: Result) -> tuple[int, int]:
    """(requests both answered, requests on which they disagree)."""
    n = min(len(a.decisions), len(b.decisions))
    return n, sum(1 for x, y in zip(a.decisions[:n], b.decisions[:n], strict=True) if x != y)


def mismatch_line(size: str, results: list[Result]) -> str:
    answered = [r for r in results if r.decisions]
    pairs = []
    for i, a in enumerate(answered):
        for b in answered[i + 1 :]:
            n, bad = mismatches(a, b)
            pairs.append(f"{a.engine} vs {b.engine} **{bad}** of {n:,}")
    return f"- {size}: decisions that differ: {'; '.join(pairs)}."


def _fmt(x: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(x) else f"{x:,.{digits}f}"


def _row(r: Result, rules: int, ours: Result | None) -> str:
    if r.error:
        return f"| {r.size} | {r.engine} | {rules:,} | | | | | | | | {r.error} |"
    if not r.answered:
        return f"| {r.size} | {r.engine} | {rules:,} | | | | | | | | {'; '.join(r.notes)} |"
    ratio = ""
    if ours and ours.answered and not ours.error and r is not ours:
        x = r.median_us / ours.median_us
        ratio = f"{x:,.1f}x" if x < 10 else f"{x:,.0f}x"
    notes = list(r.notes)
    if r.answered < REQUESTS:
        notes.append(f"subset: first {r.answered:,} requests")
    loaded = f"{r.compile_s:.2f} ({r.compile_cpu_s:.2f}) | {r.rss_mib:,.0f}" if r.compile_s else " | "
    return (
        f"| {r.size} | {r.engine} | {rules:,} | {loaded} "
        f"| {_fmt(r.median_us, 2)} | {_fmt(r.p99_us, 2)} | {_fmt(r.mean_us, 2)} "
        f"| {r.answered:,} | {ratio} | {'; '.join(notes)} |"
    )


HEADER = [
    "| size | engine | rules | compile s (CPU s) | RSS Δ MiB | median µs | p99 µs | mean µs "
    "| requests | x ours | notes |",
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
            note = "not run at this size with --quick (it scans every rule)"
            results.append(Result(engine, size.name, notes=[note]))
            continue
        rounds = plan.rounds.get(engine, 1)
        # The others take 30 µs or more a call: timer overhead is nothing to them.
        batch = args.batch if engine == "ours" else 1
        trace = args.tracemalloc == "all" or (args.tracemalloc == "small" and size.rules < 100_000)
        rows = measure_in_child(engine, size.name, written, count, rounds, batch, trace)
        for res in rows:
            print(f"[engine] {size.name} {res.engine}: "
                  + (res.error or f"compile {res.compile_s:.2f} s, median {res.median_us:.2f} µs"),
                  flush=True)
        results.extend(rows)
    return results


def _verdict(ok: bool) -> str:
    return "ok" if ok else "**MISSED**"


def _target_line(size: str, ours: Result, base: Result | None) -> str:
    text = (f"- {size}: ours median {ours.median_us:.2f} µs "
            f"(target ≤ {TARGET_US:g} µs: {_verdict(ours.median_us <= TARGET_US)})")
    if base is not None and base is not ours:
        ratio = ours.median_us / base.median_us
        text += (f"; {ratio:.2f}x the {base.size}-rule set "
                 f"(target ≤ {TARGET_RATIO:g}x: {_verdict(ratio <= TARGET_RATIO)})")
    text += f"; compile {ours.compile_s:.2f} s wall, {ours.compile_cpu_s:.2f} s CPU"
    if size == SIZES[-1].name:
        text += f" (target < {TARGET_COMPILE_S:g} s: {_verdict(ours.compile_s < TARGET_COMPILE_S)})"
    return text


def summary_lines(all_results: dict[str, list[Result]]) -> list[str]:
    lines = []
    first = all_results.get(SIZES[0].name, [])
    base = next((r for r in first if r.engine == "ours" and r.answered), None)
    for size, results in all_results.items():
        answered = [r for r in results if r.decisions]
        if answered:
            allow = answered[0].decisions.count("1") / len(answered[0].decisions)
            lines.append(f"- {size}: {allow:.0%} of the requests are ALLOW.")
        if len(answered) > 1:
            lines.append(mismatch_line(size, results))
        ours = next((r for r in results if r.engine == "ours" and r.answered), None)
        if ours is not None:
            lines.append(_target_line(size, ours, base))
    return lines


def run(args: argparse.Namespace) -> list[str]:
    """The suite entry point for `python -m benchmarks`."""
    args.engines = getattr(args, "engines", None) or ENGINES
    args.batch = getattr(args, "batch", None) or 10
    if getattr(args, "tracemalloc", None) is None:
        args.tracemalloc = "none" if args.quick else "small"
    chosen = getattr(args, "sizes", None)
    sizes = [s for s in SIZES if not chosen or s.name in chosen]
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
    lines += ["", *summary_lines(all_results), "", SCENARIO, ""]
    lines.append(f"Per-decision samples: our engine in batches of {args.batch} calls, the others "
                 "call by call, timed with perf_counter_ns; one CPU, a fresh process per engine "
                 "and size; RSS Δ is the growth over the load. "
                 f"Machine: {os.cpu_count()} CPUs, {platform_line()}. "
                 f"Command: `{' '.join(['python -m benchmarks', *sys.argv[1:]])}`.")
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
    group.add_argument("--tracemalloc", choices=("none", "small", "all"),
                       help="also load our policy under tracemalloc: at no size, below 100k "
                       "(default), or at every size (slow: a second 100k compile, traced)")
    group.add_argument("--batch", type=int, default=10,
                       help="consecutive calls per timing sample (default 10)")
