"""Bearer tokens: the attack suite, key rotation, revocation, claim mapping and the cache.

Every refused token is a DENY whose reason names why (rule `pdp.identity.<reason>`),
never an exception. Keys are generated here; Redis is a real redis-server.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import free_port
from identity_keys import (
    AUDIENCE,
    ISSUER,
    SigningKey,
    b64json,
    claims,
    ec_key,
    ed_key,
    hs256_by_hand,
    jwks,
    rsa_key,
    write_jwks,
)

from pdp.identity import (
    IdentityConfig,
    IdentityConfigError,
    IdentityResolver,
    IssuerConfig,
    MemoryRevocationList,
    RedisRevocationList,
    Rejection,
    TokenIdentity,
    TokenVerifier,
    TrustRule,
)
from pdp.model import Decision, Request

OTHER_ISSUER = "https://other-idp.example"
SECRET = b"0123456789abcdef0123456789abcdef-test-only"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def k1() -> SigningKey:
    return rsa_key("k1")


@pytest.fixture(scope="module")
def k2() -> SigningKey:
    return ec_key("k2")


@pytest.fixture(scope="module")
def other() -> SigningKey:
    return rsa_key("o1")


def issuer(jwks_file: Path, **kw: Any) -> IssuerConfig:
    return IssuerConfig(ISSUER, (AUDIENCE,), jwks_file=jwks_file, reload_interval=0, **kw)


@pytest.fixture
def jwks_file(tmp_path: Path, k1: SigningKey, k2: SigningKey) -> Path:
    path = tmp_path / "jwks.json"
    write_jwks(path, k1, k2)
    return path


@pytest.fixture
def config(tmp_path: Path, jwks_file: Path, other: SigningKey) -> IdentityConfig:
    other_file = tmp_path / "other.json"
    write_jwks(other_file, other)
    return IdentityConfig(issuers=(
        issuer(jwks_file, roles_claim="roles", properties={"email": "email"}),
        IssuerConfig(OTHER_ISSUER, (AUDIENCE,), jwks_file=other_file, reload_interval=0),
    ))


@pytest.fixture
def revocations() -> MemoryRevocationList:
    return MemoryRevocationList()


@pytest.fixture
def verifier(config: IdentityConfig, revocations: MemoryRevocationList) -> TokenVerifier:
    return TokenVerifier(config, revocations)


@pytest.fixture
def resolver(config: IdentityConfig, verifier: TokenVerifier) -> IdentityResolver:
    return IdentityResolver(config, verifier)


def request(subject_type: str = "", subject_id: str = "", **kw: Any) -> Request:
    return Request(subject_type, subject_id, "read", "document", "d1", **kw)


def assert_denied(resolver: IdentityResolver, token: str, reason: Rejection) -> None:
    result = resolver.resolve(request(), token, "v1")
    assert isinstance(result, Decision), result
    assert not result.allowed
    assert [r.rule for r in result.reasons] == [f"pdp.identity.{reason.value}"]
    assert reason.value in result.reasons[0].text
    assert result.policy_version == "v1"


def test_a_good_token_becomes_the_subject(resolver: IdentityResolver, k1: SigningKey) -> None:
    result = resolver.resolve(request(), k1.sign(claims(email="a@example.com")), "v1")
    assert isinstance(result, Request)
    assert (result.subject_type, result.subject_id) == ("user", "alice")
    assert result.roles == {"editor"}
    assert dict(result.subject_properties) == {"email": "a@example.com"}
    assert (result.action, result.resource_id) == ("read", "d1")


def test_ec_keys_from_the_same_set_verify(verifier: TokenVerifier, k2: SigningKey) -> None:
    assert isinstance(verifier.verify(k2.sign(claims())), TokenIdentity)


# ---- the attack suite ----


def test_alg_none(resolver: IdentityResolver) -> None:
    token = f"{b64json({'alg': 'none', 'kid': 'k1'})}.{b64json(claims())}."
    assert_denied(resolver, token, Rejection.ALGORITHM_NOT_ALLOWED)


def test_alg_none_via_pyjwt(resolver: IdentityResolver) -> None:
    import jwt

    assert_denied(resolver, jwt.encode(claims(), None, algorithm="none"),
                  Rejection.ALGORITHM_NOT_ALLOWED)


def test_key_confusion_hs256_signed_with_the_rsa_public_key(
    resolver: IdentityResolver, k1: SigningKey
) -> None:
    header = {"alg": "HS256", "typ": "JWT", "kid": "k1"}
    token = hs256_by_hand(header, claims(), k1.public_pem())
    assert_denied(resolver, token, Rejection.ALGORITHM_NOT_ALLOWED)


def test_key_confusion_even_when_hs256_is_listed(tmp_path: Path, jwks_file: Path) -> None:
    """HS256 beside a public key set is refused by configuration, so it cannot happen."""
    with pytest.raises(IdentityConfigError, match="explicit secret"):
        issuer(jwks_file, algorithms=("RS256", "HS256"))


def test_header_alg_swapped_to_another_asymmetric_alg(
    resolver: IdentityResolver, k1: SigningKey
) -> None:
    _, payload, sig = k1.sign(claims()).split(".")
    forged = f"{b64json({'alg': 'ES256', 'kid': 'k1', 'typ': 'JWT'})}.{payload}.{sig}"
    assert_denied(resolver, forged, Rejection.ALGORITHM_NOT_ALLOWED)


def test_expired(resolver: IdentityResolver, k1: SigningKey) -> None:
    now = int(time.time())
    assert_denied(resolver, k1.sign(claims(iat=now - 7200, exp=now - 3600)), Rejection.EXPIRED)


def test_not_yet_valid(resolver: IdentityResolver, k1: SigningKey) -> None:
    now = int(time.time())
    assert_denied(resolver, k1.sign(claims(nbf=now + 3600)), Rejection.NOT_YET_VALID)


def test_wrong_issuer_a_token_signed_by_another_issuers_key(
    resolver: IdentityResolver, other: SigningKey
) -> None:
    assert_denied(resolver, other.sign(claims(iss=ISSUER)), Rejection.WRONG_ISSUER)


def test_wrong_audience(resolver: IdentityResolver, k1: SigningKey) -> None:
    assert_denied(resolver, k1.sign(claims(aud="billing")), Rejection.WRONG_AUDIENCE)


def test_missing_audience(resolver: IdentityResolver, k1: SigningKey) -> None:
    token = k1.sign({k: v for k, v in claims().items() if k != "aud"})
    assert_denied(resolver, token, Rejection.WRONG_AUDIENCE)


def test_unknown_kid(resolver: IdentityResolver) -> None:
    assert_denied(resolver, rsa_key("k9").sign(claims()), Rejection.UNKNOWN_KEY)


def test_a_stranger_key_claiming_a_known_kid(resolver: IdentityResolver) -> None:
    assert_denied(resolver, rsa_key("k1").sign(claims()), Rejection.BAD_SIGNATURE)


def test_tampered_payload(resolver: IdentityResolver, k1: SigningKey) -> None:
    header, _, sig = k1.sign(claims(roles=["viewer"])).split(".")
    forged = f"{header}.{b64json(claims(roles=['admin']))}.{sig}"
    assert_denied(resolver, forged, Rejection.BAD_SIGNATURE)


def test_tampered_header(resolver: IdentityResolver, k1: SigningKey) -> None:
    _, payload, sig = k1.sign(claims()).split(".")
    forged = f"{b64json({'alg': 'RS256', 'kid': 'k1', 'typ': 'JWT', 'x': 1})}.{payload}.{sig}"
    assert_denied(resolver, forged, Rejection.BAD_SIGNATURE)


def test_unconfigured_issuer(resolver: IdentityResolver, k1: SigningKey) -> None:
    assert_denied(resolver, k1.sign(claims(iss="https://evil.example")), Rejection.UNKNOWN_ISSUER)


def test_no_issuer(resolver: IdentityResolver, k1: SigningKey) -> None:
    token = k1.sign({k: v for k, v in claims().items() if k != "iss"})
    assert_denied(resolver, token, Rejection.UNKNOWN_ISSUER)


def test_revoked_jti_in_memory(
    resolver: IdentityResolver, revocations: MemoryRevocationList, k1: SigningKey
) -> None:
    payload = claims()
    token = k1.sign(payload)
    assert isinstance(resolver.resolve(request(), token), Request)  # now cached as verified
    revocations.revoke(payload["jti"], payload["exp"])
    assert_denied(resolver, token, Rejection.REVOKED)


@pytest.mark.parametrize(
    "garbage",
    ["", "garbage", "a.b.c", "...", "eyJhbGciOiJSUzI1NiJ9", "x" * 20_000,
     "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln", "\u00e9\u00e8.\u00e0.\u00fc"],
)
def test_garbage(resolver: IdentityResolver, garbage: str) -> None:
    assert_denied(resolver, garbage, Rejection.MALFORMED)


def test_missing_exp_is_malformed(resolver: IdentityResolver, k1: SigningKey) -> None:
    token = k1.sign({k: v for k, v in claims().items() if k != "exp"})
    assert_denied(resolver, token, Rejection.MALFORMED)


def test_missing_subject_is_malformed(resolver: IdentityResolver, k1: SigningKey) -> None:
    assert_denied(resolver, k1.sign(claims(sub=None)), Rejection.MALFORMED)


def test_tokens_never_reach_the_logs(
    resolver: IdentityResolver, k1: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pdp")
    now = int(time.time())
    tokens = [k1.sign(claims(exp=now - 3600)), k1.sign(claims(iss="https://evil.example")),
              rsa_key("k9").sign(claims()), k1.sign(claims())]
    for token in tokens:
        resolver.resolve(request(), token)
    assert caplog.records  # the rejections were logged, without the tokens
    for token in tokens:
        for part in token.split("."):
            assert part not in caplog.text


# ---- revocation in Redis ----


def test_revoked_jti_in_redis(config: IdentityConfig, redis_url: str, k1: SigningKey) -> None:
    shared = RedisRevocationList(redis_url)
    resolver = IdentityResolver(config, TokenVerifier(config, shared))
    payload = claims()
    token = k1.sign(payload)
    assert isinstance(resolver.resolve(request(), token), Request)
    RedisRevocationList(redis_url).revoke(payload["jti"], payload["exp"])  # another replica
    assert_denied(resolver, token, Rejection.REVOKED)
    ttl = redis.Redis.from_url(redis_url).ttl(f"pdp:revoked:{payload['jti']}")
    assert 0 < ttl <= payload["exp"] - int(time.time()) + 2  # forgotten when the token expires


def test_revoke_token_command(config: IdentityConfig, redis_url: str, k1: SigningKey) -> None:
    payload = claims()
    done = subprocess.run(
        [sys.executable, "-m", "pdp", "revoke-token", payload["jti"],
         "--until", str(payload["exp"]), "--redis-url", redis_url],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"revoked jti '{payload['jti']}'" in done.stdout
    resolver = IdentityResolver(config, TokenVerifier(config, RedisRevocationList(redis_url)))
    assert_denied(resolver, k1.sign(payload), Rejection.REVOKED)


def test_revoke_token_reads_the_url_serve_reads(redis_url: str) -> None:
    payload = claims()
    done = subprocess.run(
        [sys.executable, "-m", "pdp", "revoke-token", payload["jti"], "--until", "2099-01-01"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
        env={**os.environ, "PDP_IDENTITY_REVOCATION_REDIS_URL": redis_url},
    )
    assert done.returncode == 0, done.stderr
    assert RedisRevocationList(redis_url).is_revoked(payload["jti"])


def test_redis_down_fails_closed_or_open(config: IdentityConfig, k1: SigningKey) -> None:
    down = RedisRevocationList(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    token = k1.sign(claims())
    assert_denied(IdentityResolver(config, TokenVerifier(config, down)), token,
                  Rejection.REVOCATION_UNAVAILABLE)
    lenient = IdentityConfig(issuers=config.issuers, revocation_fail_open=True)
    assert isinstance(TokenVerifier(lenient, down).verify(token), TokenIdentity)


# ---- key rotation ----


def test_rotation_of_a_jwks_file(
    resolver: IdentityResolver, jwks_file: Path, k1: SigningKey, k2: SigningKey
) -> None:
    k3 = ed_key("k3")
    old, new = k1.sign(claims()), k3.sign(claims())
    assert isinstance(resolver.resolve(request(), old), Request)
    assert_denied(resolver, new, Rejection.UNKNOWN_KEY)
    write_jwks(jwks_file, k2, k3)  # k3 published, k1 retired
    assert isinstance(resolver.resolve(request(), new), Request)
    assert_denied(resolver, old, Rejection.UNKNOWN_KEY)  # even though it was cached


def test_a_broken_jwks_file_keeps_the_old_keys(
    verifier: TokenVerifier, jwks_file: Path, k1: SigningKey
) -> None:
    jwks_file.write_text('{"keys": [', encoding="utf-8")
    assert isinstance(verifier.verify(k1.sign(claims())), TokenIdentity)


def test_a_jwks_file_checked_once_a_second(tmp_path: Path, k1: SigningKey) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, k1)
    k3 = rsa_key("k3")
    verifier = TokenVerifier(IdentityConfig(issuers=(
        IssuerConfig(ISSUER, (AUDIENCE,), jwks_file=path),  # default reload_interval: 1s
    )))
    write_jwks(path, k1, k3)
    token = k3.sign(claims())
    deadline = time.monotonic() + 10
    while not isinstance(verifier.verify(token), TokenIdentity):
        assert time.monotonic() < deadline, "the rotated JWKS file was never re-read"
        time.sleep(0.2)


class _JwksHandler(http.server.BaseHTTPRequestHandler):
    """A JWKS endpoint whose answer a test changes: body, status, or no answer at all."""

    body = b"{}"
    status = 200
    hanging = False  # hold each request until the test ends: an IdP that never answers
    release = threading.Event()
    fetches = 0

    def do_GET(self) -> None:
        type(self).fetches += 1
        if self.hanging:
            self.release.wait(120)
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def jwks_server(k1: SigningKey) -> Iterator[tuple[str, type[_JwksHandler]]]:
    """Serves a JWKS holding k1 until the test changes it."""
    handler = type("Handler", (_JwksHandler,), {"body": jwks(k1).encode(),
                                                 "release": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", handler
    handler.release.set()
    server.shutdown()
    server.server_close()


def url_verifier(url: str, **kw: Any) -> TokenVerifier:
    """No token cache, so every verify asks the key source."""
    return TokenVerifier(IdentityConfig(cache_size=0, issuers=(
        IssuerConfig(ISSUER, (AUDIENCE,), jwks_url=url, **kw),)))


def wait_until(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.05)


def verify_in_thread(verifier: TokenVerifier, token: str, within: float) -> object:
    """The verdict, failing if it took longer than `within` (a generous 'did not block')."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(verifier.verify(token)), daemon=True)
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), "verify waited for the JWKS endpoint"
    return result[0]


