"""A replica serving the current bundle in Redis (`--policy-source redis`).

`BundleLoader` is the reloader's loader: it reads the current version,
loads and verifies that bundle, and compiles it. The reloader does the rest
as for a folder: a bundle that is corrupt, wrongly hashed or does not compile
is never swapped in, the old version keeps serving and the error shows in
the admin PolicyInfo. `BundleFollower` triggers the reloader on each
announcement, after each reconnect and periodically, so a replica that
missed an announcement catches up.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pdp.bundles import CHANNEL, BundleError, BundleInfo, BundleStore
from pdp.errors import PolicyIssue, PolicySetError
from pdp.loader import compile_sources
from pdp.logs import fields
from pdp.policy import CompiledPolicy
from pdp.redisio import FaultTracker
from pdp.reload import PolicyReloader
from pdp.subscription import Subscription

log = logging.getLogger("pdp.bundles")


def source_label(version: str) -> str:
    """What PolicyInfo shows as the policy's source."""
    return f"redis bundle {version}"


class BundleLoader:
    """Loader for PolicyReloader: the current bundle, verified and compiled (the path is unused)."""

    def __init__(self, store: BundleStore) -> None:
        self.store = store
        self._last: CompiledPolicy | None = None
        self._info: BundleInfo | None = None
        # The last version refused for its content (not for a Redis error): not retried.
        self.refused: str | None = None

    def __call__(self, _path: Path) -> CompiledPolicy:
        version = self.store.current_version()
        if version is None:
            raise PolicySetError([PolicyIssue("redis", 0, 0, "no bundle is current (pdp publish)")])
        if self._last is not None and self._last.version == version:
            return self._last  # already compiled; nothing to fetch
        try:
            bundle = self.store.load(version)
            policy = compile_sources(list(bundle.sources), source_dir=source_label(version))
        except BundleError as exc:
            self.refused = version
            raise PolicySetError([PolicyIssue(f"redis bundle {version}", 0, 0, str(exc))]) from None
        except PolicySetError:
            self.refused = version
            raise
        self._last = policy
        self._info = bundle.info
        return policy

    def published(self, version: str) -> tuple[str, float] | None:
        """(published_by, published_at) of a loaded version, for the audit and metrics source."""
        info = self._info
        if info is None or info.version != version:
            return None
        return info.published_by, info.published_at


class BundleFollower:
    """Keeps the holder on the current bundle: announcements, reconnects and a periodic check."""

    def __init__(
        self, store: BundleStore, loader: BundleLoader, reloader: PolicyReloader, resync_seconds: float
    ) -> None:
        self._store = store
        self._loader = loader
        self._reloader = reloader
        self.faults = FaultTracker("bundles")
        self._subscription = Subscription(
            store.redis, CHANNEL, self._announced, self.sync, self.faults, resync_seconds,
            name="pdp-bundles",
        )

    @property
    def subscription(self) -> Subscription:
        return self._subscription

    def start(self) -> None:
        self._subscription.start()

    def stop(self) -> None:
        self._subscription.stop()

    def _announced(self, data: Any) -> None:
        version = data.decode() if isinstance(data, bytes) else str(data)
        log.info("bundle announced", extra=fields(version=version))
        self._loader.refused = None  # an announcement is worth a retry: it may be a repaired bundle
        self.sync("announcement")

    def sync(self, trigger: str) -> None:
        """Swap to the current version if it is not the one served (Redis errors propagate)."""
        version = self._store.current_version()
        holder = self._reloader.holder
        served = holder.current
        if version is None or version == self._loader.refused:
            return  # nothing published, or already refused (and logged) once
        if served is not None and served.version == version:
            if holder.last_error is not None:
                holder.recovered()  # e.g. a Redis error during an earlier load
            return
        self._reloader.reload(f"bundle {trigger}")
