"""Revoked token ids (`jti`), each remembered until the token would expire anyway."""

from __future__ import annotations

import threading
import time
from typing import Protocol

import redis


class RevocationUnavailable(Exception):
    """The revocation list could not be read; the caller decides fail open or closed."""


class RevocationList(Protocol):
    def is_revoked(self, jti: str) -> bool: ...
    def revoke(self, jti: str, until: float) -> None:
        """Refuse tokens with this `jti` until `until` (unix seconds, the token's exp)."""


class MemoryRevocationList:
    """For a single process and for tests; entries drop out once past their expiry."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def is_revoked(self, jti: str) -> bool:
        until = self._until.get(jti)
        if until is None:
            return False
        if until > time.time():
            return True
        with self._lock:
            self._until.pop(jti, None)
        return False

    def revoke(self, jti: str, until: float) -> None:
        if until <= time.time():
            return  # the token is expired already; nothing to remember
        with self._lock:
            self._until[jti] = max(until, self._until.get(jti, 0.0))


class RedisRevocationList:
    """One key per jti (`<prefix><jti>`), expiring at the token's exp, shared by replicas."""

    def __init__(self, url: str, prefix: str = "pdp:revoked:", timeout: float = 0.25) -> None:
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._prefix = prefix

    def _key(self, jti: str) -> str:
        return self._prefix + jti

    def is_revoked(self, jti: str) -> bool:
        try:
            return bool(self._redis.exists(self._key(jti)))
        except redis.RedisError as exc:
            raise RevocationUnavailable(type(exc).__name__) from None

    def revoke(self, jti: str, until: float) -> None:
        if until <= time.time():
            return
        self._redis.set(self._key(jti), b"1", exat=int(until) + 1)

    def close(self) -> None:
        self._redis.close()
