"""What the audit log writes, where, and what it does under pressure.

Read from the `[audit]` section of the configuration file (and the
`--audit-*` options). Defaults: no sink (audit off), drop-and-count when the
queue is full (a decision is never slowed by auditing), every decision
recorded, attribute values not written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

WHEN_FULL = ("drop", "block")
SENSITIVE_MODES = ("remove", "hash")
DEFAULT_STREAM = "pdp:audit"


@dataclass(frozen=True, slots=True)
class AuditSettings:
    # Sinks: any combination; none means audit is off.
    stdout: bool = False
    file: str | None = None
    file_max_bytes: int = 100 * 1024 * 1024
    file_backups: int = 5
    redis_url: str | None = None
    redis_stream: str = DEFAULT_STREAM
    redis_maxlen: int = 1_000_000  # trimmed approximately (MAXLEN ~)
    # The queue between the decision path and the writer thread.
    queue_size: int = 10_000
    batch_size: int = 500
    flush_interval_s: float = 0.1
    when_full: str = "drop"  # "drop": count and drop; "block": wait up to block_s, then drop
    block_s: float = 0.005
    # Sampling: record one ALLOW in `sample_allow` and one DENY in `sample_deny` (0: none).
    sample_allow: int = 1
    sample_deny: int = 1
    # Privacy: attribute values only when asked; sensitive paths removed or hashed.
    attributes: bool = False
    sensitive: tuple[str, ...] = ()
    sensitive_mode: str = "remove"
    hash_key: str = ""  # HMAC key for "hash" mode, so hashes cannot be looked up in a dictionary

    def __post_init__(self) -> None:
        if self.when_full not in WHEN_FULL:
            raise ValueError(f"audit when_full must be one of {', '.join(WHEN_FULL)}")
        if self.sensitive_mode not in SENSITIVE_MODES:
            raise ValueError(f"audit sensitive_mode must be one of {', '.join(SENSITIVE_MODES)}")
        for name in ("queue_size", "batch_size", "file_max_bytes", "redis_maxlen"):
            if getattr(self, name) < 1:
                raise ValueError(f"audit {name} must be at least 1")
        if self.file_backups < 0 or self.sample_allow < 0 or self.sample_deny < 0:
            raise ValueError("audit file_backups, sample_allow and sample_deny cannot be negative")

    @property
    def enabled(self) -> bool:
        return self.stdout or bool(self.file) or bool(self.redis_url)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> AuditSettings:
        """Settings from a parsed `[audit]` table; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown [audit] setting(s): {', '.join(unknown)}")
        converted = dict(values)
        if "sensitive" in converted:
            converted["sensitive"] = tuple(str(p) for p in converted["sensitive"])
        return cls(**converted)
