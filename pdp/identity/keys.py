"""Where an issuer's verification keys come from, with rotation without restart.

A JWKS file is re-read when its mtime changes (checked at most once per
`reload_interval`). A JWKS URL is fetched by pyjwt's PyJWKClient on a
background thread, never on a request for a kid it knows: every
`jwks_lifespan`, sooner after a failure (keeping the last good set meanwhile),
and at once for an unknown `kid` no more often than the cooldown. Several keys
by `kid` are valid at once; a key removed from the set stops verifying at the
next successful read. Symmetric (`oct`) keys in a JWKS are ignored: a shared
secret is only ever taken from explicit configuration.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Protocol, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt import PyJWK, PyJWKClient, PyJWKSet
from jwt.exceptions import PyJWKClientConnectionError, PyJWKClientError, PyJWTError

from pdp.identity.config import IdentityConfigError, IssuerConfig

log = logging.getLogger(__name__)

PublicKey: TypeAlias = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)
Key: TypeAlias = PyJWK | PublicKey | bytes


class KeySource(Protocol):
    def find(self, kid: str | None) -> Key | None:
        """The key for `kid` now (may re-read or refetch the set), or None."""

    def knows(self, kid: str) -> bool:
        """Whether `kid` is in the set already loaded (never fetches)."""


class _WatchedFile:
    """Tells when a file changed, looking at it at most once per interval."""

    def __init__(self, path: Path, interval: float) -> None:
        self.path = path
        self.interval = interval
        self._next_check = 0.0
        self._stamp: tuple[int, int, int] | None = None

    def changed(self) -> bool:
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self.interval
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        return True


def _signing_keys(jwk_set: PyJWKSet) -> dict[str | None, PyJWK]:
    keys: dict[str | None, PyJWK] = {}
    for key in jwk_set.keys:
        if key.key_type != "oct" and key.public_key_use in ("sig", None):
            keys[key.key_id] = key
    return keys


class JwksFileSource:
    def __init__(self, path: Path, reload_interval: float) -> None:
        self._file = _WatchedFile(path, reload_interval)
        self._lock = threading.Lock()
        self._keys: dict[str | None, PyJWK] = {}
        if not self._reload():
            raise IdentityConfigError(f"cannot read a JWKS from {path}")

    def _reload(self) -> bool:
        with self._lock:
            if not self._file.changed():
                return False
            try:
                text = self._file.path.read_text(encoding="utf-8")
                self._keys = _signing_keys(PyJWKSet.from_json(text))
            except (OSError, ValueError, PyJWTError) as exc:
                # A half-written file must not wipe the keys: keep serving the old set.
                log.warning("JWKS file %s not reloaded: %s", self._file.path, exc)
                return False
            log.info("JWKS file %s loaded: %d keys", self._file.path, len(self._keys))
            return True

    def find(self, kid: str | None) -> Key | None:
        self._reload()
        keys = self._keys
        if kid is None:
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    def knows(self, kid: str) -> bool:
        return kid in self._keys


# Seconds: the shortest wait between two background fetches, to spare the IdP.
MIN_REFRESH_INTERVAL = 1.0


def _why(exc: Exception) -> str:
    """A fetch failure for the log: pyjwt's key errors may quote key material."""
    return str(exc) if isinstance(exc, PyJWKClientConnectionError) else type(exc).__name__


