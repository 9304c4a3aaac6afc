"""Verified claims -> the subject they describe, as configured per issuer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pdp.identity.config import TYPE_NAME, IssuerConfig


class ClaimError(ValueError):
    """A verified token whose claims do not name a subject as configured."""


@dataclass(frozen=True, slots=True)
class TokenIdentity:
    """What a verified token says about its subject."""

    issuer: str
    subject_type: str
    subject_id: str
    roles: frozenset[str]
    properties: Mapping[str, Any]
    expires_at: float
    jti: str | None


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (`realm_access.roles`), or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _roles(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):  # an OAuth `scope`: space-separated
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    raise ClaimError("the roles claim is neither a string nor a list of strings")


def _subject_type(issuer: IssuerConfig, claims: Mapping[str, Any]) -> str:
    value = claim_at(claims, issuer.subject_type_claim) if issuer.subject_type_claim else None
    if value is None:
        value = issuer.subject_type
    if not isinstance(value, str) or not TYPE_NAME.match(value):
        raise ClaimError("the token does not give a valid subject type")
    return value


def map_claims(issuer: IssuerConfig, claims: Mapping[str, Any]) -> TokenIdentity:
    subject_id = claim_at(claims, issuer.subject_claim)
    if not isinstance(subject_id, str) or not subject_id:
        raise ClaimError(f"the token has no string {issuer.subject_claim!r} claim")
    jti = claims.get("jti")
    if jti is not None and not isinstance(jti, str):
        raise ClaimError("the jti claim is not a string")
    exp = claims.get("exp")
    properties = {
        name: value
        for name, path in issuer.properties.items()
        if (value := claim_at(claims, path)) is not None
    }
    return TokenIdentity(
        issuer=issuer.issuer,
        subject_type=_subject_type(issuer, claims),
        subject_id=subject_id,
        roles=_roles(claim_at(claims, issuer.roles_claim) if issuer.roles_claim else None),
        properties=MappingProxyType(properties),
        expires_at=float(exp) if isinstance(exp, int | float) else float("inf"),
        jti=jti,
    )
