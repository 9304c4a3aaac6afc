"""gRPC benchmark: Check and BatchCheck against the transport floor and against Cerbos.

Everything on 127.0.0.1, one Python gRPC client (this process):

- the PDP is `python -m benchmarks.floor_server` (the real server, one worker,
  plus the empty RPC `/pdp.bench.Floor/Empty`: the transport floor on the same
  server, thread pool and options), serving benchmarks/grpc_scenario/pdp/;
  with the defaults (level-1 decision cache on: the 1,000 requests hit it
  after their first pass), with `--cache-size 0` (every Check decided) and
  with `--server-threads 16` (the old default, against 4 now: more GIL contention);
- Cerbos (the Go PDP; its Linux binary from the npm package
  `@cerbos/cerbos-linux-x64`, installed into benchmarks/.cerbos on first use),
  disk storage, audit and telemetry off, with benchmarks/grpc_scenario/cerbos/
  (the same rules), called on `cerbos.svc.v1.CerbosService/CheckResources`
  with one resource and one action per call (generated code from the `cerbos`
  package of the bench extra);
- `pdp serve --workers 1` and `--workers 2`, loaded from 4 connections.

Before timing, every scenario request goes through both PDPs and the
decisions must match. Requests are serialized once beforehand and responses
not parsed while timing, so the client spends its CPU on gRPC alone (the
machine's other core). "64 in flight": grpc.aio, one channel, 64 tasks each
sending its next call when the last one answered; "sequential": the blocking
stub, one call at a time (its median is the latency). The floor, Check,
BatchCheck and Cerbos (running beside the default server) are measured in
alternating rounds, so a slow spell of this shared machine hits them alike;
each row is the median round, and "vs floor" the median over rounds of each
round's rate / the floor's. "half load": calls started on a fixed schedule at
half the measured 64-in-flight rate, latency counted from the scheduled start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import empty_pb2, struct_pb2

from benchmarks.floor_server import FLOOR_METHOD
from pdp.client import make_request
from pdp.v1 import decision_pb2

NAME = "grpc"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCENARIO = HERE / "grpc_scenario"
CERBOS_PACKAGE = "@cerbos/cerbos-linux-x64@0.55.0"
CERBOS_DIR = HERE / ".cerbos"
CERBOS_BIN = CERBOS_DIR / "node_modules" / "@cerbos" / "cerbos-linux-x64" / "cerbos-linux-x64"
CHECK = "/pdp.v1.DecisionService/Check"
BATCH_CHECK = "/pdp.v1.DecisionService/BatchCheck"
CERBOS_CHECK = "/cerbos.svc.v1.CerbosService/CheckResources"
IN_FLIGHT = 64
THREADS16 = "cache on, --server-threads 16"
BATCH = 100
CASES = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("grpc")
    group.add_argument("--grpc-seconds", type=float, default=None,
                       help="seconds per measurement (default 1; 0.5 with --quick)")
    group.add_argument("--grpc-rounds", type=int, default=None,
                       help="alternating floor/Check rounds per server (default 9; 3 with --quick)")
    group.add_argument("--grpc-no-cerbos", action="store_true",
                       help="skip Cerbos (no npm, or not linux x86_64)")


# ---- the scenario: the same requests for both PDPs ----

PEOPLE = (  # id, roles brought with the request, department
    ("alice", ("customer",), "none"),
    ("bob", ("customer", "support"), "support"),
    ("carol", ("customer", "finance"), "finance"),
    ("dave", ("support",), "sales"),
    ("erin", ("finance",), "sales"),
)
ACTIONS = ("orders.create", "orders.read", "orders.cancel", "orders.refund", "orders.delete")


@dataclass(frozen=True, slots=True)
class Case:
    subject: str
    roles: tuple[str, ...]
    department: str
    action: str
    order: str
    owner: str
    status: str
    amount: int


def cases(count: int) -> list[Case]:
    rng = random.Random(7)
    names = [p[0] for p in PEOPLE]
    out = []
    for n in range(count):
        subject, roles, department = rng.choice(PEOPLE)
        out.append(Case(subject, roles, department, rng.choice(ACTIONS), f"o-{n}", rng.choice(names),
                        rng.choice(("pending", "paid", "shipped")), rng.choice((50, 300, 800))))
    return out


def pdp_request(case: Case) -> decision_pb2.CheckRequest:
    return make_request(
        f"user:{case.subject}", case.action, f"order:{case.order}", roles=case.roles,
        subject_properties={"department": case.department},
        resource_properties={"owner": case.owner, "status": case.status, "amount": case.amount},
    )


def _cerbos_modules() -> tuple[Any, Any]:
    from cerbos.engine.v1 import engine_pb2
    from cerbos.request.v1 import request_pb2

    return engine_pb2, request_pb2


def cerbos_request(cases_: Sequence[Case]) -> Any:
    """One CheckResources call: the first case's principal, one entry per case."""
    engine, request = _cerbos_modules()
    first = cases_[0]
    principal = engine.Principal(id=first.subject, roles=list(first.roles),
                                 attr={"department": struct_pb2.Value(string_value=first.department)})
    entries = [
        request.CheckResourcesRequest.ResourceEntry(actions=[c.action], resource=engine.Resource(
            kind="order", id=c.order, attr={
                "owner": struct_pb2.Value(string_value=c.owner),
                "status": struct_pb2.Value(string_value=c.status),
                "amount": struct_pb2.Value(number_value=c.amount),
            }))
        for c in cases_
    ]
    return request.CheckResourcesRequest(request_id="bench", principal=principal, resources=entries)


