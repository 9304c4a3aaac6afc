"""Identity: who a request is about (verified bearer tokens) and who is asking
(the caller's mTLS certificate). The engine never sees a token."""

from pdp.identity.claims import TokenIdentity
from pdp.identity.config import IdentityConfig, IdentityConfigError, IssuerConfig, TrustRule
from pdp.identity.jwt import TokenVerifier
from pdp.identity.reasons import Rejection, rejection_decision
from pdp.identity.resolver import IdentityResolver
from pdp.identity.revocation import MemoryRevocationList, RedisRevocationList, RevocationList

__all__ = [
    "IdentityConfig",
    "IdentityConfigError",
    "IdentityResolver",
    "IssuerConfig",
    "MemoryRevocationList",
    "RedisRevocationList",
    "Rejection",
    "RevocationList",
    "TokenIdentity",
    "TokenVerifier",
    "TrustRule",
    "rejection_decision",
]
