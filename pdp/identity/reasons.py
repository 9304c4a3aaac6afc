"""Why a bearer token was refused, and the DENY decision that says so.

A token that fails verification is never an error the caller must interpret:
the front end gets a DENY whose reason names one of these values.
"""

from __future__ import annotations

from enum import StrEnum

from pdp.model import Decision, deny_because


class Rejection(StrEnum):
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    REVOKED = "revoked"
    MALFORMED = "malformed"
    UNKNOWN_ISSUER = "unknown_issuer"
    # The request names a subject other than the token's.
    SUBJECT_MISMATCH = "subject_mismatch"
    # The revocation list could not be read and the configuration fails closed.
    REVOCATION_UNAVAILABLE = "revocation_unavailable"


TEXT = {
    Rejection.EXPIRED: "the token has expired",
    Rejection.NOT_YET_VALID: "the token is not valid yet",
    Rejection.WRONG_ISSUER: "the token is signed by another issuer's key",
    Rejection.WRONG_AUDIENCE: "the token is not meant for this audience",
    Rejection.UNKNOWN_KEY: "the token's signing key is not among the issuer's keys",
    Rejection.BAD_SIGNATURE: "the token's signature does not verify",
    Rejection.ALGORITHM_NOT_ALLOWED: "the token's algorithm is not allowed for its issuer",
    Rejection.REVOKED: "the token has been revoked",
    Rejection.MALFORMED: "the token is malformed or lacks a required claim",
    Rejection.UNKNOWN_ISSUER: "the token's issuer is not trusted",
    Rejection.SUBJECT_MISMATCH: "the request names a subject other than the token's",
    Rejection.REVOCATION_UNAVAILABLE: "the revocation list could not be checked",
}

RULE_PREFIX = "pdp.identity."


def rejection_decision(rejection: Rejection, policy_version: str = "") -> Decision:
    """DENY with rule `pdp.identity.<reason>`, fail closed like `deny_because`."""
    return deny_because(
        f"token rejected ({rejection.value}): {TEXT[rejection]}",
        policy_version,
        rule=RULE_PREFIX + rejection.value,
    )
