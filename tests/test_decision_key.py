"""The decision cache key: the policy version plus exactly what the decision can depend on."""

from __future__ import annotations

from pathlib import Path

from pdp.engine import decision_key
from pdp.model import Request
from tests.policy_helpers import load

POLICY = """
role editor {
    allow delete on document:drafts/** when resource.owner == subject.id
    allow read on document:** when context.net.trusted == true
}
grant editor to user:*
"""


def req(**kw: object) -> Request:
    base: dict[str, object] = dict(subject_type="user", subject_id="alice", action="delete",
                                   resource_type="document", resource_id="drafts/1")
    base.update(kw)
    return Request(**base)  # type: ignore[arg-type]


def test_attributes_no_rule_reads_share_a_key(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": POLICY})
    one = req(resource_properties={"owner": "alice", "colour": "red"}, context={"ip": "1.2.3.4"})
    two = req(resource_properties={"owner": "alice", "colour": "blue"}, context={"ip": "5.6.7.8"})
    assert decision_key(policy, one) == decision_key(policy, two)


def test_a_changed_input_that_a_rule_reads_changes_the_key(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": POLICY})
    assert decision_key(policy, req(resource_properties={"owner": "alice"})) != decision_key(
        policy, req(resource_properties={"owner": "bob"}))
    read = req(action="read")
    assert decision_key(policy, read) != decision_key(
        policy, req(action="read", context={"net": {"trusted": True}}))


def test_kinds_are_kept_apart(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": POLICY})
    keys = {decision_key(policy, req(resource_properties={"owner": value}))
            for value in (1, True, "1", 1.5, [1], {"a": 1})}
    assert len(keys) == 6


def test_identity_action_resource_and_roles_are_in_the_key(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": POLICY})
    base = decision_key(policy, req())
    for change in (dict(subject_id="bob"), dict(subject_type="service"), dict(action="read"),
                   dict(resource_id="drafts/2"), dict(resource_type="doc"),
                   dict(roles=frozenset({"editor"}))):
        assert decision_key(policy, req(**change)) != base, change


def test_a_new_policy_version_never_shares_a_key(tmp_path: Path) -> None:
    one = load(tmp_path / "a", {"p.policy": POLICY})
    two = load(tmp_path / "b", {"p.policy": POLICY + "\n# a comment changes the version\n"})
    assert decision_key(one, req()) != decision_key(two, req())
