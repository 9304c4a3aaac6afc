"""Check with a bearer token in subject.token: the verified token names the subject."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc_support import make_config, request, running_server, stub, write_policies
from identity_keys import AUDIENCE, ISSUER, SigningKey, claims, rsa_key, write_jwks

from pdp.identity import IdentityConfig, IdentityResolver, IssuerConfig
from pdp.v1 import decision_pb2 as pb


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return rsa_key("k1")


@pytest.fixture(scope="module")
def decisions(tmp_path_factory: pytest.TempPathFactory, key: SigningKey) -> Iterator[Any]:
    folder = tmp_path_factory.mktemp("id")
    write_jwks(folder / "jwks.json", key)
    identity = IdentityResolver(IdentityConfig(issuers=(
        IssuerConfig(ISSUER, (AUDIENCE,), jwks_file=folder / "jwks.json", reload_interval=0),
    )))
    config = make_config(write_policies(folder / "policies"))
    with running_server(config, identity=identity) as server:
        channel, decisions = stub(server.port)
        yield decisions
        channel.close()


def with_token(token: str, subject: str = "", **props: Any) -> pb.CheckRequest:
    msg = request("user:x", "write", "document:drafts/1", **props)
    msg.subject.type, _, msg.subject.id = subject.partition(":")
    msg.subject.token = token
    return msg


def test_a_verified_token_is_the_subject(decisions: Any, key: SigningKey) -> None:
    token = key.sign(claims(sub="alice", roles=["writer"]))
    reply = decisions.Check(with_token(token, resource_properties={"owner": "alice"}))
    assert reply.allowed, reply
    assert reply.reasons[0].rule == "writer-own-drafts"
    assert "writer" in reply.roles


def test_a_token_for_someone_else_is_refused(decisions: Any, key: SigningKey) -> None:
    token = key.sign(claims(sub="alice", roles=["writer"]))
    reply = decisions.Check(with_token(token, "user:bob", resource_properties={"owner": "bob"}))
    assert not reply.allowed
    assert reply.reasons[0].rule.startswith("pdp.identity.")


def test_a_bad_token_is_a_deny_with_the_reason(decisions: Any, key: SigningKey) -> None:
    expired = key.sign(claims(exp=1, iat=0))
    reply = decisions.Check(with_token(expired))
    assert reply.decision == pb.DECISION_DENY
    assert reply.reasons[0].rule.startswith("pdp.identity.")
    assert reply.decision_id


def test_tokens_in_a_batch_are_verified_one_by_one(decisions: Any, key: SigningKey) -> None:
    good = with_token(key.sign(claims(sub="alice", roles=["writer"])),
                      resource_properties={"owner": "alice"})
    bad = with_token("not-a-jwt")
    reply = decisions.BatchCheck(pb.BatchCheckRequest(requests=[good, bad, request()]))
    assert [r.allowed for r in reply.responses] == [True, False, True]
    assert reply.responses[1].reasons[0].rule.startswith("pdp.identity.")


def test_without_identity_configured_a_token_is_refused(tmp_path: Path, key: SigningKey) -> None:
    with running_server(make_config(write_policies(tmp_path / "p"))) as server:
        channel, decisions = stub(server.port)
        reply = decisions.Check(with_token(key.sign(claims())))
        channel.close()
    assert not reply.allowed
    assert reply.reasons[0].rule == "pdp.identity.unconfigured"
