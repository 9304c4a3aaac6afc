"""The decision path every front end shares: policy -> cache -> engine -> audit.

Front ends (gRPC, Envoy ext_authz, AuthZEN HTTP, the CLI) turn their input
into a `Request` and a `CallMeta`, call `DecisionService.check`, and turn the
`Outcome` back into their own response. Nothing here knows a transport.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pdp.engine import decide
from pdp.errors import PolicyIssue
from pdp.model import Decision, Request, deny_because
from pdp.policy import CompiledPolicy


def _id_counter() -> itertools.count[int]:
    # High 64 bits random per process, low 64 bits a counter: ids never repeat
    # within a process, and two processes (workers, restarts, replicas) share a
    # prefix with probability about n²/2^65 for n processes ever started.
    return itertools.count(int.from_bytes(os.urandom(8)) << 64)


_ids = _id_counter()


def _reseed_after_fork() -> None:
    global _ids
    _ids = _id_counter()


os.register_at_fork(after_in_child=_reseed_after_fork)


def new_decision_id() -> str:
    """32 hex digits, unique per decision; no system call (next() on a count is atomic under the GIL)."""
    return f"{next(_ids):032x}"


@dataclass(frozen=True, slots=True)
class CallMeta:
    """Who asked and through which door; for the audit record, never for the decision."""

    frontend: str
    caller: str | None = None
    request_id: str | None = None


@dataclass(slots=True)
class Outcome:
    """One per decision, so a plain slots dataclass like Decision; never changed."""

    decision: Decision
    decision_id: str
    cached: bool
    latency_s: float


class AuditRecorder(Protocol):
    def record(self, request: Request, outcome: Outcome, meta: CallMeta) -> None: ...


class DecisionCache(Protocol):
    def get(self, policy: CompiledPolicy, request: Request) -> Decision | None: ...
    def put(self, policy: CompiledPolicy, request: Request, decision: Decision) -> None: ...


class Assignments(Protocol):
    """Roles and properties assigned outside the policy files (pdp.assignments); no I/O."""

    def apply(self, request: Request) -> Request: ...


class PolicyHolder:
    """The one reference to the policy being served; a reload swaps it whole."""

    def __init__(self, policy: CompiledPolicy | None = None) -> None:
        self._policy = policy
        self._lock = threading.Lock()
        self.loaded_at: float | None = time.time() if policy else None
        # The last load that failed since the current policy was loaded.
        self.last_error: str | None = None
        self.last_issues: tuple[PolicyIssue, ...] = ()
        self.failed_at: float | None = None
        # Told True when a load succeeds and False when one fails (health checking).
        self.on_status: Callable[[bool], None] | None = None

    @property
    def current(self) -> CompiledPolicy | None:
        return self._policy

    def swap(self, policy: CompiledPolicy) -> None:
        with self._lock:
            self._policy = policy
            self.loaded_at = time.time()
            self._clear()
        self._tell(True)

    def recovered(self) -> None:
        """The folder compiles again, to the version already served."""
        with self._lock:
            self._clear()
        self._tell(True)

    def fail(self, error: str, issues: Sequence[PolicyIssue] = ()) -> None:
        with self._lock:
            self.last_error = error
            self.last_issues = tuple(issues)
            self.failed_at = time.time()
        self._tell(False)

    def _tell(self, loaded: bool) -> None:
        if self.on_status is not None:
            self.on_status(loaded)

    def _clear(self) -> None:
        self.last_error = None
        self.last_issues = ()
        self.failed_at = None


class DecisionService:
    def __init__(
        self,
        holder: PolicyHolder,
        cache: DecisionCache | None = None,
        audit: AuditRecorder | None = None,
        assignments: Assignments | None = None,
    ) -> None:
        self.holder = holder
        self.cache = cache
        self.audit = audit
        self.assignments = assignments

    def check(self, request: Request, meta: CallMeta) -> Outcome:
        return self._check(self.holder.current, request, meta)

    def check_many(self, requests: Sequence[Request], meta: CallMeta) -> list[Outcome]:
        """Decide each request in order, all against one policy version."""
        policy = self.holder.current
        return [self._check(policy, request, meta) for request in requests]

    def _check(self, policy: CompiledPolicy | None, request: Request, meta: CallMeta) -> Outcome:
        start = time.perf_counter()
        decision, cached = self._decide(policy, request)
        outcome = Outcome(decision, new_decision_id(), cached, time.perf_counter() - start)
        if self.audit is not None:
            self.audit.record(request, outcome, meta)
        return outcome

    def _decide(self, policy: CompiledPolicy | None, request: Request) -> tuple[Decision, bool]:
        if policy is None:
            return deny_because("no policy is loaded", ""), False
        try:
            if self.assignments is not None:  # before the cache: its key holds the merged roles
                request = self.assignments.apply(request)
            if self.cache is not None:
                hit = self.cache.get(policy, request)
                if hit is not None:
                    return hit, True
            decision = decide(policy, request)
            if self.cache is not None:
                self.cache.put(policy, request, decision)
            return decision, False
        except Exception as exc:  # fail closed: an internal error is a DENY, never a crash
            return deny_because(f"internal error: {type(exc).__name__}", policy.version), False