def _cerbos_allowed(reply: Any) -> list[bool]:
    from cerbos.effect.v1 import effect_pb2

    return [v == effect_pb2.EFFECT_ALLOW for r in reply.results for v in r.actions.values()]


# ---- processes ----


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_answering(address: str, method: str, request: bytes, proc: subprocess.Popen[bytes],
                    channels: int = 1, timeout: float = 60) -> None:
    """Until `channels` separate connections each got an answer (every worker is up)."""
    deadline = time.monotonic() + timeout
    answered = 0
    while answered < channels:
        if proc.poll() is not None:
            raise RuntimeError(f"the server for {address} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{address} did not answer {method}")
        with grpc.insecure_channel(address, [("grpc.use_local_subchannel_pool", 1)]) as channel:
            try:
                channel.unary_unary(method)(request, timeout=1, wait_for_ready=True)
                answered += 1
                continue
            except grpc.RpcError:
                pass
        time.sleep(0.1)


@contextlib.contextmanager
def _process(args: list[str], log: Path, address: str, probe: tuple[str, bytes],
             channels: int = 1) -> Iterator[str]:
    with log.open("ab") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        try:
            _wait_answering(address, *probe, proc=proc, channels=channels)
        except RuntimeError as exc:
            tail = log.read_text(errors="replace").splitlines()[-5:]
            raise RuntimeError("\n".join([str(exc), *tail])) from None
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pdp_server(workdir: Path, flags: Sequence[str], probe: bytes) -> contextlib.AbstractContextManager[str]:
    """The real server plus the empty RPC, one worker."""
    address = f"127.0.0.1:{_free_port()}"
    args = [sys.executable, "-m", "benchmarks.floor_server", "--policies", str(SCENARIO / "pdp"),
            "--listen", address, "--policy-watch", "false", "--log-level", "warning", *flags]
    return _process(args, workdir / "pdp.log", address, (CHECK, probe))


def pdp_workers(workdir: Path, workers: int, probe: bytes) -> contextlib.AbstractContextManager[str]:
    address = f"127.0.0.1:{_free_port()}"
    args = [sys.executable, "-m", "pdp", "serve", "--policies", str(SCENARIO / "pdp"), "--listen", address,
            "--workers", str(workers), "--policy-watch", "false", "--log-level", "warning"]
    return _process(args, workdir / "pdp-workers.log", address, (CHECK, probe), channels=4 * workers)


def cerbos_binary() -> Path:
    """The Cerbos binary, installed from npm on first use."""
    if not CERBOS_BIN.exists():
        npm = shutil.which("npm") or "npm"
        subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(CERBOS_DIR),
                        CERBOS_PACKAGE], check=True, stdout=subprocess.DEVNULL)
    return CERBOS_BIN


