"""Which decisions are recorded: one ALLOW in N, one DENY in M (default: all)."""

from __future__ import annotations

import itertools

from pdp import metrics
from pdp.audit.tally import Tally


class Sampler:
    def __init__(self, allow_every: int = 1, deny_every: int = 1) -> None:
        self._every = {True: allow_every, False: deny_every}
        # next() on itertools.count is atomic under the GIL: no lock on the hot path.
        self._seen = {True: itertools.count(), False: itertools.count()}
        self._skipped = {True: Tally(), False: Tally()}

    def keep(self, allowed: bool) -> bool:
        every = self._every[allowed]
        if every == 1:
            return True
        if every and next(self._seen[allowed]) % every == 0:
            return True
        self._skipped[allowed].add()
        metrics.audit_sampled_out("ALLOW" if allowed else "DENY")
        return False

    def sampled_out(self) -> dict[str, int]:
        """Decisions skipped so far, by decision."""
        return {"ALLOW": self._skipped[True].value, "DENY": self._skipped[False].value}