def test_jwks_url_is_fetched_at_start_and_cached_not_fetched_per_token(
    jwks_server: tuple[str, type[_JwksHandler]], k1: SigningKey
) -> None:
    url, handler = jwks_server
    verifier = url_verifier(url)
    assert handler.fetches == 1  # at construction, not on the first request
    for _ in range(3):
        assert isinstance(verifier.verify(k1.sign(claims())), TokenIdentity)
    assert handler.fetches == 1


def rotated_in(jwks_server: tuple[str, type[_JwksHandler]],
               k1: SigningKey) -> tuple[TokenVerifier, SigningKey]:
    """A verifier that fetched {k1}, then the issuer publishing k3 beside it."""
    url, handler = jwks_server
    verifier = url_verifier(url, jwks_refresh_cooldown=0)
    k3 = ec_key("k3")
    handler.body = jwks(k1, k3).encode()
    return verifier, k3


def test_jwks_url_unknown_kid_refetches_once_then_verifies(
    jwks_server: tuple[str, type[_JwksHandler]], k1: SigningKey
) -> None:
    handler = jwks_server[1]
    verifier, k3 = rotated_in(jwks_server, k1)
    assert isinstance(verifier.verify(k3.sign(claims())), TokenIdentity)  # on its first token
    assert handler.fetches == 2
    assert isinstance(verifier.verify(k3.sign(claims())), TokenIdentity)
    assert handler.fetches == 2


