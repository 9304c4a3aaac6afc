"""Convergence benchmark: how long until every replica serves a change made in Redis.

A real redis-server and N `pdp serve --policy-source redis` replica processes
(loopback, one worker each). For each round:

- publish: a new policy version is stored, made current and announced
  (`BundleStore.publish`, what `pdp publish` does after compiling and testing);
  the clock stops when every replica's admin PolicyInfo reports the version.
- grant / revoke: `AssignmentStore.grant` (what `pdp grant` does after
  checking the role); the clock stops when a Check on every replica answers
  with the new decision.

Each replica is polled from its own thread every millisecond, so the figures
include up to ~1 ms of polling granularity and one RPC.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import redis

from benchmarks.support import free_port, redis_server
from pdp.assignments import AssignmentStore
from pdp.bundles import BundleStore, make_bundle
from pdp.client import PdpClient
from pdp.loader import SourceFile

POLICY = """\
role approver {
    allow approve on invoice:** when resource.amount <= 1000 reason "approvers approve" as approve
}
"""
POLL_S = 0.001


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--convergence-replicas", default="2,3", metavar="N[,N...]",
                        help="convergence suite: replica processes per run (default 2,3)")
    parser.add_argument("--convergence-rounds", type=int, default=20, metavar="N",
                        help="convergence suite: changes of each kind (default 20; 5 with --quick)")


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.ConnectionError:
        return False


def _until(check: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


@contextmanager
def _replicas(url: str, count: int) -> Iterator[list[PdpClient]]:
    ports = [free_port() for _ in range(count)]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "pdp", "serve", "--policy-source", "redis", "--redis-url", url,
         "--listen", f"127.0.0.1:{port}", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ),
    ) for port in ports]
    clients = [PdpClient(f"127.0.0.1:{port}", timeout=5) for port in ports]
    try:
        yield clients
    finally:
        for client in clients:
            client.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def _time_until_all(clients: Sequence[PdpClient], done: Callable[[PdpClient], bool],
                    change: Callable[[], object]) -> float:
    """Seconds from just before `change()` until `done` holds on every replica."""
    finished: list[float] = []
    lock = threading.Lock()
    start = threading.Event()

    def poll(client: PdpClient) -> None:
        start.wait()
        while not done(client):
            time.sleep(POLL_S)
        with lock:
            finished.append(time.perf_counter())

    threads = [threading.Thread(target=poll, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    change()
    start.set()
    for t in threads:
        t.join(timeout=30)
    if len(finished) != len(clients):
        raise TimeoutError("a replica did not converge in 30 s")
    return max(finished) - t0


def _allowed(client: PdpClient) -> bool:
    reply = client.check("user:bob", "approve", "invoice:1", resource_properties={"amount": 10})
    return bool(reply.allowed)


def _row(name: str, replicas: int, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return (f"| {name} | {replicas} | {len(ms)} | {statistics.median(ms):.1f} | {p95:.1f} "
            f"| {max(ms):.1f} |")


def run(args: argparse.Namespace) -> list[str]:
    rounds = 5 if args.quick else args.convergence_rounds
    counts = [int(n) for n in str(args.convergence_replicas).split(",") if n.strip()]
    rows = [row for count in counts for row in _measure(count, rounds)]
    return [
        "## Convergence across replicas (publish, grant, revoke)",
        "",
        f"Real redis-server and {' or '.join(map(str, counts))} `pdp serve --policy-source redis` "
        f"processes on loopback; {rounds} changes of each kind. Time from the change in Redis "
        "until every replica serves it (PolicyInfo version, or the Check answer), in milliseconds.",
        "",
        "| change | replicas | rounds | median ms | p95 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"CPU: {os.cpu_count()} cores. Command: `python -m benchmarks --only convergence`.",
    ]


def _measure(count: int, rounds: int) -> list[str]:
    """One table row per kind of change, for `count` replicas."""
    publish: list[float] = []
    grant: list[float] = []
    revoke: list[float] = []
    with redis_server() as (url, _redis):
        client = redis.Redis.from_url(url)
        bundles, assignments = BundleStore(client), AssignmentStore(client)
        bundles.publish(make_bundle([SourceFile("main.policy", POLICY.encode())], "bench"))
        with _replicas(url, count) as replicas:
            for replica in replicas:
                _until(lambda r=replica: _ready(r), 60)
            for i in range(rounds):
                bundle = make_bundle([SourceFile("main.policy", f"{POLICY}# {i}\n".encode())], "bench")
                version = bundle.info.version
                publish.append(_time_until_all(
                    replicas, lambda r, v=version: r.policy_info().version == v,
                    lambda b=bundle: bundles.publish(b)))
                grant.append(_time_until_all(
                    replicas, _allowed, lambda: assignments.grant("user:bob", "approver")))
                revoke.append(_time_until_all(
                    replicas, lambda r: not _allowed(r),
                    lambda: assignments.revoke("user:bob", "approver")))
    return [
        _row("publish (new bundle version)", count, publish),
        _row("grant (role assigned)", count, grant),
        _row("revoke (role removed)", count, revoke),
    ]


def _ready(client: PdpClient) -> bool:
    try:
        return bool(client.policy_info().version)
    except Exception:  # not listening yet
        return False