CERBOS_CONFIG = """\
server:
  grpcListenAddr: "{grpc}"
  httpListenAddr: "127.0.0.1:{http}"
  requestLimits:
    maxResourcesPerRequest: 100
storage:
  driver: disk
  disk:
    directory: "{policies}"
    watchForChanges: false
audit:
  enabled: false
telemetry:
  disabled: true
"""


def cerbos_server(workdir: Path, probe: bytes) -> contextlib.AbstractContextManager[str]:
    address = f"127.0.0.1:{_free_port()}"
    config = workdir / "cerbos.yaml"
    config.write_text(CERBOS_CONFIG.format(grpc=address, http=_free_port(),
                                           policies=SCENARIO / "cerbos"))
    args = [str(cerbos_binary()), "server", f"--config={config}", "--log-level=error"]
    return _process(args, workdir / "cerbos.log", address, (CERBOS_CHECK, probe))


# ---- load ----


@dataclass(frozen=True, slots=True)
class Load:
    calls: int
    seconds: float
    latencies_us: list[float]
    errors: int

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def percentile(self, p: float) -> float:
        s = sorted(self.latencies_us)
        return s[min(len(s) - 1, int(len(s) * p))] if s else float("nan")


def median_load(loads: Sequence[Load]) -> Load:
    """The round with the median rate (latencies from that same round)."""
    return sorted(loads, key=lambda x: x.rate)[len(loads) // 2]


async def _closed(address: str, method: str, bodies: Sequence[bytes], in_flight: int,
                  seconds: float, channels: int) -> Load:
    chans = [grpc.aio.insecure_channel(address, [("grpc.use_local_subchannel_pool", 1)])
             for _ in range(channels)]
    calls = [c.unary_unary(method) for c in chans]
    for call in calls:
        await call(bodies[0], timeout=10)
    latencies: list[float] = []
    errors = 0
    clock = time.perf_counter_ns
    stop = clock() + int(seconds * 1e9)

    async def worker(k: int) -> None:
        nonlocal errors
        call, i, add = calls[k % len(calls)], k, latencies.append
        while (t0 := clock()) < stop:
            try:
                await call(bodies[i % len(bodies)], timeout=10)
            except grpc.aio.AioRpcError:
                errors += 1
            add((clock() - t0) / 1000)
            i += in_flight

    start = clock()
    await asyncio.gather(*(worker(k) for k in range(in_flight)))
    took = (clock() - start) / 1e9
    for c in chans:
        await c.close()
    return Load(len(latencies) - errors, took, latencies, errors)


def closed_loop(address: str, method: str, bodies: Sequence[bytes], seconds: float,
                in_flight: int = IN_FLIGHT, channels: int = 1) -> Load:
    return asyncio.run(_closed(address, method, bodies, in_flight, seconds, channels))


def sequential(address: str, method: str, bodies: Sequence[bytes], seconds: float) -> Load:
    with grpc.insecure_channel(address, [("grpc.use_local_subchannel_pool", 1)]) as channel:
        call = channel.unary_unary(method)
        call(bodies[0], timeout=10)
        latencies: list[float] = []
        errors, i, clock = 0, 0, time.perf_counter_ns
        start = clock()
        stop = start + int(seconds * 1e9)
        while (t0 := clock()) < stop:
            try:
                call(bodies[i % len(bodies)], timeout=10)
            except grpc.RpcError:
                errors += 1
            latencies.append((clock() - t0) / 1000)
            i += 1
        return Load(len(latencies) - errors, (clock() - start) / 1e9, latencies, errors)


async def _open(address: str, method: str, bodies: Sequence[bytes], rate: float, seconds: float) -> Load:
    async with grpc.aio.insecure_channel(address, [("grpc.use_local_subchannel_pool", 1)]) as channel:
        call = channel.unary_unary(method)
        await call(bodies[0], timeout=10)
        latencies: list[float] = []
        errors = 0

        async def one(body: bytes, due: float) -> None:
            nonlocal errors
            try:
                await call(body, timeout=10)
            except grpc.aio.AioRpcError:
                errors += 1
            latencies.append((time.perf_counter() - due) * 1e6)

        count = max(1, int(rate * seconds))
        start = time.perf_counter() + 0.01
        tasks = []
        for i in range(count):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(bodies[i % len(bodies)], due)))
        await asyncio.gather(*tasks)
        return Load(count - errors, time.perf_counter() - start, latencies, errors)


