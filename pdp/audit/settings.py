"""The `[audit]` section of the service configuration: what the audit log writes,
where, and what it does under pressure.

pdp.config reads it like any other section (file, `PDP_AUDIT_*` environment,
`--audit-*` flags). Defaults: no sink (audit off); records built and written
in a child process; drop-and-count when the queue is full, so auditing never
slows a decision; every decision recorded; attribute values not written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WHEN_FULL = ("drop", "block")
WRITERS = ("process", "thread")
SENSITIVE_MODES = ("remove", "hash")
DEFAULT_STREAM = "pdp:audit"


class AuditConfigError(ValueError):
    """An [audit] setting that cannot be used."""


def _setting(default: Any, help: str, secret: bool = False) -> Any:
    # pdp.config.setting, without importing pdp.config (which imports this module).
    return field(default=default, repr=not secret, metadata={"help": help, "flag": None})


@dataclass(frozen=True, slots=True)
class AuditSettings:
    # Sinks: any combination; none means audit is off.
    stdout: bool = _setting(False, "write audit records to stdout (JSON lines)")
    file: str | None = _setting(None, "write audit records to this JSON-lines file")
    file_max_bytes: int = _setting(100 * 1024 * 1024, "rotate the audit file past this size")
    file_backups: int = _setting(5, "rotated audit files kept (FILE.1 ... FILE.N)")
    redis_url: str | None = _setting(None, "write audit records to a Redis Stream at this URL")
    redis_stream: str = _setting(DEFAULT_STREAM, "the audit stream key")
    redis_maxlen: int = _setting(1_000_000, "trim the stream to about this many entries")
    # Where records are built and written (pdp.audit.process): a child process
    # (no GIL shared with Checks), or the server's own writer thread.
    writer: str = _setting("process", "build and write records in a child process or on a thread")
    # The queue between the decision path and the writer thread: few, large batches
    # (pdp.audit.queue says why); records reach the sinks within about a second.
    queue_size: int = _setting(50_000, "audit records waiting for the writer, at most")
    batch_size: int = _setting(5_000, "audit records per batch; a full batch wakes the writer")
    flush_interval_s: float = _setting(1.0, "the writer looks for records this often (seconds)")
    when_full: str = _setting(
        "drop", "queue full: drop (count and drop at once) or block (wait up to block_s, then drop)"
    )
    block_s: float = _setting(0.005, "with when_full=block, longest wait for room (seconds)")
    # Sampling: one ALLOW in sample_allow, one DENY in sample_deny (0: none).
    sample_allow: int = _setting(1, "record one ALLOW in N (1: all, 0: none)")
    sample_deny: int = _setting(1, "record one DENY in N (1: all, 0: none)")
    # Privacy: attribute values only when asked; sensitive paths removed or hashed.
    attributes: bool = _setting(False, "write attribute values (subject, resource, action, context)")
    sensitive: tuple[str, ...] = _setting(
        (), "paths never written in the clear, e.g. subject.email,context.headers.x-user"
    )
    sensitive_mode: str = _setting("remove", "sensitive values: remove or hash (keyed SHA-256)")
    hash_key: str = _setting("", "HMAC key for hash mode, so hashes cannot be looked up",
                             secret=True)

    @property
    def enabled(self) -> bool:
        return self.stdout or bool(self.file) or bool(self.redis_url)

    def validate(self) -> None:
        """Raise AuditConfigError naming the first setting that cannot be used."""
        if self.when_full not in WHEN_FULL:
            raise AuditConfigError(f"audit.when_full must be one of {', '.join(WHEN_FULL)}")
        if self.writer not in WRITERS:
            raise AuditConfigError(f"audit.writer must be one of {', '.join(WRITERS)}")
        if self.sensitive_mode not in SENSITIVE_MODES:
            raise AuditConfigError(
                f"audit.sensitive_mode must be one of {', '.join(SENSITIVE_MODES)}")
        for name in ("queue_size", "batch_size", "file_max_bytes", "redis_maxlen"):
            if getattr(self, name) < 1:
                raise AuditConfigError(f"audit.{name} must be at least 1")
        for name in ("file_backups", "sample_allow", "sample_deny", "block_s"):
            if getattr(self, name) < 0:
                raise AuditConfigError(f"audit.{name} must not be negative")
        if self.flush_interval_s <= 0:
            raise AuditConfigError("audit.flush_interval_s must be positive")
