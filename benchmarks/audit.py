"""Audit benchmark: Check throughput with audit off, to a file, to Redis, and to both.

Two views of the same cost:

- gRPC: each round starts a fresh `pdp serve` (one worker) per mode and
  measures them in turn with an asyncio client in this process keeping 32
  Check calls in flight (requests serialized beforehand, responses not
  parsed). "lost to auditing" is the median over rounds of each round's
  rate against that round's `off` rate. This is the number the target is
  about (< 10% lost to auditing). "off, again" is a second server without
  audit: its row is the noise of the measurement. Server CPU per Check
  comes from /proc, and so does the audit writer process's (a child of the
  server, on the other core when there is one).
- in process: `DecisionService.check` in a loop on one thread, the queue
  set to block when full (so nothing is dropped), with the thread writer
  (`writer = "thread"`). A worst case: the decision alone costs a few
  microseconds, so the writer's work (record, JSON, sink) shows whole; "µs
  added per Check" is that cost per record. `pdp serve` does that work in
  its audit writer process, off the server's GIL.

Every mode records every decision (no sampling); each table shows the
records written and dropped (over gRPC from the server's PolicyInfo), so a
mode cannot look fast by dropping. Redis is a real redis-server started for
the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from benchmarks.support import free_port, redis_server
from pdp.audit import AuditLog, AuditSettings
from pdp.loader import load_policy_dir
from pdp.model import Request
from pdp.service import CallMeta, DecisionService, PolicyHolder
from pdp.v1 import admin_pb2, admin_pb2_grpc, decision_pb2, decision_pb2_grpc

NAME = "audit"
POLICY = """\
role viewer {
    allow read, list on document:** reason "viewers read documents" as viewer-read
}
role editor inherits viewer {
    allow write on document:drafts/** when resource.owner == subject.id as own-drafts
}
grant viewer to user:*
grant editor to user:alice
"""
# "off, again": a second server without audit, measured like the others: the
# difference between the two "off" rows is this machine's noise, not auditing.
MODES = ("off", "off, again", "file", "redis", "file+redis")
CHECK_METHOD = "/pdp.v1.DecisionService/Check"
IN_FLIGHT = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--audit-seconds", type=float, default=None,
                        help="audit suite: seconds of load per mode and round")


def _settings(mode: str, folder: Path, url: str) -> AuditSettings | None:
    if mode.startswith("off"):
        return None
    return AuditSettings(
        file=str(folder / f"audit-{mode}.jsonl") if "file" in mode else None,
        redis_url=url if "redis" in mode else None,
    )


def _requests() -> list[Request]:
    return [
        Request("user", "alice", "read", "document", "reports/q3.pdf"),
        Request("user", "alice", "write", "document", "drafts/7",
                resource_properties={"owner": "alice"}),
        Request("user", "bob", "write", "document", "drafts/7",
                resource_properties={"owner": "alice"}),
        Request("service", "billing", "read", "document", "a"),
    ]


# ---- in process ---------------------------------------------------------------------------


def in_process(mode: str, folder: Path, url: str, seconds: float) -> tuple[float, str]:
    settings = _settings(mode, folder, url)
    # Block (up to a second) rather than drop: every record is written, so the rate
    # shows the writer's whole cost per decision (on a thread: the rate is this
    # process's, not bounded by a writer process running beside it).
    blocking = (dataclasses.replace(settings, when_full="block", block_s=1.0, writer="thread")
                if settings else None)
    audit = AuditLog(blocking) if blocking else None
    service = DecisionService(PolicyHolder(load_policy_dir(folder)), audit=audit)
    requests, meta = _requests(), CallMeta("bench", request_id="r")
    count, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for request in requests:
            service.check(request, meta)
        count += len(requests)
    rate = count / (time.perf_counter() - start)
    return rate, _close(audit)


def _close(audit: AuditLog | None) -> str:
    if audit is None:
        return "-"
    audit.close()
    status = audit.status()
    written = min(s["written"] for s in status["sinks"].values())
    return f"{written:,} / {status['dropped']:,}"


# ---- over gRPC ----------------------------------------------------------------------------


def _audit_flags(mode: str, folder: Path, url: str) -> list[str]:
    settings = _settings(mode, folder, url)
    flags = []
    if settings and settings.file:
        flags += ["--audit-file", settings.file]
    if settings and settings.redis_url:
        flags += ["--audit-redis-url", settings.redis_url]
    return flags


@contextmanager
def pdp_server(folder: Path, flags: list[str]) -> Iterator[tuple[str, int]]:
    """`pdp serve` on a free port; yields its address and pid."""
    port = free_port()
    target = f"127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pdp", "serve", "--policies", str(folder), "--listen", target,
         "--workers", "1", "--policy-watch", "false", "--log-level", "warning", *flags],
        stdout=subprocess.DEVNULL,
    )
    try:
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = decision_pb2_grpc.DecisionServiceStub(channel)
            for _ in range(200):  # SERVING once the policy is in
                if stub.Check(_check_requests()[0]).decision == decision_pb2.DECISION_ALLOW:
                    break
                time.sleep(0.05)
        yield target, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _check_requests() -> list[Any]:
    out = []
    for r in _requests():
        msg = decision_pb2.CheckRequest()
        msg.subject.type, msg.subject.id = r.subject_type, r.subject_id
        msg.action.name = r.action
        msg.resource.type, msg.resource.id = r.resource_type, r.resource_id
        if r.resource_properties:
            msg.resource.properties.update(dict(r.resource_properties))
        out.append(msg)
    return out


async def _closed_loop(target: str, bodies: list[bytes], seconds: float, in_flight: int) -> int:
    """Calls answered in `seconds`, with `in_flight` calls always outstanding."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(CHECK_METHOD)  # bytes in, bytes out: no client-side parsing
        await call(bodies[0], timeout=10)
        stop = time.perf_counter() + seconds
        done = 0

        async def worker(k: int) -> None:
            nonlocal done
            i = k
            while time.perf_counter() < stop:
                await call(bodies[i % len(bodies)], timeout=10)
                done += 1
                i += in_flight

        await asyncio.gather(*(worker(k) for k in range(in_flight)))
    return done


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds(pid: int) -> float:
    """CPU time so far of the running children of a process (its audit writer)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sum(_cpu_seconds(int(child)) for child in children)


@dataclasses.dataclass
class Served:
    rates: list[float] = dataclasses.field(default_factory=list)
    cpu_s: float = 0.0
    writer_cpu_s: float = 0.0  # the audit writer process's (the server's children)
    calls: int = 0
    written: int = 0
    dropped: int = 0
    audited: bool = False

    @property
    def records(self) -> str:
        return f"{self.written:,} / {self.dropped:,}" if self.audited else "-"


def grpc_samples(folder: Path, url: str, seconds: float, rounds: int) -> dict[str, Served]:
    """Checks/s per mode and round, and the server's CPU per Check. Each round
    starts a fresh server per mode and measures them in turn: a server's own
    luck (where the scheduler puts its threads, its memory layout) moved
    throughput by up to 15% between identical servers here, so no mode keeps
    one server's luck, and a slow spell of the machine hits a round's modes alike.
    The order changes every round: in one run the server started and measured
    first was the slowest in all 5 rounds. Each round gives one paired ratio per mode."""
    bodies = [msg.SerializeToString() for msg in _check_requests()]
    served = {mode: Served() for mode in MODES}
    shuffle = random.Random(7).shuffle  # seeded: the same orders on every run
    for _ in range(rounds):
        order = list(MODES)
        shuffle(order)  # started and measured in a new order each round (position effects)
        with contextlib.ExitStack() as stack:
            servers = {mode: stack.enter_context(pdp_server(folder, _audit_flags(mode, folder, url)))
                       for mode in order}
            for target, _ in servers.values():  # warm up
                asyncio.run(_closed_loop(target, bodies, min(0.5, seconds), IN_FLIGHT))
            for mode, (target, pid) in servers.items():
                cpu, writer_cpu = _cpu_seconds(pid), _children_cpu_seconds(pid)
                done = asyncio.run(_closed_loop(target, bodies, seconds, IN_FLIGHT))
                served[mode].cpu_s += _cpu_seconds(pid) - cpu
                served[mode].writer_cpu_s += _children_cpu_seconds(pid) - writer_cpu
                served[mode].calls += done
                served[mode].rates.append(done / seconds)
            time.sleep(1.0)  # the writer's counts reach PolicyInfo within about 0.6 s
            for mode, (target, _) in servers.items():
                _count_records(target, served[mode])
    return served


def _count_records(target: str, served: Served) -> None:
    """Add the records the server wrote (by its slowest sink) and dropped, from PolicyInfo."""
    with grpc.insecure_channel(target) as channel:
        audit = admin_pb2_grpc.AdminServiceStub(channel).PolicyInfo(
            admin_pb2.PolicyInfoRequest()).audit
    if audit.enabled:
        served.audited = True
        served.written += min(sink.written for sink in audit.sinks)
        served.dropped += audit.dropped


# ---- report -------------------------------------------------------------------------------


def _rounds(measure: Callable[[str], float], rounds: int) -> dict[str, list[float]]:
    """Samples per mode, modes interleaved so drift hits them all alike."""
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            samples[mode].append(measure(mode))
    return samples


def _table(title: str, samples: dict[str, list[float]],
           extra: dict[str, str] | None = None) -> list[str]:
    """Median rate per mode; the loss is the median over rounds of the round's rate
    against the same round's `off` rate."""
    head = "| audit | checks/s | lost to auditing | µs added per Check |" + (
        " records written / dropped |" if extra else "")
    rule = "| --- | ---: | ---: | ---: |" + (" ---: |" if extra else "")
    lines = [f"### {title}", "", head, rule]
    base = statistics.median(samples["off"])
    for mode in MODES:
        rate = statistics.median(samples[mode])
        ratio = statistics.median(m / o for m, o in zip(samples[mode], samples["off"], strict=True))
        lost = "-" if mode == "off" else f"{(1 - ratio) * 100:.1f}%"
        added = "-" if mode == "off" else f"{(1 / (ratio * base) - 1 / base) * 1e6:.1f}"
        cell = f" {extra[mode]} |" if extra else ""
        lines.append(f"| {mode} | {rate:,.0f} | {lost} | {added} |{cell}")
    return [*lines, ""]


def _cpu_table(served: dict[str, Served]) -> list[str]:
    """Server CPU per Check (steadier than throughput on a machine others use), and
    the audit writer process's, which runs beside the server on another core."""
    base = served["off"].cpu_s / served["off"].calls
    lines = ["| audit | server CPU µs per Check | more than off | writer process CPU µs per Check |",
             "| --- | ---: | ---: | ---: |"]
    for mode, s in served.items():
        per = s.cpu_s / s.calls
        more = "-" if mode == "off" else f"{(per / base - 1) * 100:+.1f}%"
        writer = f"{s.writer_cpu_s / s.calls * 1e6:.1f}" if s.audited else "-"
        lines.append(f"| {mode} | {per * 1e6:.0f} | {more} | {writer} |")
    return [*lines, ""]


def run(args: argparse.Namespace) -> list[str]:
    seconds = args.audit_seconds or (1.0 if args.quick else 2.0)
    rounds = 3 if args.quick else 9
    lines = [f"## Audit: Check throughput with audit off, to a file, to Redis"
             f"{' (--quick)' if args.quick else ''}", ""]
    with tempfile.TemporaryDirectory() as tmp, redis_server() as (url, _redis):
        folder = Path(tmp)
        (folder / "bench.policy").write_text(POLICY)
        served = grpc_samples(folder, url, seconds, rounds)
        lines += _table(
            f"gRPC Check (pdp serve, one worker; asyncio client, {IN_FLIGHT} in flight)",
            {mode: s.rates for mode, s in served.items()},
            {mode: s.records for mode, s in served.items()},
        )
        lines += _cpu_table(served)
        extra: dict[str, str] = {}

        def local(mode: str) -> float:
            rate, extra[mode] = in_process(mode, folder, url, seconds)
            return rate

        lines += _table("In process (DecisionService.check, one thread, queue blocking when "
                        "full: the writer's whole cost against a bare decision)",
                        _rounds(local, rounds), extra)
    lines += [
        f"{seconds:g} s of load per mode and round, {rounds} rounds; "
        f"{os.cpu_count()} CPU(s) shared by the servers, the client and redis-server. "
        "Every decision is recorded (no sampling); file = JSON lines, rotated; "
        "redis = XADD MAXLEN ~, one round trip per batch.",
    ]
    return lines
