"""The audit log and the metrics of one server process, wired from its settings.

The server makes one `Observability` next to its decision service: it gives
the service its per-decision hook (`recorder`), hears about every policy
load (to name the policy source in records and metrics), reports the audit
status for health and admin info, and closes everything on shutdown (the
audit queue is drained into the sinks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pdp import metrics
from pdp.audit import (
    AuditConfigError,
    AuditLog,
    AuditSettings,
    PolicySource,
    bundle_source,
    directory_source,
)
from pdp.audit.redact import Redactor
from pdp.logs import fields

if TYPE_CHECKING:
    from pdp.bundles import BundleStore
    from pdp.config import Config
    from pdp.policy import CompiledPolicy
    from pdp.service import AuditRecorder

log = logging.getLogger("pdp.metrics")

# Finds who published a version, for policies loaded from a Redis bundle.
Publisher = Callable[[str], tuple[str, float] | None]


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def config_problem(audit: AuditSettings, metrics_listen: str | None) -> str | None:
    """Why the [audit] or [metrics] settings cannot run, or None."""
    try:
        audit.validate()
        Redactor(audit.sensitive, audit.sensitive_mode, audit.hash_key)
        if metrics_listen:
            parse_listen(metrics_listen)
    except AuditConfigError as exc:
        return str(exc)
    except ValueError as exc:
        return f"metrics.listen: {exc}"
    return None


def run_pool(config: Config, count: int, supervise: Callable[[Config, int], int]) -> int:
    """`--workers`: run the pool; with metrics on, this (supervising) process serves
    every worker's metrics, summed, since the workers cannot all bind the port."""
    with ExitStack() as stack:
        if config.metrics.listen:
            try:
                stack.enter_context(metrics.shared_metrics(*parse_listen(config.metrics.listen)))
            except OSError as exc:
                log.error("cannot serve metrics",
                          extra=fields(listen=config.metrics.listen, error=str(exc)))
                return 1
        return supervise(config, count)


def bundle_publisher(store: BundleStore) -> Publisher:
    """Who published a version, read from the bundle store (once per load)."""

    def publisher(version: str) -> tuple[str, float] | None:
        for info in store.list():
            if info.version == version:
                return info.published_by, info.published_at
        return None

    return publisher


@dataclass(slots=True)
class Observability:
    audit: AuditLog | None = None
    metrics_server: metrics.MetricsServer | None = None
    publisher: Publisher | None = None

    counting: bool = False  # decisions are counted (metrics served here or by a supervisor)
    _last_version: str | None = None

    @classmethod
    def start(cls, audit: AuditSettings, metrics_listen: str | None) -> Observability:
        """Open the audit sinks (when any is set) and serve /metrics (when asked; in a
        `--workers` pool the supervisor serves every worker's metrics instead)."""
        audit_log = AuditLog(audit) if audit.enabled else None
        server = None
        if metrics_listen and not metrics.MULTIPROCESS:
            server = metrics.start_metrics_server(*parse_listen(metrics_listen))
        return cls(audit_log, server, counting=bool(metrics_listen))

    @property
    def recorder(self) -> AuditRecorder | None:
        """The DecisionService hook: count (when metrics are on), then audit."""
        if not self.counting:
            return self.audit
        return metrics.DecisionMetrics(then=self.audit)

    def source_of(self, policy: CompiledPolicy) -> PolicySource:
        """Where `policy` came from; runs git (or asks Redis) once per load."""
        if self.publisher is not None:
            published = self.publisher(policy.version)
            if published is not None:
                by, at = published
                return bundle_source(by, datetime.fromtimestamp(at, UTC).isoformat())
        return directory_source(policy.source_dir)

    def policy_loaded(self, policy: CompiledPolicy) -> None:
        """After a reload; one that kept the version (a bundle resync, a touched file)
        changes nothing here, so git or Redis is asked once per new version."""
        if policy.version == self._last_version:
            return
        self._last_version = policy.version
        source = self.source_of(policy)
        if self.audit is not None:
            self.audit.policy_loaded(policy.version, source)
        metrics.policy_loaded(policy.version, {k: str(v) for k, v in source.to_dict().items()})

    def status(self) -> dict[str, Any]:
        """The audit status for health and admin info."""
        if self.audit is None:
            return {"enabled": False, "healthy": True}
        return {"enabled": True, **self.audit.status()}

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