def fixed_rate(address: str, method: str, bodies: Sequence[bytes], rate: float, seconds: float) -> Load:
    return asyncio.run(_open(address, method, bodies, rate, seconds))


# ---- decisions must agree ----


def pdp_decisions(address: str, scenario: Sequence[Case]) -> list[bool]:
    with grpc.insecure_channel(address) as channel:
        batch = channel.unary_unary(BATCH_CHECK, decision_pb2.BatchCheckRequest.SerializeToString,
                                    decision_pb2.BatchCheckResponse.FromString)
        out: list[bool] = []
        for i in range(0, len(scenario), BATCH):
            part = [pdp_request(c) for c in scenario[i:i + BATCH]]
            reply = batch(decision_pb2.BatchCheckRequest(requests=part), timeout=30)
            out.extend(r.allowed for r in reply.responses)
        return out


def cerbos_decisions(address: str, scenario: Sequence[Case]) -> list[bool]:
    from cerbos.response.v1 import response_pb2

    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary(CERBOS_CHECK, lambda m: m.SerializeToString(),
                                    response_pb2.CheckResourcesResponse.FromString)
        return [a for c in scenario for a in _cerbos_allowed(check(cerbos_request([c]), timeout=10))]


def compare(ours: Sequence[bool], theirs: Sequence[bool], scenario: Sequence[Case]) -> str:
    wrong = [c for c, a, b in zip(scenario, ours, theirs, strict=True) if a != b]
    if wrong:
        raise RuntimeError(f"{len(wrong)} decisions differ between the PDPs, e.g. {wrong[0]}")
    return (f"Both PDPs gave the same decision for all {len(scenario)} scenario requests "
            f"({sum(ours)} ALLOW, {len(ours) - sum(ours)} DENY).")


# ---- the suite ----


@dataclass(slots=True)
class Row:
    label: str
    mode: str
    load: Load
    units: int = 1
    vs_floor: float | None = None  # throughput / the floor's, paired by round

    def line(self) -> str:
        rate = self.load.rate
        decisions = f"{rate * self.units:,.0f}" if self.units else ""
        vs = f"{100 * self.vs_floor:.0f}%" if self.vs_floor else ""
        return (f"| {self.label} | {self.mode} | {rate:,.0f} | {decisions} | "
                f"{statistics.median(self.load.latencies_us):,.0f} | {self.load.percentile(0.99):,.0f} | "
                f"{self.load.errors} | {vs} |")


def _rounds(rounds: int, measures: Sequence[Callable[[], Load]]) -> list[list[Load]]:
    """Each measure once per round, alternating, so that a slow spell of the machine
    hits them alike; per measure, its loads in round order."""
    results: list[list[Load]] = [[] for _ in measures]
    for _ in range(rounds):
        for i, measure in enumerate(measures):
            results[i].append(measure())
    return results


def paired(target: Sequence[Load], floor: Sequence[Load]) -> float:
    """The median over rounds of target/floor throughput, each pair from one round."""
    return statistics.median(t.rate / f.rate for t, f in zip(target, floor, strict=True))