def test_jwks_url_concurrent_unknown_kids_share_one_fetch(
    jwks_server: tuple[str, type[_JwksHandler]], k1: SigningKey
) -> None:
    handler = jwks_server[1]
    verifier, k3 = rotated_in(jwks_server, k1)
    tokens = [k3.sign(claims()) for _ in range(8)]
    start = threading.Barrier(len(tokens))
    results: list[object] = []

    def verify(token: str) -> None:
        start.wait()
        results.append(verifier.verify(token))

    threads = [threading.Thread(target=verify, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(isinstance(r, TokenIdentity) for r in results) and len(results) == len(tokens)
    assert handler.fetches == 2


def test_jwks_url_cooldown_stops_unknown_kids_refetching(
    jwks_server: tuple[str, type[_JwksHandler]], k1: SigningKey
) -> None:
    url, handler = jwks_server
    verifier = url_verifier(url, jwks_refresh_cooldown=3600)
    for kid in ("x1", "x2", "x3"):
        assert verifier.verify(rsa_key(kid).sign(claims())) is Rejection.UNKNOWN_KEY
    assert handler.fetches == 1  # made-up kids do not hammer the issuer
    assert isinstance(verifier.verify(k1.sign(claims())), TokenIdentity)


def test_jwks_url_idp_down_keeps_the_last_good_keys_and_retries(
    jwks_server: tuple[str, type[_JwksHandler]], k1: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, handler = jwks_server
    caplog.set_level(logging.INFO, logger="pdp.identity.keys")
    verifier = url_verifier(url, jwks_lifespan=0.01, jwks_refresh_cooldown=0)
    handler.status, handler.body = 500, b"down"
    wait_until(lambda: handler.fetches >= 4, "the refresher retrying")
    assert isinstance(verifier.verify(k1.sign(claims())), TokenIdentity)  # stale but good
    failing = [r for r in caplog.records if "not fetched" in r.getMessage()]
    assert len(failing) == 1, "logged once per state change, not per attempt"

    k3 = ec_key("k3")
    handler.status, handler.body = 200, jwks(k3).encode()  # back, with k1 retired
    token = k1.sign(claims())
    wait_until(lambda: verifier.verify(token) is Rejection.UNKNOWN_KEY, "k1 retired")
    assert isinstance(verifier.verify(k3.sign(claims())), TokenIdentity)


def test_jwks_url_hanging_idp_does_not_hold_requests(
    jwks_server: tuple[str, type[_JwksHandler]], k1: SigningKey
) -> None:
    url, handler = jwks_server
    verifier = url_verifier(url, jwks_lifespan=0.01, jwks_timeout=60)
    handler.hanging = True
    wait_until(lambda: handler.fetches >= 2, "the background refetch")  # now stuck in it
    assert isinstance(verify_in_thread(verifier, k1.sign(claims()), within=10), TokenIdentity)
    unknown = rsa_key("x1").sign(claims())
    assert verify_in_thread(verifier, unknown, within=10) is Rejection.UNKNOWN_KEY  # cooldown


def test_jwks_url_refresher_ends_with_its_verifier(
    jwks_server: tuple[str, type[_JwksHandler]]
) -> None:
    def refreshers() -> int:
        return sum(t.name == "pdp-jwks" for t in threading.enumerate())

    url, _ = jwks_server
    before = refreshers()
    verifier = url_verifier(url)
    assert refreshers() == before + 1
    del verifier  # a reloaded configuration drops its key sources
    wait_until(lambda: refreshers() == before, "the refresher thread ending")


def test_jwks_url_unreachable_at_start_is_unknown_key(k1: SigningKey) -> None:
    url = f"http://127.0.0.1:{free_port()}/jwks.json"
    verifier = url_verifier(url, jwks_timeout=1)
    assert verifier.verify(k1.sign(claims())) is Rejection.UNKNOWN_KEY


def test_jwks_url_serving_garbage_at_start_is_unknown_key(
    jwks_server: tuple[str, type[_JwksHandler]], k1: SigningKey
) -> None:
    url, handler = jwks_server
    handler.body = b"<html>not a key set</html>"
    verifier = url_verifier(url)
    assert verifier.verify(k1.sign(claims())) is Rejection.UNKNOWN_KEY


# ---- other key sources ----


def test_pem_public_key(tmp_path: Path, k1: SigningKey, k2: SigningKey) -> None:
    pem = tmp_path / "idp.pem"
    pem.write_bytes(k1.public_pem())
    verifier = TokenVerifier(IdentityConfig(issuers=(
        IssuerConfig(ISSUER, (AUDIENCE,), public_key_file=pem),)))
    assert isinstance(verifier.verify(k1.sign(claims())), TokenIdentity)
    assert verifier.verify(k2.sign(claims())) is Rejection.ALGORITHM_NOT_ALLOWED  # EC for RSA
    assert verifier.verify(rsa_key("k1").sign(claims())) is Rejection.BAD_SIGNATURE


def test_hs256_only_with_an_explicit_secret(k1: SigningKey) -> None:
    import jwt

    verifier = TokenVerifier(IdentityConfig(issuers=(
        IssuerConfig(ISSUER, (AUDIENCE,), hmac_secret=SECRET, algorithms=("HS256",)),)))
    assert isinstance(verifier.verify(jwt.encode(claims(), SECRET, "HS256")), TokenIdentity)
    assert verifier.verify(jwt.encode(claims(), SECRET + b"x", "HS256")) is Rejection.BAD_SIGNATURE
    assert verifier.verify(k1.sign(claims())) is Rejection.ALGORITHM_NOT_ALLOWED
    with pytest.raises(IdentityConfigError):
        IssuerConfig(ISSUER, (AUDIENCE,), hmac_secret=b"short", algorithms=("HS256",))


# ---- claim mapping ----


def test_realm_roles_type_claim_and_properties(jwks_file: Path, k1: SigningKey) -> None:
    verifier = TokenVerifier(IdentityConfig(issuers=(issuer(
        jwks_file, subject_claim="azp", subject_type="user", subject_type_claim="kind",
        roles_claim="realm_access.roles",
        properties={"department": "org.department", "email": "email"},
    ),)))
    token = k1.sign(claims(
        azp="billing", kind="service", realm_access={"roles": ["viewer", "auditor"]},
        org={"department": "finance"}, email="ops@example.com",
    ))
    identity = verifier.verify(token)
    assert isinstance(identity, TokenIdentity)
    assert (identity.subject_type, identity.subject_id) == ("service", "billing")
    assert identity.roles == {"viewer", "auditor"}
    assert dict(identity.properties) == {"department": "finance", "email": "ops@example.com"}
    fallback = verifier.verify(k1.sign(claims(azp="bob")))  # no `kind`: the fixed type
    assert isinstance(fallback, TokenIdentity) and fallback.subject_type == "user"
    bad_type = verifier.verify(k1.sign(claims(azp="x", kind="not a type")))
    assert bad_type is Rejection.MALFORMED


def test_roles_from_scope(jwks_file: Path, k1: SigningKey) -> None:
    verifier = TokenVerifier(IdentityConfig(issuers=(
        issuer(jwks_file, roles_claim="scope", subject_type="machine"),)))
    identity = verifier.verify(k1.sign(claims(sub="backup-cron", scope="viewer  backup")))
    assert isinstance(identity, TokenIdentity)
    assert identity.subject_type == "machine" and identity.roles == {"viewer", "backup"}
    assert verifier.verify(k1.sign(claims(scope=42))) is Rejection.MALFORMED


def test_trust_token_only_drops_asserted_roles_and_properties(
    resolver: IdentityResolver, k1: SigningKey
) -> None:
    asked = request(roles=frozenset({"admin"}), subject_properties={"email": "x", "level": 9})
    result = resolver.resolve(asked, k1.sign(claims(email="alice@example.com")))
    assert isinstance(result, Request)
    assert result.roles == {"editor"}
    assert dict(result.subject_properties) == {"email": "alice@example.com"}


def test_trust_merge_joins_roles_and_the_token_wins(
    config: IdentityConfig, verifier: TokenVerifier, k1: SigningKey
) -> None:
    merging = IdentityConfig(issuers=config.issuers, trust=TrustRule.MERGE)
    resolver = IdentityResolver(merging, verifier)
    asked = request("user", "alice", roles=frozenset({"auditor"}),
                    subject_properties={"email": "x", "level": 9})
    result = resolver.resolve(asked, k1.sign(claims(email="alice@example.com")))
    assert isinstance(result, Request)
    assert result.roles == {"editor", "auditor"}
    assert dict(result.subject_properties) == {"email": "alice@example.com", "level": 9}


def test_a_request_naming_another_subject(resolver: IdentityResolver, k1: SigningKey) -> None:
    result = resolver.resolve(request("user", "bob"), k1.sign(claims()))
    assert isinstance(result, Decision)
    assert result.reasons[0].rule == "pdp.identity.subject_mismatch"


def test_subject_from_certificate(config: IdentityConfig) -> None:
    spiffe = "spiffe://prod.example/ns/orders/sa/api"
    on = IdentityResolver(IdentityConfig(issuers=config.issuers, subject_from_certificate=True))
    taken = on.subject_from_caller(request(), spiffe)
    assert (taken.subject_type, taken.subject_id) == ("service", spiffe)
    assert on.subject_from_caller(request("user", "bob"), spiffe).subject_id == "bob"
    assert IdentityResolver(config).subject_from_caller(request(), spiffe).subject_id == ""


# ---- the verified-token cache ----


def test_a_hot_token_is_verified_once(verifier: TokenVerifier, k1: SigningKey) -> None:
    token = k1.sign(claims())
    first = verifier.verify(token)
    assert isinstance(first, TokenIdentity)
    assert verifier.verify(token) is first  # from the cache, not a second verification
    assert len(verifier.cache) == 1


def test_the_cache_is_bounded_and_skips_failures(
    config: IdentityConfig, k1: SigningKey
) -> None:
    small = TokenVerifier(IdentityConfig(issuers=config.issuers, cache_size=2))
    for _ in range(5):
        assert isinstance(small.verify(k1.sign(claims())), TokenIdentity)
    small.verify(k1.sign(claims(aud="billing")))
    assert len(small.cache) == 2


def test_a_cached_token_is_refused_once_expired(verifier: TokenVerifier, k1: SigningKey) -> None:
    now = time.time()
    token = k1.sign(claims(exp=int(now) + 1))
    identity = verifier.verify(token)
    assert isinstance(identity, TokenIdentity)
    digest = next(iter(verifier.cache._entries))
    assert verifier.cache.get(digest) is not None
    verifier.cache._entries[digest] = type(verifier.cache._entries[digest])(
        identity, "k1", verifier.cache._entries[digest].key, now - 1)
    assert verifier.cache.get(digest) is None


# ---- configuration ----


def test_identity_section_from_toml(tmp_path: Path, k1: SigningKey, monkeypatch: Any) -> None:
    write_jwks(tmp_path / "jwks.json", k1)
    monkeypatch.setenv("PDP_TEST_HS_SECRET", SECRET.decode())
    text = f"""
[identity]
trust = "merge"
admin_callers = ["spiffe://prod.example/ns/ops/sa/admin"]

[[identity.issuers]]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
jwks_file = "jwks.json"
subject_type = "user"
roles_claim = "realm_access.roles"
properties = ["email"]

[[identity.issuers]]
issuer = "https://ci.example"
audiences = ["{AUDIENCE}"]
hs256_secret_env = "PDP_TEST_HS_SECRET"
subject_type = "machine"
"""
    section = tomllib.loads(text)["identity"]
    config = IdentityConfig.from_mapping(section, tmp_path)
    assert config.trust is TrustRule.MERGE
    assert config.admin_callers == {"spiffe://prod.example/ns/ops/sa/admin"}
    first, second = config.issuers
    assert first.jwks_file == tmp_path / "jwks.json" and first.properties == {"email": "email"}
    assert second.algorithms == ("HS256",) and second.hmac_secret == SECRET
    assert "0123456789" not in repr(second)  # secrets stay out of reprs and logs
    identity = TokenVerifier(config).verify(k1.sign(claims(realm_access={"roles": ["viewer"]})))
    assert isinstance(identity, TokenIdentity) and identity.roles == {"viewer"}


@pytest.mark.parametrize("bad", [
    {"issuers": [{"issuer": ISSUER, "audiences": [], "jwks_file": "j"}]},
    {"issuers": [{"issuer": ISSUER, "audiences": ["a"]}]},
    {"issuers": [{"issuer": ISSUER, "audiences": ["a"], "jwks_url": "file:///etc/passwd"}]},
    {"issuers": [{"issuer": ISSUER, "audiences": ["a"], "jwks_url": "https://x", "algo": 1}]},
    {"issuers": [{"issuer": ISSUER, "audiences": ["a"], "jwks_url": "https://x",
                  "jwks_lifespan": 0}]},  # would refetch in a tight loop
    {"issuers": [{"issuer": ISSUER, "audiences": ["a"], "jwks_url": "https://x",
                  "jwks_timeout": -1}]},
    {"issuers": [{"issuer": ISSUER, "audiences": ["a"], "jwks_url": "https://x",
                  "jwks_refresh_cooldown": -5}]},
    {"trust": "everyone"},
])
def test_unsafe_configuration_is_refused(tmp_path: Path, bad: dict[str, Any]) -> None:
    with pytest.raises(IdentityConfigError):
        IdentityConfig.from_mapping(json.loads(json.dumps(bad)), tmp_path)


@pytest.mark.parametrize(("text", "expected"), [
    ("1800000000", 1800000000.0),
    ("2027-01-15T08:00:00Z", 1800000000.0),
    ("2027-01-15T08:00:00", 1800000000.0),
    ("2027-01-15T09:00:00+01:00", 1800000000.0),
])
def test_revoke_until_accepts_unix_seconds_and_iso_8601(text: str, expected: float) -> None:
    from pdp.cli.identity import parse_until

    assert parse_until(text) == expected
