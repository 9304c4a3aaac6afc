"""The server process's view of the audit sinks, followed from the writer's snapshots.

The sinks run in the audit writer process (or on the writer thread), which
reports their counts as snapshots. Here, in the server process, each one
becomes: the status `AuditLog.status()` shows (counts summed over every
writer process the log has had), the `pdp_audit_records_total`,
`pdp_audit_sink_up` and `pdp_redis_faults_total{component="audit"}` metrics
(the server process owns the metrics; in `--workers` mode they are files of
the worker's), one warning when a sink starts failing and one when it
recovers, and the `on_change` call when the log's health changes.

Health: every sink writing, and the writer process alive.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pdp import metrics
from pdp.audit.sinks import RedisStreamSink

log = logging.getLogger("pdp.audit")

_COUNTS = ("written", "lost", "failures")


class SinkStatus:
    def __init__(self, on_change: Callable[[bool], None]) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._sinks: dict[str, dict[str, Any]] = {}  # totals over every writer
        self._seen: dict[str, Mapping[str, Any]] = {}  # the current writer's last snapshot
        self._writer_up = True
        self._healthy = True

    @property
    def healthy(self) -> bool:
        return self._healthy

    def sinks(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: dict(sink) for name, sink in self._sinks.items()}

    def update(self, snapshot: Mapping[str, Mapping[str, Any]]) -> None:
        """A snapshot from the current writer (its counts only grow)."""
        with self._lock:
            for name, now in snapshot.items():
                self._apply(name, now, self._seen.get(name))
            self._seen = dict(snapshot)
            self._writer_up = True
            changed = self._recompute()
        self._tell(changed)

    def writer_changed(self, up: bool) -> None:
        """The writer process died (False) or a new one starts (True): its counts start at 0."""
        with self._lock:
            self._seen = {}
            self._writer_up = up
            changed = self._recompute()
        self._tell(changed)

    def _apply(self, name: str, now: Mapping[str, Any], seen: Mapping[str, Any] | None) -> None:
        delta = {key: now[key] - (seen[key] if seen else 0) for key in _COUNTS}
        total = self._sinks.get(name)
        if total is None:
            total = self._sinks[name] = {"healthy": True, **dict.fromkeys(_COUNTS, 0),
                                         "last_error": None}
            metrics.audit_sink_up(name, True)
        for key in _COUNTS:
            total[key] += delta[key]
        metrics.audit_sink_result(name, delta["written"], delta["lost"])
        if name == RedisStreamSink.name:
            for _ in range(delta["failures"]):
                metrics.redis_fault("audit")
        total["last_error"] = now["last_error"]
        if now["healthy"] != total["healthy"]:
            total["healthy"] = now["healthy"]
            metrics.audit_sink_up(name, now["healthy"])
            if now["healthy"]:
                log.warning("audit sink %s recovered; %d record(s) lost so far",
                            name, total["lost"])
            else:
                log.warning("audit sink %s failing: %s", name, now["last_error"])

    def _recompute(self) -> bool:
        healthy = self._writer_up and all(s["healthy"] for s in self._sinks.values())
        changed = healthy != self._healthy
        self._healthy = healthy
        return changed

    def _tell(self, changed: bool) -> None:
        if changed:
            self._on_change(self._healthy)