class _JwksRefresher:
    """Holds one JWKS, fetched on a daemon thread every `lifespan` or at once when asked.

    A failed fetch keeps the last good set and is retried every `cooldown`
    (within [MIN_REFRESH_INTERVAL, lifespan]); the log says when fetching
    starts failing and when it recovers, not every attempt. It holds no
    reference to its JwksUrlSource, so `stop` can run when that is dropped.
    """

    def __init__(self, client: PyJWKClient, lifespan: float, cooldown: float, timeout: float) -> None:
        self.keys: dict[str | None, PyJWK] = {}  # replaced whole, read without a lock
        self._client = client
        self._lifespan = max(MIN_REFRESH_INTERVAL, lifespan)
        self._retry = max(MIN_REFRESH_INTERVAL, min(cooldown, lifespan))
        self._cooldown, self._timeout = cooldown, timeout
        self._cond = threading.Condition()
        self._started = self._finished = 0  # fetch attempts
        self._wanted = 0  # the attempt a request asked for
        self._last_attempt = -math.inf
        self._failing = False
        self._stopped = False

    def start(self) -> None:
        """Fetches once now (at server start, not on a request), then in the background."""
        ok = self._fetch()
        threading.Thread(target=self._run, args=(ok,), name="pdp-jwks", daemon=True).start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def find(self, kid: str) -> PyJWK | None:
        key = self.keys.get(kid)
        if key is None and self._await_fetch(kid):
            key = self.keys.get(kid)
        return key

    def _await_fetch(self, kid: str) -> bool:
        """Waits, at most `timeout`, for a fetch a request asked for; False if none is due.

        A fetch is asked for only if the last attempt began at least `cooldown`
        ago; requests for unknown kids meanwhile wait for that same fetch.
        """
        with self._cond:
            if kid in self.keys:  # it came while this request was on its way here
                return True
            if self._wanted <= self._finished:
                if time.monotonic() - self._last_attempt < self._cooldown:
                    return False
                self._wanted = self._started + 1
                self._cond.notify_all()
            want = self._wanted
            return self._cond.wait_for(lambda: self._finished >= want, self._timeout)

    def _run(self, ok: bool) -> None:
        while self._sleep(self._lifespan if ok else self._retry):
            ok = self._fetch()

    def _sleep(self, seconds: float) -> bool:
        """Waits `seconds` or until a request asks for a fetch; False once stopped."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopped or self._wanted > self._started, seconds)
            return not self._stopped

    def _fetch(self) -> bool:
        with self._cond:
            self._started += 1
            self._last_attempt = time.monotonic()
        try:
            return self._load()
        finally:
            with self._cond:
                self._finished += 1
                self._cond.notify_all()

    def _load(self) -> bool:
        try:
            keys = _signing_keys(self._client.get_jwk_set(refresh=True))
        except Exception as exc:  # the refresher must outlive any odd reply
            if not self._failing:
                log.warning("JWKS %s not fetched (%s): keeping its %d keys, retrying every %gs",
                            self._client.uri, _why(exc), len(self.keys), self._retry)
            self._failing = True
            return False
        level = logging.INFO if self._failing or self._started == 1 else logging.DEBUG
        log.log(level, "JWKS %s fetched: %d keys", self._client.uri, len(keys))
        self.keys, self._failing = keys, False
        return True


class JwksUrlSource:
    """Keys from an issuer's JWKS URL, fetched off the request path.

    A PDP must not stall or deny because its IdP is slow or down, so a request
    for a known `kid` is a dict lookup: the refresher refetches the set in the
    background and keeps serving the last good one while the IdP fails. An
    unknown `kid` (a key just rotated in) asks for a fetch now and waits for
    it, at most `timeout`, but only if the last attempt is at least `cooldown`
    old, so made-up kids neither hammer the IdP nor hold requests up.
    """

    def __init__(self, url: str, lifespan: float, cooldown: float, timeout: float) -> None:
        try:
            client = PyJWKClient(url, cache_jwk_set=False, timeout=timeout)
        except PyJWKClientError as exc:
            raise IdentityConfigError(str(exc)) from None
        self._refresher = _JwksRefresher(client, lifespan, cooldown, timeout)
        weakref.finalize(self, self._refresher.stop)  # a dropped source ends its thread
        self._refresher.start()

    def find(self, kid: str | None) -> Key | None:
        return None if kid is None else self._refresher.find(kid)

    def knows(self, kid: str) -> bool:
        return kid in self._refresher.keys


# Which raw key type serves which algorithm family (PyJWK keys carry their own).
KEY_TYPES: dict[str, tuple[type, ...]] = {
    "RS": (rsa.RSAPublicKey,),
    "PS": (rsa.RSAPublicKey,),
    "ES": (ec.EllipticCurvePublicKey,),
    "Ed": (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey),
    "HS": (bytes,),
}


def fits(key: Key, alg: str) -> bool:
    """Whether `key` can verify `alg` at all: an RSA key never checks an HS256 MAC."""
    if isinstance(key, PyJWK):
        return key.algorithm_name == alg
    return isinstance(key, KEY_TYPES.get(alg[:2], ()))


def _load_public_key(data: bytes) -> PublicKey:
    key: object = (
        x509.load_pem_x509_certificate(data).public_key()
        if b"BEGIN CERTIFICATE" in data
        else serialization.load_pem_public_key(data)
    )
    if not isinstance(key, PublicKey):
        raise ValueError(f"unsupported key type {type(key).__name__}")
    return key


class PemKeySource:
    """One public key (or certificate) in a PEM file; any `kid` selects it."""

    def __init__(self, path: Path, reload_interval: float) -> None:
        self._file = _WatchedFile(path, reload_interval)
        self._lock = threading.Lock()
        self._file.changed()
        try:
            self._key = _load_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise IdentityConfigError(f"cannot read a public key from {path}: {exc}") from None

    def find(self, kid: str | None) -> Key | None:
        with self._lock:
            if self._file.changed():
                try:
                    self._key = _load_public_key(self._file.path.read_bytes())
                except (OSError, ValueError) as exc:
                    log.warning("public key %s not reloaded: %s", self._file.path, exc)
        return self._key

    def knows(self, kid: str) -> bool:
        return False


class SecretSource:
    """An explicitly configured HS* shared secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def find(self, kid: str | None) -> Key | None:
        return self._secret

    def knows(self, kid: str) -> bool:
        return False


def key_source(issuer: IssuerConfig) -> KeySource:
    if issuer.jwks_file is not None:
        return JwksFileSource(issuer.jwks_file, issuer.reload_interval)
    if issuer.jwks_url is not None:
        return JwksUrlSource(
            issuer.jwks_url, issuer.jwks_lifespan, issuer.jwks_refresh_cooldown,
            issuer.jwks_timeout,
        )
    if issuer.public_key_file is not None:
        return PemKeySource(issuer.public_key_file, issuer.reload_interval)
    assert issuer.hmac_secret is not None  # IssuerConfig.validate guarantees one source
    return SecretSource(issuer.hmac_secret)
