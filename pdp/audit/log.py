"""The audit log the decision path talks to: sample, queue, and write in the background.

`AuditLog.record` is called once per decision on the caller's thread and
only samples and queues references; building the record, redaction, JSON
and I/O all happen on the writer thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from pdp import metrics
from pdp.audit.queue import BatchQueue
from pdp.audit.record import Pending, build_record
from pdp.audit.redact import Redactor
from pdp.audit.sampling import Sampler
from pdp.audit.settings import AuditSettings
from pdp.audit.sinks import GuardedSink, RedisStreamSink, RotatingFileSink, Sink, StdoutSink
from pdp.audit.source import PolicySource

if TYPE_CHECKING:
    from pdp.model import Request
    from pdp.service import CallMeta, Outcome

_KEPT_SOURCES = 16  # versions still answering while a reload settles


def build_sinks(settings: AuditSettings) -> list[Sink]:
    sinks: list[Sink] = []
    if settings.stdout:
        sinks.append(StdoutSink())
    if settings.file:
        sinks.append(RotatingFileSink(settings.file, settings.file_max_bytes,
                                      settings.file_backups))
    if settings.redis_url:
        sinks.append(RedisStreamSink(settings.redis_url, settings.redis_stream,
                                     settings.redis_maxlen))
    return sinks


class AuditLog:
    def __init__(self, settings: AuditSettings, sinks: Sequence[Sink] | None = None) -> None:
        settings.validate()
        self.settings = settings
        # Called (on the writer thread) with the new health when a sink fails or recovers.
        self.on_health: Callable[[bool], None] | None = None
        self.sinks = [GuardedSink(s, on_change=self._sink_changed)
                      for s in (build_sinks(settings) if sinks is None else sinks)]
        self._sampler = Sampler(settings.sample_allow, settings.sample_deny)
        self._redactor = Redactor(settings.sensitive, settings.sensitive_mode, settings.hash_key)
        self._sources: dict[str, dict[str, Any]] = {}
        self._queue: BatchQueue[Pending] = BatchQueue(
            self._write_batch,
            size=settings.queue_size,
            batch_size=settings.batch_size,
            flush_interval_s=settings.flush_interval_s,
            when_full=settings.when_full,
            block_s=settings.block_s,
        )
        metrics.audit_queue_depth(self._queue.depth)

    def record(self, request: Request, outcome: Outcome, meta: CallMeta) -> None:
        if self._sampler.keep(outcome.decision.allowed):
            self._queue.put(Pending(time.time(), request, outcome, meta))

    def policy_loaded(self, version: str, source: PolicySource) -> None:
        """Name the source of `version` in the records of decisions made under it."""
        self._sources[version] = source.to_dict()
        while len(self._sources) > _KEPT_SOURCES:
            del self._sources[next(iter(self._sources))]

    def _write_batch(self, batch: list[Pending]) -> None:
        lines = [self._line(item) for item in batch]
        for sink in self.sinks:
            sink.write(lines)

    def _line(self, item: Pending) -> bytes:
        source = self._sources.get(item.outcome.decision.policy_version)
        record = build_record(item, source, self._redactor, self.settings.attributes)
        # orjson: ten times faster than json here, and the writer shares the GIL with Checks.
        return orjson.dumps(record, default=str)

    def _sink_changed(self) -> None:
        if self.on_health is not None:
            self.on_health(self.healthy)

    @property
    def healthy(self) -> bool:
        """False while any sink is failing."""
        return all(sink.healthy for sink in self.sinks)

    def status(self) -> dict[str, Any]:
        """For health and admin info."""
        return {
            "healthy": self.healthy,
            "queue_depth": self._queue.depth(),
            "queue_size": self.settings.queue_size,
            "when_full": self.settings.when_full,
            "dropped": self._queue.dropped.value,
            "sampled_out": self._sampler.sampled_out(),
            "sinks": {sink.name: sink.status() for sink in self.sinks},
        }

    def close(self, timeout_s: float = 10.0) -> None:
        """Drain the queue into the sinks, then close them."""
        self._queue.close(timeout_s)
        for sink in self.sinks:
            sink.close()
        metrics.audit_queue_depth(lambda: 0)