@dataclass(frozen=True, slots=True)
class Bodies:
    """The scenario's calls, serialized once."""

    check: list[bytes]  # one CheckRequest per case
    batch: list[bytes]  # BatchCheckRequests of BATCH cases
    cerbos: list[bytes]  # one CheckResources per case, one resource
    cerbos_batch: list[bytes]  # CheckResources of BATCH resources, one principal

    @staticmethod
    def of(scenario: Sequence[Case], with_cerbos: bool) -> Bodies:
        check = [pdp_request(c).SerializeToString() for c in scenario]
        batch = [decision_pb2.BatchCheckRequest(requests=[pdp_request(c) for c in scenario[i:i + BATCH]])
                 .SerializeToString() for i in range(0, len(scenario), BATCH)]
        if not with_cerbos:
            return Bodies(check, batch, [], [])
        same = [c for c in scenario if c.subject == scenario[0].subject] * 2
        return Bodies(check, batch, [cerbos_request([c]).SerializeToString() for c in scenario],
                      [cerbos_request(same[i:i + BATCH]).SerializeToString()
                       for i in range(0, len(same) // 2, BATCH)])


EMPTY_BODY = [empty_pb2.Empty().SerializeToString()]


def head_to_head(pdp: str, cerbos: str | None, label: str, bodies: Bodies, seconds: float,
                 rounds: int) -> tuple[list[Row], list[str]]:
    """Floor, Check, BatchCheck (and Cerbos) in alternating rounds; then each at half its peak."""
    measures: dict[str, Callable[[], Load]] = {
        "floor64": lambda: closed_loop(pdp, FLOOR_METHOD, EMPTY_BODY, seconds),
        "check64": lambda: closed_loop(pdp, CHECK, bodies.check, seconds),
        "floor1": lambda: sequential(pdp, FLOOR_METHOD, EMPTY_BODY, seconds),
        "check1": lambda: sequential(pdp, CHECK, bodies.check, seconds),
        "batch": lambda: closed_loop(pdp, BATCH_CHECK, bodies.batch, seconds, in_flight=4),
    }
    if cerbos is not None:
        measures |= {
            "cerbos64": lambda: closed_loop(cerbos, CERBOS_CHECK, bodies.cerbos, seconds),
            "cerbos1": lambda: sequential(cerbos, CERBOS_CHECK, bodies.cerbos, seconds),
            "cerbos_batch": lambda: closed_loop(cerbos, CERBOS_CHECK, bodies.cerbos_batch, seconds,
                                                in_flight=4),
        }
    runs = dict(zip(measures, _rounds(rounds, list(measures.values())), strict=True))
    m = {name: median_load(loads) for name, loads in runs.items()}
    floor_name, check_name = f"floor: empty RPC, {label} server", f"Check, {label}"
    rows = [
        Row(floor_name, "64 in flight", m["floor64"], units=0),
        Row(check_name, "64 in flight", m["check64"], vs_floor=paired(runs["check64"], runs["floor64"])),
        Row(floor_name, "sequential", m["floor1"], units=0),
        Row(check_name, "sequential", m["check1"], vs_floor=paired(runs["check1"], runs["floor1"])),
        Row(f"BatchCheck x{BATCH}, {label}", "4 in flight", m["batch"], units=BATCH),
    ]
    verdicts = []
    if cerbos is not None:
        rows += [
            Row("Cerbos CheckResources, 1 resource", "64 in flight", m["cerbos64"],
                vs_floor=paired(runs["cerbos64"], runs["floor64"])),
            Row("Cerbos CheckResources, 1 resource", "sequential", m["cerbos1"],
                vs_floor=paired(runs["cerbos1"], runs["floor1"])),
            Row(f"Cerbos CheckResources, {BATCH} resources (1 principal)", "4 in flight",
                m["cerbos_batch"], units=BATCH),
        ]
        verdicts.append(f"Check / Cerbos throughput at 64 in flight, paired by round: "
                        f"{paired(runs['check64'], runs['cerbos64']):.2f}x.")
    half, offered = m["check64"].rate / 2, f"{m['check64'].rate / 2:,.0f}/s offered"
    rows += [
        Row(floor_name, offered, fixed_rate(pdp, FLOOR_METHOD, EMPTY_BODY, half, 2 * seconds), units=0),
        Row(check_name, offered, fixed_rate(pdp, CHECK, bodies.check, half, 2 * seconds)),
    ]
    if cerbos is not None:
        chalf = m["cerbos64"].rate / 2
        rows.append(Row("Cerbos CheckResources, 1 resource", f"{chalf:,.0f}/s offered",
                        fixed_rate(cerbos, CERBOS_CHECK, bodies.cerbos, chalf, 2 * seconds)))
    return rows, verdicts


def run(args: argparse.Namespace) -> list[str]:
    seconds = args.grpc_seconds or (0.5 if args.quick else 1.0)
    rounds = args.grpc_rounds or (3 if args.quick else 9)
    notes: list[str] = []
    with_cerbos = not args.grpc_no_cerbos and _cerbos_runs_here(notes)
    scenario = cases(CASES)
    bodies = Bodies.of(scenario, with_cerbos)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-grpc-") as tmp:
        workdir = Path(tmp)
        with pdp_server(workdir, [], bodies.check[0]) as pdp, contextlib.ExitStack() as stack:
            cerbos = stack.enter_context(cerbos_server(workdir, bodies.cerbos[0])) if with_cerbos else None
            ours = pdp_decisions(pdp, scenario)
            if cerbos is not None:
                notes.append(compare(ours, cerbos_decisions(cerbos, scenario), scenario))
            got, verdicts = head_to_head(pdp, cerbos, "cache on", bodies, seconds, rounds)
            rows += got
            notes += verdicts
        with pdp_server(workdir, ["--cache-size", "0"], bodies.check[0]) as pdp:
            rows += head_to_head(pdp, None, "cache off", bodies, seconds, rounds)[0]
        # More request threads contend more for the GIL (why the default is 4: see the README).
        with pdp_server(workdir, ["--server-threads", "16"], bodies.check[0]) as pdp:
            rows += head_to_head(pdp, None, THREADS16, bodies, seconds, rounds)[0]
        try:
            rows += worker_rows(workdir, bodies.check, seconds)
        except RuntimeError as exc:  # keep the rows measured so far
            notes.append(f"FAILED: the `--workers` rows: {exc}")
    return _report(rows, notes, seconds, rounds)


def _cerbos_runs_here(notes: list[str]) -> bool:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        notes.append("Cerbos rows skipped: its npm binary is for linux x86_64.")
        return False
    if not CERBOS_BIN.exists() and shutil.which("npm") is None:
        notes.append("Cerbos rows skipped: npm is needed to install it (`@cerbos/cerbos-linux-x64`).")
        return False
    return True


def worker_rows(workdir: Path, check: Sequence[bytes], seconds: float) -> list[Row]:
    rows = []
    for workers in (1, 2):
        with pdp_workers(workdir, workers, check[0]) as address:
            load = closed_loop(address, CHECK, check, seconds, channels=4)
        rows.append(Row(f"Check, `pdp serve --workers {workers}`", "64 in flight, 4 conns", load))
    return rows


def _report(rows: Sequence[Row], notes: Sequence[str], seconds: float, rounds: int) -> list[str]:
    lines = [
        "## gRPC: Check and BatchCheck against the transport floor and Cerbos",
        "",
        f"One Python gRPC client on loopback; {seconds:g} s per measurement, floor, Check and "
        f"BatchCheck alternating over {rounds} rounds (the median round shown; \"vs floor\" is the "
        f"median of the rounds' ratios); {os.cpu_count()} cores.",
        "",
        "| target | load | calls/s | decisions/s | p50 µs | p99 µs | errors | vs floor |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(row.line() for row in rows),
        "",
        *_verdicts(rows),
        *(f"- {n}" for n in notes),
    ]
    return lines


def _find(rows: Sequence[Row], label: str, mode: str) -> Row | None:
    return next((r for r in rows if r.label.startswith(label) and r.mode.startswith(mode)), None)


def _verdicts(rows: Sequence[Row]) -> list[str]:
    out = []
    check = _find(rows, "Check, cache on", "64 in flight")
    for row in (check, _find(rows, f"Check, {THREADS16}", "64 in flight")):
        if row and row.vs_floor:
            out.append(f"- {row.label}: throughput {100 * row.vs_floor:.0f}% of the floor "
                       f"(target >= 90%): {'met' if row.vs_floor >= 0.9 else 'MISSED'}.")
    seq, cseq = _find(rows, "Check, cache on", "sequential"), _find(rows, "Cerbos CheckResources, 1", "seq")
    if seq and cseq:
        a, b = statistics.median(seq.load.latencies_us), statistics.median(cseq.load.latencies_us)
        out.append(f"- Sequential median: Check {a:,.0f} µs vs Cerbos {b:,.0f} µs "
                   f"(target below Cerbos): {'met' if a < b else 'MISSED'}.")
    batch = _find(rows, "BatchCheck x100, cache off", "")
    if batch:
        rate = batch.load.rate * batch.units
        out.append(f"- BatchCheck x{BATCH}, every entry decided: {rate:,.0f} decisions/s "
                   f"(target >= 50,000): {'met' if rate >= 50_000 else 'MISSED'}.")
    w1, w2 = (_find(rows, f"Check, `pdp serve --workers {n}", "") for n in (1, 2))
    if w1 and w2:
        out.append(f"- `--workers 2` vs `--workers 1`: {w2.load.rate / w1.load.rate:.2f}x.")
    return out
