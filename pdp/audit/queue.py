"""The bounded queue between the decision path and the background writer.

`put` is all a decision pays: a length check and a deque append (no lock
wait, no formatting, no I/O). The writer thread wakes every
`flush_interval_s`, as soon as a full batch is waiting, and at once on
close; it takes what is waiting in batches of up to `batch_size` and hands
each batch to `handle`. Few, large batches are what keeps auditing cheap:
each wake of a background thread in a busy server costs far more than its
own few microseconds of work (the GIL is handed over under load), and each
batch costs the writer process a pipe read and a report.

When the queue is full:
- "drop" (the default): the item is dropped and counted at once, so
  auditing never slows a decision; the drop count is a metric to alert on.
- "block": the caller waits up to `block_s` for room, then drops and counts.
`close` stops taking items, drains what is queued, and waits for the writer.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from pdp import metrics
from pdp.audit.tally import Tally

T = TypeVar("T")
log = logging.getLogger("pdp.audit")
_BLOCK_POLL_S = 0.0005


class BatchQueue(Generic[T]):
    def __init__(
        self,
        handle: Callable[[list[T]], None],
        *,
        size: int,
        batch_size: int,
        flush_interval_s: float,
        when_full: str = "drop",
        block_s: float = 0.005,
    ) -> None:
        self._handle = handle
        self._items: collections.deque[T] = collections.deque()
        self._size = size
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._block_s = block_s if when_full == "block" else 0.0
        self._wake = threading.Event()
        self._closed = False
        self.dropped = Tally()
        self._thread = threading.Thread(target=self._run, name="pdp-audit-writer", daemon=True)
        self._thread.start()

    def depth(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """Queue `item`; False (and counted) when it was dropped."""
        if self._closed:
            return self.drop("closed")
        # The length check and the append are not one atomic step: concurrent
        # callers can overshoot `size` by at most their number, which is fine.
        if len(self._items) >= self._size and not self._wait_for_room():
            return self.drop("queue_full")
        self._items.append(item)
        if len(self._items) >= self._batch_size and not self._wake.is_set():
            self._wake.set()  # a full batch: no need to wait out the interval
        return True

    def _wait_for_room(self) -> bool:
        if self._block_s <= 0:
            return False
        deadline = time.monotonic() + self._block_s
        while time.monotonic() < deadline:
            time.sleep(_BLOCK_POLL_S)
            if len(self._items) < self._size:
                return True
        return False

    def drop(self, reason: str, count: int = 1) -> bool:
        """Count `count` items lost (here or further down the line)."""
        self.dropped.add(count)
        metrics.audit_dropped(reason, count)
        return False

    def _run(self) -> None:
        while True:
            stopping = self._closed
            self._drain()
            metrics.audit_queue_depth_now(len(self._items))
            if stopping:
                return
            self._wake.wait(self._interval)
            self._wake.clear()  # close() set it after setting _closed: seen at the top

    def _drain(self) -> None:
        while self._items:
            batch: list[T] = []
            try:
                while len(batch) < self._batch_size:
                    batch.append(self._items.popleft())
            except IndexError:
                pass
            try:
                self._handle(batch)
            except Exception:  # the writer must outlive any bad batch
                log.exception("audit writer could not handle a batch of %d", len(batch))
                self.drop("error", len(batch))

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop taking items, write out everything queued, stop the writer."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("audit writer still busy after %.0fs; %d record(s) not written",
                        timeout_s, len(self._items))
        elif self._items:  # put by callers racing the close, after the last drain
            self.drop("closed", len(self._items))
            self._items.clear()
