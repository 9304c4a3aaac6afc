"""Level 2 of the decision cache: decisions shared by every replica through Redis.

Key: `pdp:dc:{<digest>}`, the digest a 128-bit BLAKE2b of the decision key
(policy version plus exactly the inputs the decision reads) in a canonical
text form, so every replica computes the same key for the same question. Each
key carries its own hash tag: one key per operation, spread over the slots of
a cluster. Value: compact JSON `[allowed, version, roles, reasons]`, with a
TTL.

Reads run on the decision path and are bounded by the client's timeout (and
skipped while the FaultTracker says Redis is failing). Writes never are: `put`
appends to a bounded queue (dropping and counting when it is full) that a
background thread drains in pipelined batches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from pdp import redisio
from pdp.model import Decision, Effect, Reason

log = logging.getLogger("pdp.cache")

NAMESPACE = "dc"
WRITE_BATCH = 256
# Writes wait up to this long to be batched; waking the writer per decision
# would cost a thread switch on the decision path.
WRITE_EVERY_S = 0.05


def digest(decision_key: tuple[Any, ...]) -> str:
    """The same string in every process for equal keys (sets sorted, no hash())."""
    text = repr(_canonical(decision_key))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, frozenset):
        return ("set", tuple(sorted((_canonical(v) for v in value), key=repr)))
    return value


def redis_key(key_digest: str) -> str:
    return redisio.key(NAMESPACE, key_digest)


def encode(decision: Decision) -> bytes:
    reasons = [[r.rule, r.effect.value, r.text, r.file, r.line] for r in decision.reasons]
    value = [int(decision.allowed), decision.policy_version, sorted(decision.roles), reasons]
    return json.dumps(value, separators=(",", ":")).encode()


def decode(raw: bytes, version: str) -> Decision:
    """The decision stored in `raw`; ValueError if malformed or of another version."""
    try:
        allowed, stored_version, roles, reasons = json.loads(raw)
        decision = Decision(
            bool(allowed),
            tuple(Reason(str(r), Effect(e), str(t), str(f), int(n)) for r, e, t, f, n in reasons),
            str(stored_version),
            frozenset(str(role) for role in roles),
        )
    except (TypeError, ValueError) as exc:  # JSONDecodeError and bad shapes are ValueErrors
        raise ValueError(f"malformed cached decision: {exc}") from exc
    if decision.policy_version != version:
        raise ValueError("cached decision of another policy version")
    return decision


class RedisCache:
    """Reads on the caller's thread, writes behind on a daemon thread."""

    def __init__(
        self,
        url: str,
        ttl_s: float,
        timeout_s: float = redisio.DEFAULT_TIMEOUT_S,
        write_timeout_s: float = 0.25,
        queue_size: int = 10_000,
        retry_s: float = 1.0,
    ) -> None:
        self.url = url
        self.tracker = redisio.FaultTracker("cache", retry_s, settle_s=retry_s)
        self._reader = redisio.LazyClient(url, timeout_s)
        self._writer = redisio.LazyClient(url, write_timeout_s)
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._queue: deque[tuple[tuple[Any, ...], Decision]] = deque()
        self._queue_size = queue_size
        self._wake = threading.Event()
        self._retired: deque[redisio.Client] = deque()
        self._closed = False
        self._busy = False
        self.written = 0
        self.dropped = 0
        self.corrupt = 0
        self.skipped = 0  # lookups not tried while Redis is failing
        self._thread = threading.Thread(target=self._run, name="pdp-cache-writer", daemon=True)
        self._thread.start()

    def get(self, decision_key: tuple[Any, ...], version: str) -> Decision | None:
        """The stored decision, or None on a miss, a fault or a corrupt value."""
        if not self.tracker.available():
            self.skipped += 1
            return None
        try:
            raw = self._reader.get().get(redis_key(digest(decision_key)))
        except redisio.ERRORS as exc:
            self._fault(exc)
            return None
        self.tracker.ok()
        if raw is None:
            return None
        try:
            return decode(raw, version)  # type: ignore[arg-type]
        except ValueError:
            self.corrupt += 1
            return None

    def put(self, decision_key: tuple[Any, ...], decision: Decision) -> None:
        """Queue a write; never blocks. Dropped (and counted) when the queue is full."""
        queue = self._queue
        if len(queue) >= self._queue_size or self.tracker.blocked:
            self.dropped += 1
            return
        queue.append((decision_key, decision))
        if len(queue) == WRITE_BATCH:  # else the writer's next tick (WRITE_EVERY_S) takes it
            self._wake.set()

    def pending(self) -> int:
        return len(self._queue)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until the queue is empty (for tests and shutdown); True if it is."""
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        while (self._queue or self._busy) and time.monotonic() < deadline:
            time.sleep(0.005)
        return not (self._queue or self._busy)

    def close(self) -> None:
        self.flush(1.0)
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=2)
        while self._retired:
            redisio.close_client(self._retired.popleft())
        self._reader.close()
        self._writer.close()

    def _fault(self, exc: Exception) -> None:
        self.tracker.fault(exc)
        # Retire every pooled connection, the writer's too: after a restart or
        # a pause they are all stale, and each would fail once more and flap
        # the state. The next use makes a fresh client (and re-reads a
        # cluster's slot map); the writer thread closes the old ones, since
        # closing waits for calls still in flight on them.
        for lazy in (self._reader, self._writer):
            old = lazy.detach()
            if old is not None:
                self._retired.append(old)
        self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(WRITE_EVERY_S)
            self._wake.clear()
            while self._retired:
                redisio.close_client(self._retired.popleft())
            while self._queue and not self._closed:
                self._busy = True  # before taking: flush() must not see an empty queue and idle
                try:
                    self._write(self._take(WRITE_BATCH))
                except Exception:  # the writer must outlive any one bad batch
                    log.exception("level-2 cache write failed")
                finally:
                    self._busy = False

    def _take(self, count: int) -> list[tuple[tuple[Any, ...], Decision]]:
        queue = self._queue
        batch: list[tuple[tuple[Any, ...], Decision]] = []
        while queue and len(batch) < count:
            batch.append(queue.popleft())
        return batch

    def _write(self, batch: Sequence[tuple[tuple[Any, ...], Decision]]) -> None:
        if not self.tracker.available():  # down: drop rather than pile up
            self.dropped += len(batch)
            return
        try:
            pipe = self._writer.get().pipeline(transaction=False)
            for decision_key, decision in batch:
                pipe.set(redis_key(digest(decision_key)), encode(decision), px=self._ttl_ms)
            pipe.execute()
        except redisio.ERRORS as exc:
            self._fault(exc)
            self.dropped += len(batch)
            return
        self.tracker.ok()
        self.written += len(batch)
