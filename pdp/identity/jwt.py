"""Bearer token verification with pyjwt, one key set per trusted issuer.

The unverified `iss` only chooses which issuer's keys and rules apply; the
token is then verified in full (signature with an allowed algorithm, exp, nbf,
iat, iss, aud, required claims) and its jti checked against the revocation
list. Every failure is a `Rejection`, never an exception, and the token itself
is never logged.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import exceptions as jwt_errors

from pdp.identity.cache import VerifiedTokenCache
from pdp.identity.claims import ClaimError, TokenIdentity, map_claims
from pdp.identity.config import IdentityConfig, IssuerConfig
from pdp.identity.keys import Key, KeySource, fits, key_source
from pdp.identity.reasons import Rejection
from pdp.identity.revocation import RevocationList, RevocationUnavailable

log = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = 16 * 1024

# pyjwt's errors -> our reasons; subclasses come before their bases.
ERRORS: tuple[tuple[type[Exception], Rejection], ...] = (
    (jwt_errors.ExpiredSignatureError, Rejection.EXPIRED),
    (jwt_errors.ImmatureSignatureError, Rejection.NOT_YET_VALID),
    (jwt_errors.InvalidAudienceError, Rejection.WRONG_AUDIENCE),
    (jwt_errors.InvalidIssuerError, Rejection.WRONG_ISSUER),
    (jwt_errors.InvalidSignatureError, Rejection.BAD_SIGNATURE),
    (jwt_errors.InvalidAlgorithmError, Rejection.ALGORITHM_NOT_ALLOWED),
    # A key that cannot serve the token's algorithm (an EC key for RS256...).
    (jwt_errors.InvalidKeyError, Rejection.ALGORITHM_NOT_ALLOWED),
)


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    config: IssuerConfig
    keys: KeySource


def _rejection(exc: jwt_errors.PyJWTError) -> Rejection:
    if isinstance(exc, jwt_errors.MissingRequiredClaimError):
        return Rejection.WRONG_AUDIENCE if exc.claim == "aud" else Rejection.MALFORMED
    for kind, rejection in ERRORS:
        if isinstance(exc, kind):
            return rejection
    return Rejection.MALFORMED


class TokenVerifier:
    def __init__(
        self,
        config: IdentityConfig,
        revocations: RevocationList | None = None,
        sources: Mapping[str, KeySource] | None = None,
    ) -> None:
        self.config = config
        self.revocations = revocations
        self.cache = VerifiedTokenCache(config.cache_size)
        sources = sources or {}
        self.issuers = {
            i.issuer: TrustedIssuer(i, sources.get(i.issuer) or key_source(i))
            for i in config.issuers
        }

    def verify(self, token: str) -> TokenIdentity | Rejection:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            return Rejection.MALFORMED
        try:
            return self._verify(token)
        except Exception as exc:  # fail closed; the traceback could quote the token
            log.error("token verification failed: %s", type(exc).__name__)
            return Rejection.MALFORMED

    def _verify(self, token: str) -> TokenIdentity | Rejection:
        digest = hashlib.sha256(token.encode()).digest()
        entry = self.cache.get(digest)
        if entry is not None and self._key_unchanged(entry.identity.issuer, entry.kid, entry.key):
            identity = entry.identity
        else:
            result = self._verify_fully(token)
            if isinstance(result, Rejection):
                self.cache.discard(digest)
                return result
            identity, kid, key = result
            self.cache.put(digest, identity, kid, key)
        return self._check_revoked(identity)

    def _key_unchanged(self, issuer: str, kid: str | None, key: Key) -> bool:
        trusted = self.issuers.get(issuer)
        return trusted is not None and trusted.keys.find(kid) is key

    def _check_revoked(self, identity: TokenIdentity) -> TokenIdentity | Rejection:
        if identity.jti is None or self.revocations is None:
            return identity
        try:
            revoked = self.revocations.is_revoked(identity.jti)
        except RevocationUnavailable as exc:
            log.warning("revocation list unavailable (%s)", exc)
            if self.config.revocation_fail_open:
                return identity
            return Rejection.REVOCATION_UNAVAILABLE
        return Rejection.REVOKED if revoked else identity

    def _verify_fully(self, token: str) -> tuple[TokenIdentity, str | None, Key] | Rejection:
        try:
            # One unverified parse picks the issuer; nothing from it is trusted yet.
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
        except jwt_errors.PyJWTError:
            return Rejection.MALFORMED
        header, payload = unverified["header"], unverified["payload"]
        iss, alg, kid = payload.get("iss"), header.get("alg"), header.get("kid")
        trusted = self.issuers.get(iss) if isinstance(iss, str) else None
        if trusted is None:
            return self._reject(Rejection.UNKNOWN_ISSUER, iss, kid)
        if not isinstance(alg, str) or alg not in trusted.config.algorithms:
            return self._reject(Rejection.ALGORITHM_NOT_ALLOWED, iss, kid)
        if kid is not None and not isinstance(kid, str):
            return self._reject(Rejection.MALFORMED, iss, kid)
        key = trusted.keys.find(kid)
        if key is None:
            return self._reject(self._why_no_key(trusted, kid), iss, kid)
        if not fits(key, alg):
            return self._reject(Rejection.ALGORITHM_NOT_ALLOWED, iss, kid)
        try:
            claims = self._decode(token, trusted.config, alg, key)
            return map_claims(trusted.config, claims), kid, key
        except jwt_errors.PyJWTError as exc:
            return self._reject(_rejection(exc), iss, kid)
        except ClaimError:
            return self._reject(Rejection.MALFORMED, iss, kid)
        except (TypeError, ValueError) as exc:  # fail closed on anything pyjwt lets through
            log.warning("token verification error: %s", type(exc).__name__)
            return self._reject(Rejection.MALFORMED, iss, kid)

    def _why_no_key(self, trusted: TrustedIssuer, kid: str | None) -> Rejection:
        """A kid that belongs to another configured issuer is that issuer's token."""
        if kid is not None and any(
            other.keys.knows(kid) for other in self.issuers.values() if other is not trusted
        ):
            return Rejection.WRONG_ISSUER
        return Rejection.UNKNOWN_KEY

    @staticmethod
    def _decode(token: str, issuer: IssuerConfig, alg: str, key: Key) -> dict[str, Any]:
        return jwt.decode(
            token,
            key=key,
            algorithms=[alg],
            audience=list(issuer.audiences),
            issuer=issuer.issuer,
            leeway=issuer.leeway,
            options={"require": list(issuer.required_claims), "enforce_minimum_key_length": True},
        )

    @staticmethod
    def _reject(rejection: Rejection, iss: Any, kid: Any) -> Rejection:
        log.debug("token rejected: %s (iss=%.80r kid=%.80r)", rejection.value, iss, kid)
        return rejection
