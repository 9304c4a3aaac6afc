"""Prometheus metrics for the whole service, and the helpers that update them.

Every module that has something to count calls a helper here rather than
touching prometheus-client itself, so metric names and labels live in one
place. The helpers are cheap enough for the decision path (a cached child
lookup and a locked add). `start_metrics_server` serves them over HTTP.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    multiprocess,
    start_http_server,
)

if TYPE_CHECKING:
    from pdp.model import Request
    from pdp.service import AuditRecorder, CallMeta, Outcome

# Set (by the supervising process, for --workers) before any worker imports prometheus_client:
# each worker then writes its metrics to files there, and the supervisor serves their sum.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROCESS = bool(os.environ.get(MULTIPROC_ENV))

# Decisions take microseconds when cached and up to milliseconds otherwise.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)

DECISIONS = Counter("pdp_decisions", "Decisions made, by effect and front end.",
                    ["effect", "frontend"])
DECISION_LATENCY = Histogram("pdp_decision_latency_seconds",
                             "Time to decide, cache lookups included.", ["frontend"],
                             buckets=LATENCY_BUCKETS)
CACHE_LOOKUPS = Counter("pdp_cache_lookups", "Decision cache lookups by level and result.",
                        ["level", "result"])
REDIS_FAULTS = Counter("pdp_redis_faults", "Redis errors and timeouts, by component.",
                       ["component"])
AUDIT_QUEUE_DEPTH = Gauge("pdp_audit_queue_depth", "Audit records waiting for the writer.",
                          multiprocess_mode="livesum")
AUDIT_DROPPED = Counter("pdp_audit_dropped", "Audit records not written, by reason.", ["reason"])
AUDIT_SAMPLED_OUT = Counter("pdp_audit_sampled_out",
                            "Decisions not recorded because of sampling, by decision.",
                            ["decision"])
AUDIT_RECORDS = Counter("pdp_audit_records", "Audit records handed to a sink, by result.",
                        ["sink", "result"])
AUDIT_SINK_UP = Gauge("pdp_audit_sink_up", "1 while an audit sink is writing, 0 while failing.",
                      ["sink"], multiprocess_mode="livemin")
RELOADS = Counter("pdp_policy_reloads", "Policy reloads by result.", ["result"])
POLICY_HELP = "The policy version being served and where it came from."
POLICY_LABELS = ("version", "kind", "path", "commit", "dirty", "published_by", "published_at")
# Info metrics do not work across processes: with workers, the same series is a gauge.
POLICY: Info | Gauge = (
    Gauge("pdp_policy_info", POLICY_HELP, POLICY_LABELS, multiprocess_mode="livemax")
    if MULTIPROCESS else Info("pdp_policy", POLICY_HELP)
)
_policy_labels: dict[str, str] | None = None
JWT_FAILURES = Counter("pdp_jwt_failures", "Bearer tokens rejected, by reason.", ["reason"])

_decision_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}


def observe_decision(effect: str, frontend: str, latency_s: float) -> None:
    """Count one decision (effect "allow"/"deny") and its latency."""
    key = (effect, frontend)
    children = _decision_children.get(key)
    if children is None:
        children = (DECISIONS.labels(effect, frontend), DECISION_LATENCY.labels(frontend))
        _decision_children[key] = children
    children[0].inc()
    children[1].observe(latency_s)


def cache_lookup(level: str, hit: bool, count: int = 1) -> None:
    """`count` decision cache lookups at `level` ("l1" in process, "l2" Redis)."""
    CACHE_LOOKUPS.labels(level, "hit" if hit else "miss").inc(count)


def redis_fault(component: str) -> None:
    """A Redis call failed or timed out in `component` ("cache", "bundle", "audit")."""
    REDIS_FAULTS.labels(component).inc()


def audit_dropped(reason: str, count: int = 1) -> None:
    AUDIT_DROPPED.labels(reason).inc(count)


def audit_sampled_out(decision: str) -> None:
    AUDIT_SAMPLED_OUT.labels(decision).inc()


def audit_sink_result(sink: str, written: int, failed: int) -> None:
    if written:
        AUDIT_RECORDS.labels(sink, "written").inc(written)
    if failed:
        AUDIT_RECORDS.labels(sink, "failed").inc(failed)


def audit_sink_up(sink: str, up: bool) -> None:
    AUDIT_SINK_UP.labels(sink).set(1 if up else 0)


def audit_queue_depth(read: Callable[[], float]) -> None:
    """Report the audit queue depth by calling `read` at each scrape (one process)."""
    if not MULTIPROCESS:
        AUDIT_QUEUE_DEPTH.set_function(read)


def audit_queue_depth_now(depth: int) -> None:
    """The writer's periodic report of the depth, for workers (no scrape-time callbacks)."""
    if MULTIPROCESS:
        AUDIT_QUEUE_DEPTH.set(depth)


def reload(success: bool) -> None:
    RELOADS.labels("success" if success else "failure").inc()


def policy_loaded(version: str, source: Mapping[str, str] | None = None) -> None:
    """Publish the version now served (and its source: git commit, publisher...)."""
    global _policy_labels
    labels = {"version": version, **(source or {})}
    if isinstance(POLICY, Info):
        POLICY.info(labels)
        return
    if _policy_labels is not None:
        POLICY.labels(**_policy_labels).set(0)  # files keep every series: retire the old one
    _policy_labels = {name: str(labels.get(name, "")) for name in POLICY_LABELS}
    POLICY.labels(**_policy_labels).set(1)


def jwt_failure(reason: str) -> None:
    JWT_FAILURES.labels(reason).inc()


class DecisionMetrics:
    """Counts each decision the service makes, then hands it on (usually to the audit log).

    Plugs into `DecisionService(audit=...)`, the one per-decision hook, so the
    decision path needs no metrics code of its own.
    """

    def __init__(self, then: AuditRecorder | None = None) -> None:
        self._then = then

    def record(self, request: Request, outcome: Outcome, meta: CallMeta) -> None:
        effect = "allow" if outcome.decision.allowed else "deny"
        observe_decision(effect, meta.frontend, outcome.latency_s)
        if self._then is not None:
            self._then.record(request, outcome, meta)


@dataclass(frozen=True, slots=True)
class MetricsServer:
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(host: str, port: int,
                         registry: CollectorRegistry = REGISTRY) -> MetricsServer:
    """Serve /metrics on host:port (port 0 picks a free one) from a daemon thread."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)


def worker_exited(pid: int | None) -> None:
    """For the supervisor: a worker is gone, so its live gauges (audit queue depth,
    sink up) leave the sums; its counters stay counted."""
    if pid is not None and os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


@contextmanager
def shared_metrics(host: str, port: int) -> Iterator[MetricsServer]:
    """For `--workers`: run the workers inside this block. Each worker (a process
    spawned here, importing prometheus_client afresh) writes its metrics to files
    in a private directory; this process serves them all, summed, on host:port."""
    with tempfile.TemporaryDirectory(prefix="pdp-metrics-") as folder:
        os.environ[MULTIPROC_ENV] = folder
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
        server = start_metrics_server(host, port, registry)
        try:
            yield server
        finally:
            server.close()
            os.environ.pop(MULTIPROC_ENV, None)
