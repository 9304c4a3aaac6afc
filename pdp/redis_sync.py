"""What one replica follows in Redis: the current policy bundle and the role assignments.

`ReplicaSync.from_config` builds the parts the settings ask for (nothing
without `--redis-url`); the server plugs `policy_loader` into its reloader
and `assignments` into its decision service, calls `start` before the first
policy load (so a replica reports SERVING with its assignments in), and
`stop` on shutdown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdp import redisio
from pdp.assignments import AssignmentFollower, AssignmentSnapshot, AssignmentStore
from pdp.bundle_follower import BundleFollower, BundleLoader
from pdp.bundles import BundleStore
from pdp.config import Config
from pdp.reload import PolicyReloader
from pdp.service import PolicyHolder

SOURCES = ("dir", "redis")
# Not on the decision path: a bundle read may take a while on a busy server.
SYNC_TIMEOUT_S = 2.0


def config_problem(config: Config) -> str | None:
    """Why these settings cannot run, or None."""
    if config.policy.source not in SOURCES:
        return f"policy.source: {config.policy.source!r} is neither dir nor redis"
    if config.policy.source == "redis" and not config.redis.url:
        return "policy.source redis needs redis.url (--redis-url)"
    if config.redis.url:
        try:
            redisio.parse(config.redis.url)
        except redisio.RedisUrlError as exc:
            return f"redis.url: {exc}"
    return None


class DeferredClient:
    """A redis-py client made on first use and remade after a failed attempt: a Redis
    Cluster down at start (its client reads the slot map when made) is then a fault
    the followers retry, not a crash at start."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self._lazy = redisio.LazyClient(url, timeout_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lazy.get(), name)

    def close(self) -> None:
        self._lazy.close()


@dataclass(slots=True)
class ReplicaSync:
    policy_loader: BundleLoader | None = None
    assignments: AssignmentSnapshot | None = None
    resync_seconds: float = 1.0
    client: DeferredClient | None = None
    bundles: BundleFollower | None = None
    assignment_follower: AssignmentFollower | None = None

    @classmethod
    def from_config(cls, config: Config) -> ReplicaSync:
        url = config.redis.url
        if not url:
            return cls()
        client = DeferredClient(url, SYNC_TIMEOUT_S)
        loader = BundleLoader(BundleStore(client)) if config.policy.source == "redis" else None
        snapshot = AssignmentSnapshot() if config.redis.assignments else None
        return cls(loader, snapshot, config.redis.resync_seconds, client)

    @property
    def publisher(self) -> Callable[[str], tuple[str, float] | None] | None:
        """Who published a served version (pdp.observability's Publisher), with bundles."""
        return self.policy_loader.published if self.policy_loader is not None else None

    @property
    def uses_bundles(self) -> bool:
        return self.policy_loader is not None

    def reloader(self, holder: PolicyHolder, directory: Path) -> PolicyReloader:
        """The reloader of the policy source: the folder, or the current bundle in Redis."""
        if self.policy_loader is None:
            return PolicyReloader(holder, directory)
        return PolicyReloader(holder, directory, load=self.policy_loader)

    def start(self, reloader: PolicyReloader) -> None:
        """Read the assignments once, then follow Redis in background threads (each
        reconnects on its own)."""
        if self.client is None:
            return
        if self.policy_loader is not None:
            self.bundles = BundleFollower(
                self.policy_loader.store, self.policy_loader, reloader, self.resync_seconds
            )
            self.bundles.start()
        if self.assignments is not None:
            self.assignment_follower = AssignmentFollower(
                AssignmentStore(self.client), self.assignments, self.resync_seconds
            )
            with contextlib.suppress(*redisio.ERRORS):  # Redis down: the follower retries
                self.assignment_follower.reload("startup")
            self.assignment_follower.start()

    def stop(self) -> None:
        for follower in (self.bundles, self.assignment_follower):
            if follower is not None:
                follower.stop()
        if self.client is not None:
            self.client.close()
