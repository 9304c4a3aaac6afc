"""A Redis pub/sub channel followed by a background thread that never gives up.

The thread subscribes, then calls `resync` (catch up on whatever was missed
while not subscribed), then hands each message to `on_message`, and calls
`resync` again every `resync_seconds` as a safety net. Any Redis error drops
the connection; the thread reconnects with a growing backoff and resyncs.
The fault is counted and logged by a `FaultTracker`: once when it starts and
once when it ends, not per retry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pdp import redisio
from pdp.logs import fields
from pdp.redisio import FaultTracker

log = logging.getLogger("pdp.subscription")

BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 2.0
POLL_S = 0.2


class Subscription:
    def __init__(
        self,
        client: Any,
        channel: str,
        on_message: Callable[[bytes], None],
        resync: Callable[[str], None],
        faults: FaultTracker,
        resync_seconds: float = 5.0,
        name: str = "pdp-subscription",
    ) -> None:
        self._client = client
        self._channel = channel
        self._on_message = on_message
        self._resync = resync
        self._resync_seconds = resync_seconds
        self._faults = faults
        self._stop = threading.Event()
        self._subscribed = False
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        while not self._stop.is_set():
            self._subscribed = False
            try:
                self._follow()
                return  # stopped
            except redisio.ERRORS as exc:
                self._faults.fault(exc)
            except Exception:  # a bug in a callback must not end the thread
                log.exception("redis subscription callback failed", extra=fields(channel=self._channel))
            backoff = BACKOFF_MIN_S if self._subscribed else min(backoff * 2, BACKOFF_MAX_S)
            self._stop.wait(backoff)

    def _follow(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self._channel)
            self._resync("subscribed")
            self._faults.ok()
            self._subscribed = True
            self.connected.set()
            next_resync = time.monotonic() + self._resync_seconds
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=POLL_S)
                if message is not None and message.get("type") == "message":
                    self._on_message(message["data"])
                if time.monotonic() >= next_resync:
                    pubsub.ping()  # a dead connection shows here, not only on the next message
                    self._resync("periodic")
                    next_resync = time.monotonic() + self._resync_seconds
        finally:
            self.connected.clear()
            pubsub.close()
