"""The one call the decision path makes: a request plus a token -> a request about
the token's subject, or a DENY that says why the token was refused."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from pdp import metrics
from pdp.identity.claims import TokenIdentity
from pdp.identity.config import IdentityConfig, TrustRule
from pdp.identity.jwt import TokenVerifier
from pdp.identity.reasons import Rejection, rejection_decision
from pdp.identity.revocation import RedisRevocationList, RevocationList
from pdp.model import Decision, Request

CERTIFICATE_SUBJECT_TYPE = "service"


class IdentityResolver:
    def __init__(self, config: IdentityConfig, verifier: TokenVerifier | None = None) -> None:
        self.config = config
        self.verifier = verifier or TokenVerifier(config, revocation_list(config))

    def resolve(self, request: Request, token: str, policy_version: str = "") -> Request | Decision:
        """Verify `token` and make it the request's subject, per the configured trust rule."""
        result = self.verifier.verify(token)
        if isinstance(result, Rejection):
            metrics.jwt_failure(result.value)
            return rejection_decision(result, policy_version)
        if not _same_subject(request, result):
            metrics.jwt_failure(Rejection.SUBJECT_MISMATCH.value)
            return rejection_decision(Rejection.SUBJECT_MISMATCH, policy_version)
        if self.config.trust is TrustRule.MERGE:
            properties = {**request.subject_properties, **result.properties}
            roles = request.roles | result.roles
        else:
            properties, roles = dict(result.properties), result.roles
        return dataclasses.replace(
            request,
            subject_type=result.subject_type,
            subject_id=result.subject_id,
            subject_properties=MappingProxyType(properties),
            roles=roles,
        )

    def subject_from_caller(self, request: Request, caller: str | None) -> Request:
        """With `subject_from_certificate`, a request without a subject asks for its caller."""
        if (
            not self.config.subject_from_certificate
            or caller is None
            or request.subject_type
            or request.subject_id
        ):
            return request
        return dataclasses.replace(
            request, subject_type=CERTIFICATE_SUBJECT_TYPE, subject_id=caller
        )


def _same_subject(request: Request, identity: TokenIdentity) -> bool:
    """An asserted type or id, when given, must be the token's."""
    return request.subject_type in ("", identity.subject_type) and request.subject_id in (
        "", identity.subject_id
    )


def revocation_list(config: IdentityConfig) -> RevocationList | None:
    if config.revocation_redis_url is None:
        return None
    return RedisRevocationList(
        config.revocation_redis_url, config.revocation_prefix, config.revocation_timeout
    )
