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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pdp import metrics
from pdp.audit import AuditLog, AuditSettings, PolicySource, bundle_source, directory_source

if TYPE_CHECKING:
    from pdp.policy import CompiledPolicy
    from pdp.service import AuditRecorder

log = logging.getLogger("pdp.audit")

# Finds who published a version, for policies loaded from a Redis bundle.
Publisher = Callable[[str], tuple[str, float] | None]


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


@dataclass(slots=True)
class Observability:
    audit: AuditLog | None = None
    metrics_server: metrics.MetricsServer | None = None
    publisher: Publisher | None = None

    @classmethod
    def start(cls, audit: AuditSettings, metrics_listen: str | None) -> Observability:
        """Open the audit sinks (when any is set) and serve /metrics (when asked)."""
        audit_log = AuditLog(audit) if audit.enabled else None
        server = None
        if metrics_listen:
            server = metrics.start_metrics_server(*parse_listen(metrics_listen))
        return cls(audit_log, server)

    @property
    def recorder(self) -> AuditRecorder | None:
        """The DecisionService hook: count (when metrics are served), then audit."""
        if self.metrics_server is None:
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
