"""Identity benchmark: the cost of verifying a bearer token, with and without the cache.

For RS256 (2048-bit RSA), ES256 (P-256) and EdDSA (Ed25519) keys served from a
JWKS file, `TokenVerifier.verify` is timed on tokens shaped like real access
tokens (iss, aud, sub, exp, iat, jti, roles, email):

- no cache: `cache_size = 0`, so every call does the full verification (header
  and claims parse, issuer and key lookup, signature, exp/nbf/iss/aud, claim mapping);
- cache, one hot token: the same token again and again (a hash and a dict lookup,
  plus the check that the key that verified it is still in the issuer's set);
- cache, 1000 hot tokens: round robin over 1000 distinct valid tokens.

Calls are timed with perf_counter_ns in batches; each batch gives one
per-call sample. Median, p99 and mean are over those samples.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from pdp.identity import IdentityConfig, IssuerConfig, TokenIdentity, TokenVerifier

NAME = "identity"
ISSUER, AUDIENCE = "https://idp.example", "pdp"
KEYS: dict[str, tuple[Callable[[], Any], Any]] = {
    "RS256": (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
              RSAAlgorithm),
    "ES256": (lambda: ec.generate_private_key(ec.SECP256R1()), ECAlgorithm),
    "EdDSA": (ed25519.Ed25519PrivateKey.generate, OKPAlgorithm),
}


def _token(private: Any, alg: str) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": f"user-{uuid.uuid4().hex[:8]}", "iat": now,
        "exp": now + 3600, "jti": uuid.uuid4().hex, "roles": ["viewer", "editor"],
        "email": "someone@example.com",
    }
    return jwt.encode(claims, private, algorithm=alg, headers={"kid": alg})


def _verifier(folder: Path, alg: str, private: Any, cache_size: int) -> TokenVerifier:
    algo = KEYS[alg][1]
    jwk = {**algo.to_jwk(private.public_key(), as_dict=True), "kid": alg, "alg": alg}
    path = folder / f"{alg}.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return TokenVerifier(IdentityConfig(cache_size=cache_size, issuers=(IssuerConfig(
        ISSUER, (AUDIENCE,), jwks_file=path, properties={"email": "email"},
    ),)))


def time_calls(verify: Callable[[str], Any], tokens: Sequence[str], calls: int,
               batch: int) -> list[float]:
    """Per-call microseconds, one sample per batch of consecutive calls."""
    samples = []
    n = len(tokens)
    for start in range(0, calls, batch):
        t0 = time.perf_counter_ns()
        for i in range(start, start + batch):
            verify(tokens[i % n])
        samples.append((time.perf_counter_ns() - t0) / batch / 1000)
    return samples


def _row(alg: str, mode: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"| {alg} | {mode} | {statistics.median(samples):.1f} | {p99:.1f} | "
            f"{statistics.fmean(samples):.1f} | {1e6 / statistics.median(samples):,.0f} |")


def bench_alg(folder: Path, alg: str, quick: bool) -> list[str]:
    private = KEYS[alg][0]()
    full_calls, hot_calls = (400, 20_000) if quick else (4_000, 400_000)
    cold = _verifier(folder, alg, private, cache_size=0)
    warm = _verifier(folder, alg, private, cache_size=10_000)
    one = [_token(private, alg)]
    many = [_token(private, alg) for _ in range(1000)]
    for token in one + many:  # all valid, and now cached
        assert isinstance(warm.verify(token), TokenIdentity)
    assert isinstance(cold.verify(one[0]), TokenIdentity)
    return [
        _row(alg, "no cache (full verification)", time_calls(cold.verify, one, full_calls, 20)),
        _row(alg, "cache, one hot token", time_calls(warm.verify, one, hot_calls, 1000)),
        _row(alg, "cache, 1000 hot tokens", time_calls(warm.verify, many, hot_calls, 1000)),
    ]


def run(args: argparse.Namespace) -> list[str]:
    lines = [
        f"## Identity: token verification cost{' (--quick)' if args.quick else ''}", "",
        "| alg | mode | median µs | p99 µs | mean µs | calls/s (median) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for alg in KEYS:
            lines += bench_alg(Path(tmp), alg, args.quick)
    lines += ["", "One thread, one process; pyjwt with the cryptography backend. The cache is "
              "keyed by the token's sha256 and holds a token until its exp."]
    return lines
