"""Hot reload: compile the policy folder aside, then swap it in whole.

A reload is triggered by a change under the folder (watchfiles, debounced),
by SIGHUP, or by the admin Reload RPC. A folder that fails to compile is
never swapped in: the old policy keeps serving and the holder records the
error for the admin info. Reloads run one at a time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import watchfiles

from pdp import metrics
from pdp.errors import PolicyIssue, PolicySetError
from pdp.logs import fields
from pdp.policy import CompiledPolicy
from pdp.service import PolicyHolder

log = logging.getLogger("pdp.reload")

Loader = Callable[[Path], CompiledPolicy]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    changed: bool
    version: str | None
    error: str | None = None
    issues: tuple[PolicyIssue, ...] = ()


def _default_loader(path: Path) -> CompiledPolicy:
    from pdp.loader import load_policy_dir

    return load_policy_dir(path)


class PolicyReloader:
    def __init__(
        self,
        holder: PolicyHolder,
        directory: Path,
        load: Loader = _default_loader,
        on_loaded: Callable[[CompiledPolicy], None] | None = None,
    ) -> None:
        self.holder = holder
        self.directory = directory
        self._load = load
        self.on_loaded = on_loaded
        self._lock = threading.Lock()

    def reload(self, trigger: str) -> ReloadResult:
        with self._lock:
            return self._reload(trigger)

    def reload_in_background(self, trigger: str) -> None:
        """For signal handlers, which must not block on a compile."""
        threading.Thread(target=self.reload, args=(trigger,), name="pdp-reload", daemon=True).start()

    def _reload(self, trigger: str) -> ReloadResult:
        try:
            policy = self._load(self.directory)
        except PolicySetError as exc:
            return self._failed(trigger, str(exc), tuple(exc.errors))
        except Exception as exc:  # unreadable folder etc.: keep serving, report it
            return self._failed(trigger, f"{type(exc).__name__}: {exc}", ())
        current = self.holder.current
        changed = current is None or current.version != policy.version
        if changed:
            self.holder.swap(policy)
        else:
            self.holder.recovered()
        if self.on_loaded is not None:
            self.on_loaded(policy)
        log.info(
            "policy loaded" if changed else "policy unchanged",
            extra=fields(trigger=trigger, version=policy.version, **_counts(policy)),
        )
        metrics.reload(success=True)
        return ReloadResult(True, changed, policy.version)

    def _failed(self, trigger: str, error: str, issues: tuple[PolicyIssue, ...]) -> ReloadResult:
        metrics.reload(success=False)
        self.holder.fail(error, issues)
        current = self.holder.current
        version = current.version if current else None
        log.error(
            "policy failed to load; still serving the previous version",
            extra=fields(
                trigger=trigger, serving=version, error=error,
                issues=[{"file": i.file, "line": i.line, "column": i.column, "message": i.message}
                        for i in issues],
            ),
        )
        return ReloadResult(False, False, version, error, issues)

    def watch(self, debounce_ms: int) -> PolicyWatcher:
        watcher = PolicyWatcher(self, debounce_ms)
        watcher.start()
        return watcher


def _counts(policy: CompiledPolicy) -> dict[str, int]:
    return {k: v for k, v in policy.summary().items() if isinstance(v, int)}


class PolicyWatcher:
    """A thread that reloads when files under the folder change, after they settle."""

    def __init__(self, reloader: PolicyReloader, debounce_ms: int) -> None:
        self._reloader = reloader
        self._debounce_ms = debounce_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pdp-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        directory = self._reloader.directory
        try:
            for changes in watchfiles.watch(
                directory, debounce=self._debounce_ms, stop_event=self._stop,
                step=min(50, self._debounce_ms), raise_interrupt=False, rust_timeout=500,
            ):
                self._reloader.reload(f"{len(changes)} file change(s)")
        except Exception:  # the watcher dying must not take the server down
            log.exception("policy watcher stopped", extra=fields(directory=str(directory)))
