"""The Check response laid out from kept bytes parses to the message built field by field."""

from __future__ import annotations

from pathlib import Path

import pytest
from policy_helpers import ask, load

from pdp.grpc_mapping import RequestMemo, fill_response, response_bytes, to_response
from pdp.model import Effect, Request, deny_because
from pdp.service import Outcome, new_decision_id
from pdp.v1 import decision_pb2 as pb

POLICY = """\
role viewer {
    allow read on document:** reason "viewers read documents" as viewer-read
    deny read on document:secret/** reason "secrets stay secret" as no-secrets
}
grant viewer to user:*
"""


def built(outcome: Outcome) -> pb.CheckResponse:
    """The response built field by field: what the laid-out bytes must parse to."""
    d = outcome.decision
    return pb.CheckResponse(
        decision=pb.DECISION_ALLOW if d.allowed else pb.DECISION_DENY,
        allowed=d.allowed,
        reasons=[pb.Reason(rule=r.rule, text=r.text, file=r.file, line=max(r.line, 0),
                           effect=pb.EFFECT_ALLOW if r.effect is Effect.ALLOW else pb.EFFECT_DENY)
                 for r in d.reasons],
        policy_version=d.policy_version,
        decision_id=outcome.decision_id,
        cached=outcome.cached,
        roles=sorted(d.roles),
    )


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize(("action", "resource"), [
    ("read", "document:a"),  # allowed by a rule
    ("read", "document:secret/x"),  # denied by a rule
    ("write", "document:a"),  # the default deny, whose reason names the request
])
def test_response_bytes_parse_to_the_built_response(
    tmp_path: Path, action: str, resource: str, cached: bool
) -> None:
    decision = ask(load(tmp_path, {"p.policy": POLICY}), "user:al", action, resource)
    outcome = Outcome(decision, new_decision_id(), cached, 0.0)
    for _ in range(2):  # built, then from the kept parts
        parsed = pb.CheckResponse.FromString(response_bytes(outcome))
        assert parsed == built(outcome) == to_response(outcome)
        in_batch = pb.BatchCheckResponse()
        fill_response(in_batch.responses.add(), outcome)
        assert in_batch.responses[0] == parsed
        assert parsed.decision_id == outcome.decision_id and parsed.cached == cached
        assert [r.text for r in parsed.reasons] == [r.text for r in decision.reasons]


def test_an_error_deny_and_a_long_id_round_trip() -> None:
    outcome = Outcome(deny_because("internal error", ""), "x" * 300, False, 0.0)
    assert pb.CheckResponse.FromString(response_bytes(outcome)) == built(outcome)


def test_request_memo_keeps_small_requests_and_empties_when_full() -> None:
    memo = RequestMemo(entries=2, max_bytes=8)
    req = Request("user", "al", "read", "document", "a")
    memo.keep(b"123456789", req)  # over max_bytes: not kept
    assert memo.get(b"123456789") is None
    memo.keep(b"a", req)
    memo.keep(b"b", req)
    assert memo.get(b"a") is req and memo.get(b"b") is req
    memo.keep(b"c", req)  # full: emptied, then kept
    assert memo.get(b"a") is None and memo.get(b"c") is req


def test_the_servicer_keeps_requests_without_a_token_only(tmp_path: Path) -> None:
    from pdp import config as settings
    from pdp.client import make_request
    from pdp.server import DecisionServicer, build_service
    from pdp.service import PolicyHolder

    config = settings.Config()
    servicer = DecisionServicer(
        build_service(config, PolicyHolder(load(tmp_path, {"p.policy": POLICY}))), config)
    plain = make_request("user:al", "read", "document:a").SerializeToString()
    with_token = make_request("user:al", "read", "document:a", token="t.t.t").SerializeToString()
    for data in (plain, with_token):
        pb.CheckResponse.FromString(servicer.Check(data, None))  # type: ignore[arg-type]
    assert servicer._memo.get(plain) is not None
    assert servicer._memo.get(with_token) is None
