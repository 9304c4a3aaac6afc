"""Verified tokens kept in process, so a hot token is not verified on every call.

Keyed by the token's sha256 (the token itself is never kept as a key). An entry
lives until the token's exp (at most `max_ttl`), and is only used while the key
that verified it is still the issuer's key for that `kid`: a rotation that
retires the key retires the cached tokens too.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from pdp.identity.claims import TokenIdentity
from pdp.identity.keys import Key


@dataclass(frozen=True, slots=True)
class CachedToken:
    identity: TokenIdentity
    kid: str | None
    key: Key
    until: float


class VerifiedTokenCache:
    def __init__(self, max_entries: int = 10_000, max_ttl: float = 3600.0) -> None:
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self._entries: OrderedDict[bytes, CachedToken] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> CachedToken | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry.until <= time.time():
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return entry

    def put(self, digest: bytes, identity: TokenIdentity, kid: str | None, key: Key) -> None:
        until = min(identity.expires_at, time.time() + self.max_ttl)
        if self.max_entries <= 0 or until <= time.time():
            return
        with self._lock:
            self._entries[digest] = CachedToken(identity, kid, key, until)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def discard(self, digest: bytes) -> None:
        with self._lock:
            self._entries.pop(digest, None)

    def __len__(self) -> int:
        return len(self._entries)
