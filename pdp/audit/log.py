"""The audit log the decision path talks to: sample, queue, and write in the background.

`AuditLog.record` is called once per decision on the caller's thread: it
samples, flattens the decision into a tuple of plain values
(pdp.audit.record, about 1 µs) and queues it. The queue's writer thread
hands each batch to the writer:

- "process" (the default, `writer = "process"`): a child process builds,
  redacts, serializes and writes the records (pdp.audit.process), so that
  work never holds the server's GIL;
- "thread": the writer thread does it all in this process (also what an
  `AuditLog` given explicit sink objects does, as tests do).

The sinks' counts come back as snapshots that pdp.audit.status turns into
`status()`, health (`on_health`) and metrics, the same way in both modes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pdp import metrics
from pdp.audit.process import ProcessWriter
from pdp.audit.queue import BatchQueue
from pdp.audit.record import Flat, flatten
from pdp.audit.sampling import Sampler
from pdp.audit.settings import AuditSettings
from pdp.audit.sinks import Sink
from pdp.audit.source import PolicySource
from pdp.audit.status import SinkStatus
from pdp.audit.writer import RecordWriter, ThreadWriter

if TYPE_CHECKING:
    from pdp.model import Request
    from pdp.service import CallMeta, Outcome


class Writer(Protocol):
    def write(self, batch: Sequence[Flat]) -> None: ...
    def policy_loaded(self, version: str, source: Mapping[str, Any]) -> None: ...
    def info(self) -> dict[str, Any]: ...
    def close(self, timeout_s: float) -> None: ...


class AuditLog:
    def __init__(self, settings: AuditSettings, sinks: Sequence[Sink] | None = None) -> None:
        settings.validate()
        self.settings = settings
        self._attributes = settings.attributes
        # Called with the new health when a sink fails or recovers, or the writer process dies
        # (on a background thread).
        self.on_health: Callable[[bool], None] | None = None
        self._status = SinkStatus(self._health_changed)
        self._sampler = Sampler(settings.sample_allow, settings.sample_deny)
        self._queue: BatchQueue[Flat] = BatchQueue(
            self._write_batch,
            size=settings.queue_size,
            batch_size=settings.batch_size,
            flush_interval_s=settings.flush_interval_s,
            when_full=settings.when_full,
            block_s=settings.block_s,
        )
        self.mode = "thread" if sinks is not None else settings.writer
        self._writer: Writer
        if self.mode == "thread":
            self._writer = ThreadWriter(RecordWriter(settings, sinks), self._status)
        else:
            # Unusable sink settings fail here, not in the child; and the status
            # names the sinks before the child's first report.
            probe = RecordWriter(settings)
            self._status.update(probe.snapshot())
            probe.close()
            self._writer = ProcessWriter(settings, self._status, self._queue.drop)
        metrics.audit_queue_depth(self._queue.depth)

    def record(self, request: Request, outcome: Outcome, meta: CallMeta) -> None:
        if self._sampler.keep(outcome.decision.allowed):
            self._queue.put(flatten(time.time(), request, outcome, meta, self._attributes))

    def policy_loaded(self, version: str, source: PolicySource) -> None:
        """Name the source of `version` in the records of decisions made under it."""
        self._writer.policy_loaded(version, source.to_dict())

    def _write_batch(self, batch: list[Flat]) -> None:
        self._writer.write(batch)

    def _health_changed(self, healthy: bool) -> None:
        if self.on_health is not None:
            self.on_health(healthy)

    @property
    def healthy(self) -> bool:
        """False while any sink is failing or the writer process is down."""
        return self._status.healthy

    def status(self) -> dict[str, Any]:
        """For health and admin info."""
        return {
            "healthy": self.healthy,
            "writer": self.mode,
            **self._writer.info(),  # writer_pid, in_writer (sent to the process, not handled)
            "queue_depth": self._queue.depth(),
            "queue_size": self.settings.queue_size,
            "when_full": self.settings.when_full,
            "dropped": self._queue.dropped.value,
            "sampled_out": self._sampler.sampled_out(),
            "sinks": self._status.sinks(),
        }

    def close(self, timeout_s: float = 10.0) -> None:
        """Drain the queue into the writer, then let it write everything and close the sinks."""
        deadline = time.monotonic() + timeout_s
        self._queue.close(timeout_s)
        self._writer.close(max(1.0, deadline - time.monotonic()))
        metrics.audit_queue_depth(lambda: 0)
