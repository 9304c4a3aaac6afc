"""Where records are built and written: `RecordWriter` owns the sinks.

It runs in the audit writer process (pdp.audit.child, the default) or, in
thread mode, on the server's writer thread (`ThreadWriter`). Either way it
gets batches of `Flat` tuples (pdp.audit.record) and the policy sources, and
reports what its sinks did as a `Snapshot` (per sink: healthy, written,
lost, failures, last error) that pdp.audit.status follows in the server.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from pdp.audit.record import Flat, build_record, policy_version
from pdp.audit.redact import Redactor
from pdp.audit.settings import AuditSettings
from pdp.audit.sinks import GuardedSink, RedisStreamSink, RotatingFileSink, Sink, StdoutSink

if TYPE_CHECKING:
    from pdp.audit.status import SinkStatus

log = logging.getLogger("pdp.audit")

KEPT_SOURCES = 16  # versions still answering while a reload settles
Snapshot = dict[str, dict[str, Any]]  # sink name -> GuardedSink.status()


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


class RecordWriter:
    def __init__(self, settings: AuditSettings, sinks: Sequence[Sink] | None = None) -> None:
        self._attributes = settings.attributes
        self._redactor = Redactor(settings.sensitive, settings.sensitive_mode, settings.hash_key)
        self._sources: dict[str, Mapping[str, Any]] = {}
        self.sinks = [GuardedSink(s) for s in (build_sinks(settings) if sinks is None else sinks)]

    def policy_loaded(self, version: str, source: Mapping[str, Any]) -> None:
        """Name the source of `version` in the records of decisions made under it."""
        self._sources[version] = source
        while len(self._sources) > KEPT_SOURCES:
            del self._sources[next(iter(self._sources))]

    def write(self, batch: Sequence[Flat]) -> None:
        sources, redactor, attributes = self._sources, self._redactor, self._attributes
        # orjson: ten times faster than json here.
        lines = [orjson.dumps(build_record(flat, sources.get(policy_version(flat)), redactor,
                                           attributes), default=str)
                 for flat in batch]
        for sink in self.sinks:
            sink.write(lines)

    def snapshot(self) -> Snapshot:
        return {sink.name: sink.status() for sink in self.sinks}

    def close(self) -> None:
        for sink in self.sinks:
            error = sink.close()
            if error is not None:
                log.warning("audit sink %s did not close cleanly: %s", sink.name, error)


class ThreadWriter:
    """Thread mode: records are built and written on the server's writer thread,
    which then hands the sinks' status over directly."""

    def __init__(self, writer: RecordWriter, status: SinkStatus) -> None:
        self._writer = writer
        self._status = status
        status.update(writer.snapshot())

    def write(self, batch: Sequence[Flat]) -> None:
        self._writer.write(batch)
        self._status.update(self._writer.snapshot())

    def policy_loaded(self, version: str, source: Mapping[str, Any]) -> None:
        self._writer.policy_loaded(version, source)

    def info(self) -> dict[str, Any]:
        return {"writer_pid": None, "in_writer": 0}

    def close(self, timeout_s: float) -> None:
        self._writer.close()
        self._status.update(self._writer.snapshot())
