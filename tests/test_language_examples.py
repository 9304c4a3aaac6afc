"""Every example of the policy language page, held to what the page says."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdp.testing import run_tests
from tests.policy_helpers import allowed, ask, load

ROLES = """
role viewer {
    allow read, list on document:**
}

role editor inherits viewer {
    allow write on document:**
    allow delete on document:drafts/** when resource.owner == subject.id
}

role admin inherits editor, auditor {
    allow * on *
}

role auditor {
    allow read on audit-log:**
}
"""

GRANTS = """
grant viewer to user:*
grant editor to user:alice, service:docs-indexer
grant admin to user:root
grant editor, auditor to service:spiffe://prod.example/ns/ops/**
"""

TESTS = """
test "editors may delete only their own drafts" {
    expect allow user:alice delete document:drafts/7 given resource.owner = "alice"
    expect deny  user:alice delete document:drafts/7 given resource.owner = "bob"
    expect deny  user:alice delete document:reports/q3
}

test "services get what they are granted" {
    expect allow service:docs-indexer write document:reports/q3
    expect deny  service:unknown read document:reports/q3
    expect allow user:carol read audit-log:2026 with roles auditor
}
"""


@pytest.fixture
def page_set(tmp_path: Path):
    return load(tmp_path, {"roles.policy": ROLES, "grants.policy": GRANTS, "tests.policy": TESTS})


# ---- patterns: the table on the page, row by row ----

PATTERN_ROWS = [
    ("document:a/b", "document:a/b", True),
    ("document:a/b", "document:a/bc", False),
    ("document:*", "document:x", True),
    ("document:*", "document:a/x", False),
    ("document:**", "document:a/b/c", True),
    ("document:reports/**", "document:reports/2026/q3.pdf", True),
    ("document:reports/**", "document:drafts/x", False),
    ("document:*.pdf", "document:x.pdf", True),
    ("document:*.pdf", "document:a/x.pdf", False),
    ("*", "anything:at/all", True),
    ("*:public/**", "image:public/logo.png", True),
    ("*:public/**", "image:private/logo.png", False),
    ("document:a.b", "document:aXb", False),  # no other character is special
]


@pytest.mark.parametrize(("pattern", "resource", "matches"), PATTERN_ROWS)
def test_pattern_table(tmp_path: Path, pattern: str, resource: str, matches: bool) -> None:
    policy = load(tmp_path, {"p.policy": f"allow read on {pattern}\n"})
    assert allowed(policy, "user:x", "read", resource) is matches


def test_action_lists_and_any_action(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": "allow read, list on a:x\nallow * on b:x\n"})
    assert allowed(policy, "user:u", "read", "a:x")
    assert allowed(policy, "user:u", "list", "a:x")
    assert not allowed(policy, "user:u", "write", "a:x")
    assert allowed(policy, "user:u", "orders.refund", "b:x")


def test_ids_with_slashes_colons_and_dots(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": "allow GET on route:/api/orders/**\n"
                                         "grant viewer to service:spiffe://prod.example/ns/pay/sa/api\n"
                                         "role viewer {\n allow read on document:reports/2026/q3.pdf\n}\n"})
    assert allowed(policy, "user:u", "GET", "route:/api/orders/42")
    assert allowed(policy, "service:spiffe://prod.example/ns/pay/sa/api", "read",
                   "document:reports/2026/q3.pdf")


# ---- roles and inheritance ----


def test_admin_holds_every_inherited_role(page_set) -> None:
    decision = ask(page_set, "user:root", "read", "audit-log:2026")
    assert decision.roles == {"admin", "editor", "viewer", "auditor"}
    assert decision.allowed


def test_rules_inside_a_role_apply_only_to_holders(page_set) -> None:
    assert allowed(page_set, "user:bob", "read", "document:x")
    assert not allowed(page_set, "user:bob", "write", "document:x")
    assert allowed(page_set, "user:alice", "write", "document:x")
    assert not allowed(page_set, "machine:cron", "read", "document:x")


def test_top_level_rule_applies_to_every_subject(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": "allow read on public:**\n"})
    assert allowed(policy, "machine:backup-cron", "read", "public:a/b")
    assert allowed(policy, "service:x", "read", "public:c")


# ---- rules, reasons and names ----


def test_reason_and_as_name(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": 'deny delete on audit-log:** reason "audit logs are kept" '
                                         "as keep-audit-logs\nallow * on *\n"})
    decision = ask(policy, "user:a", "delete", "audit-log:1")
    assert not decision.allowed
    (reason,) = decision.reasons
    assert (reason.rule, reason.effect.value, reason.text, reason.file, reason.line) == (
        "keep-audit-logs", "deny", "audit logs are kept", "p.policy", 1)


def test_rule_without_name_is_named_file_and_line(tmp_path: Path) -> None:
    policy = load(tmp_path, {"sub/p.policy": "\n\nallow read on a:b\n"})
    (reason,) = ask(policy, "user:u", "read", "a:b").reasons
    assert reason.rule == "sub/p.policy:3"
    assert (reason.file, reason.line) == ("sub/p.policy", 3)


def test_statement_continues_on_when_reason_as_and_inside_brackets(tmp_path: Path) -> None:
    text = """
deny delete on document:**
    # comments and blank lines may sit between the parts
    when subject.department in [
        "finance",
        "audit"
    ] and (resource.locked == true
           or resource.legal_hold == true)

    reason "locked documents stay"
    as locked-docs
allow * on document:**
"""
    policy = load(tmp_path, {"p.policy": text})
    decision = ask(policy, "user:u", "delete", "document:x",
                   subject_props={"department": "audit"}, resource_props={"locked": True})
    assert [r.rule for r in decision.reasons] == ["locked-docs"]
    assert allowed(policy, "user:u", "delete", "document:x",
                   subject_props={"department": "sales"}, resource_props={"locked": True})


# ---- decisions ----


def test_deny_overrides_allow_and_lists_every_deny(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": "allow * on *\n"
                                         'deny write on doc:** reason "frozen" as frozen\n'
                                         'deny write on doc:a/** reason "a is archived" as archived\n'})
    decision = ask(policy, "user:u", "write", "doc:a/1")
    assert not decision.allowed
    assert [r.rule for r in decision.reasons] == ["frozen", "archived"]
    assert all(r.effect.value == "deny" for r in decision.reasons)


def test_allow_lists_every_allow_rule_that_applied(tmp_path: Path) -> None:
    text = "allow read on doc:** as one\nallow read, write on doc:a/** as two\n"
    policy = load(tmp_path, {"p.policy": text})
    decision = ask(policy, "user:u", "read", "doc:a/1")
    assert decision.allowed
    assert [r.rule for r in decision.reasons] == ["one", "two"]


def test_nothing_is_allowed_by_default_and_the_reason_lists_roles(page_set) -> None:
    decision = ask(page_set, "user:bob", "write", "document:x")
    assert not decision.allowed
    (reason,) = decision.reasons
    assert reason.effect.value == "deny"
    assert "no rule allows write on document:x" in reason.text
    assert "viewer" in reason.text


def test_decision_carries_the_policy_version(page_set) -> None:
    assert ask(page_set, "user:bob", "read", "document:x").policy_version == page_set.version


# ---- grants ----


def test_grants_from_the_page(page_set) -> None:
    assert allowed(page_set, "user:anyone", "read", "document:x")  # viewer to user:*
    assert allowed(page_set, "service:docs-indexer", "write", "document:x")
    assert allowed(page_set, "user:root", "anything", "thing:1")
    ops = "service:spiffe://prod.example/ns/ops/sa/deployer"
    assert allowed(page_set, ops, "write", "document:x")
    assert allowed(page_set, ops, "read", "audit-log:1")
    assert not allowed(page_set, "service:spiffe://prod.example/ns/pay/sa/api", "read", "document:x")


def test_roles_brought_with_the_request_count_like_grants(page_set) -> None:
    assert allowed(page_set, "user:carol", "read", "audit-log:2026", roles=("auditor",))
    assert not allowed(page_set, "user:carol", "read", "audit-log:2026")


def test_undefined_role_brought_with_request_contributes_no_rules(page_set) -> None:
    decision = ask(page_set, "machine:x", "read", "document:x", roles=("superuser",))
    assert not decision.allowed
    assert "superuser" in decision.roles


# ---- directory data ----

DIRECTORY = {
    "user:alice": {"roles": ["editor"], "properties": {"email": "alice@example.com",
                                                      "department": "finance"}},
    "service:billing": {"roles": ["viewer"]},
}

FINANCE_RULES = ROLES + """
role finance-reader {
    allow read on ledger:** when subject.department == "finance"
}
"""


def test_directory_roles_count_as_grants(tmp_path: Path) -> None:
    policy = load(tmp_path, {"roles.policy": ROLES, "people.subjects.json": DIRECTORY})
    assert allowed(policy, "user:alice", "write", "document:x")
    assert allowed(policy, "service:billing", "read", "document:x")
    assert not allowed(policy, "service:billing", "write", "document:x")


def test_directory_properties_are_read_as_subject_names(tmp_path: Path) -> None:
    policy = load(tmp_path, {"roles.policy": FINANCE_RULES, "people.subjects.json": DIRECTORY})
    assert allowed(policy, "user:alice", "read", "ledger:2026", roles=("finance-reader",))


def test_directory_wins_over_request_properties(tmp_path: Path) -> None:
    policy = load(tmp_path, {"roles.policy": FINANCE_RULES, "people.subjects.json": DIRECTORY})
    # bob is not in the directory: his request property is used
    assert allowed(policy, "user:bob", "read", "ledger:1", roles=("finance-reader",),
                   subject_props={"department": "finance"})
    # alice's department comes from the directory, whatever the caller claims
    moved = dict(DIRECTORY, **{"user:alice": {"properties": {"department": "sales"}}})
    policy = load(tmp_path / "b", {"roles.policy": FINANCE_RULES, "people.subjects.json": moved})
    assert not allowed(policy, "user:alice", "read", "ledger:1", roles=("finance-reader",),
                       subject_props={"department": "finance"})


def test_directory_and_request_roles_are_joined(tmp_path: Path) -> None:
    policy = load(tmp_path, {"roles.policy": ROLES, "people.subjects.json": DIRECTORY})
    decision = ask(policy, "user:alice", "read", "audit-log:1", roles=("auditor",))
    assert decision.allowed
    assert {"editor", "viewer", "auditor"} <= decision.roles


def test_directory_data_is_part_of_the_version(tmp_path: Path) -> None:
    one = load(tmp_path / "one", {"roles.policy": ROLES, "d.subjects.json": DIRECTORY})
    two = load(tmp_path / "two", {"roles.policy": ROLES,
                                  "d.subjects.json": {"user:alice": {"roles": ["viewer"]}}})
    same = load(tmp_path / "same", {"roles.policy": ROLES, "d.subjects.json": DIRECTORY})
    assert one.version != two.version
    assert one.version == same.version


# ---- conditions ----

CONDITIONS = """
allow delete on document:drafts/** when resource.owner == subject.id
allow approve on invoice:** when subject.department in ["finance", "audit"] and not resource.locked
allow enter on room:** when context.ip_trusted == true or "break-glass" in subject.roles
allow pay on invoice:** when resource.amount <= 1000
"""


@pytest.fixture
def conditions(tmp_path: Path):
    return load(tmp_path, {"c.policy": CONDITIONS})


def test_ownership_condition(conditions) -> None:
    draft = ("user:alice", "delete", "document:drafts/1")
    assert allowed(conditions, *draft, resource_props={"owner": "alice"})
    assert not allowed(conditions, *draft, resource_props={"owner": "bob"})


def test_membership_and_not(conditions) -> None:
    finance = {"department": "finance"}
    assert allowed(conditions, "user:a", "approve", "invoice:1", subject_props=finance)
    assert allowed(conditions, "user:a", "approve", "invoice:1", subject_props=finance,
                   resource_props={"locked": False})
    assert not allowed(conditions, "user:a", "approve", "invoice:1", subject_props=finance,
                       resource_props={"locked": True})
    assert not allowed(conditions, "user:a", "approve", "invoice:1", subject_props={"department": "it"})


def test_or_and_roles_membership(conditions) -> None:
    assert allowed(conditions, "user:a", "enter", "room:1", context={"ip_trusted": True})
    assert allowed(conditions, "user:a", "enter", "room:1", roles=("break-glass",))
    assert not allowed(conditions, "user:a", "enter", "room:1", context={"ip_trusted": "true"})


def test_number_comparison(conditions) -> None:
    assert allowed(conditions, "user:a", "pay", "invoice:1", resource_props={"amount": 1000})
    assert allowed(conditions, "user:a", "pay", "invoice:1", resource_props={"amount": 999.5})
    assert not allowed(conditions, "user:a", "pay", "invoice:1", resource_props={"amount": 1000.01})
    assert not allowed(conditions, "user:a", "pay", "invoice:1", resource_props={"amount": "5"})


def test_missing_attribute_is_false_and_explained(conditions) -> None:
    decision = ask(conditions, "user:alice", "delete", "document:drafts/1")
    assert not decision.allowed
    assert "resource.owner" in decision.reasons[0].text


def test_not_of_a_missing_attribute_is_true(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": "allow read on a:** when not resource.secret == true\n"})
    assert allowed(policy, "user:u", "read", "a:1")
    assert not allowed(policy, "user:u", "read", "a:1", resource_props={"secret": True})


VALUES = [
    ('resource.name == "say \\"hi\\" \\\\o/"', {"name": 'say "hi" \\o/'}, True),
    ("resource.n == 3", {"n": 3}, True),
    ("resource.n == 3", {"n": 3.0}, True),
    ("resource.n == 3", {"n": "3"}, False),  # different kinds
    ("resource.n == 1", {"n": True}, False),  # a boolean is not a number
    ("resource.n != 3", {"n": "3"}, False),  # different kinds: false, also for !=
    ("resource.n != 3", {"n": 4}, True),
    ("resource.x < 2.5", {"x": 2}, True),
    ("resource.x >= 2.5", {"x": 2.5}, True),
    ('resource.s > "b"', {"s": "c"}, True),
    ('resource.s > "b"', {"s": 3}, False),
    ('"ell" in resource.s', {"s": "hello"}, True),
    ('"x" in resource.s', {"s": "hello"}, False),
    ("2 in resource.l", {"l": [1, 2]}, True),
    ('"2" in resource.l', {"l": [1, 2]}, False),
    ('resource.t not in ["a", "b"]', {"t": "c"}, True),
    ('resource.t not in ["a", "b"]', {"t": "a"}, False),
    ('resource.t not in ["a", "b"]', {}, False),  # missing: the comparison is false
    ('not resource.t in ["a", "b"]', {}, True),
    ("resource.owner.team == subject.team", {"owner": {"team": "red"}}, True),
    ("resource.flag", {"flag": True}, True),
    ("resource.flag", {"flag": "yes"}, False),
    ("resource.l == [1, 2]", {"l": [1, 2]}, True),
]


@pytest.mark.parametrize(("condition", "props", "expected"), VALUES)
def test_values_and_operators(tmp_path: Path, condition: str, props: dict, expected: bool) -> None:
    policy = load(tmp_path, {"p.policy": f"allow read on a:** when {condition}\n"})
    assert allowed(policy, "user:u", "read", "a:1", resource_props=props,
                   subject_props={"team": "red"}) is expected


FUNCTIONS = [
    ('startswith(resource.path, "/api/")', {"path": "/api/x"}, {}, True),
    ('startswith(resource.path, "/api/")', {"path": 7}, {}, False),
    ('endswith(subject.email, "@example.com")', {}, {"email": "a@example.com"}, True),
    ('matches(resource.parent, "folder:team-1/**")', {"parent": "folder:team-1/a/b"}, {}, True),
    ('matches(resource.parent, "folder:team-1/*")', {"parent": "folder:team-1/a/b"}, {}, False),
    ('matches(subject.email, "*@example.com")', {}, {"email": "a@example.com"}, True),
    ('cidr(context.ip, "10.0.0.0/8")', {}, {}, False),
]


@pytest.mark.parametrize(("condition", "rprops", "sprops", "expected"), FUNCTIONS)
def test_functions(tmp_path: Path, condition: str, rprops: dict, sprops: dict, expected: bool) -> None:
    policy = load(tmp_path, {"p.policy": f"allow read on a:** when {condition}\n"})
    assert allowed(policy, "user:u", "read", "a:1", resource_props=rprops,
                   subject_props=sprops) is expected


@pytest.mark.parametrize(("ip", "expected"), [("10.1.2.3", True), ("192.168.0.1", False),
                                              ("not-an-ip", False), ("::1", False)])
def test_cidr(tmp_path: Path, ip: str, expected: bool) -> None:
    policy = load(tmp_path, {"p.policy": 'allow read on a:** when cidr(context.ip, "10.0.0.0/8")\n'})
    assert allowed(policy, "user:u", "read", "a:1", context={"ip": ip}) is expected


def test_paths_for_ids_types_and_action(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": 'allow * on *:** when subject.type == "service" '
                                         'and resource.type == "queue" and action == "consume" '
                                         'and resource.id == subject.id\n'})
    assert allowed(policy, "service:orders", "consume", "queue:orders")
    assert not allowed(policy, "service:orders", "consume", "queue:billing")
    assert not allowed(policy, "user:orders", "consume", "queue:orders")


# ---- tests ----


def test_the_page_tests_pass(page_set) -> None:
    results = run_tests(page_set)
    assert [r.test.name for r in results] == [
        "editors may delete only their own drafts", "services get what they are granted"]
    assert all(r.passed for r in results)
    assert sum(len(r.cases) for r in results) == 6


def test_a_failing_expectation_reports_where_and_why(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": 'allow read on a:**\n\ntest "t" {\n'
                                         "    expect deny user:u read a:1\n}\n"})
    (result,) = run_tests(policy)
    (case,) = result.cases
    assert not case.passed
    assert (case.case.file, case.case.line) == ("p.policy", 4)
    assert case.decision.reasons[0].rule == "p.policy:1"


# ---- files ----


def test_every_policy_file_under_the_folder_counts_and_others_are_ignored(tmp_path: Path) -> None:
    policy = load(tmp_path, {
        "a.policy": "role r {\n  allow read on a:**\n}\n",
        "deep/er/b.policy": "grant r to user:*\n",
        "notes.txt": "this is not a policy {{{",
        "c.policy.bak": "garbage {{{",
        "x.json": "{not json",
    })
    assert policy.files == ("a.policy", "deep/er/b.policy")
    assert allowed(policy, "user:u", "read", "a:1")


def test_names_are_case_sensitive(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": "allow Read on Doc:**\n"})
    assert allowed(policy, "user:u", "Read", "Doc:1")
    assert not allowed(policy, "user:u", "read", "Doc:1")
    assert not allowed(policy, "user:u", "Read", "doc:1")


def test_a_deny_that_applied_on_a_missing_attribute_says_so(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": "allow * on *\n"
                                         'deny refund on order:** when not resource.amount <= 500 '
                                         'reason "large refunds need finance" as big-refund\n'})
    (reason,) = ask(policy, "user:u", "refund", "order:1").reasons
    assert reason.rule == "big-refund"
    assert reason.text == "large refunds need finance (missing attributes: resource.amount)"
    (reason,) = ask(policy, "user:u", "refund", "order:1", resource_props={"amount": 900}).reasons
    assert reason.text == "large refunds need finance"


def test_a_closing_brace_right_after_a_pattern_closes_the_block(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": "role r {\n  allow GET on route:/todos/{todoId}}\n"
                                         "role s { allow read on document:**}\ngrant r, s to user:a\n"})
    assert allowed(policy, "user:a", "GET", "route:/todos/{todoId}")
    assert allowed(policy, "user:a", "read", "document:x")


def test_hidden_folders_are_skipped(tmp_path: Path) -> None:
    policy = load(tmp_path, {"a.policy": "allow read on a:**\n", ".git/x.policy": "broken {{{\n"})
    assert policy.files == ("a.policy",)


def test_action_properties_are_read_as_action_names(tmp_path: Path) -> None:
    from pdp.engine import decide
    from pdp.model import Request

    policy = load(tmp_path, {"p.policy": 'allow pay on invoice:** when action.method == "card"\n'})
    card = Request("user", "u", "pay", "invoice", "1", action_properties={"method": "card"})
    cash = Request("user", "u", "pay", "invoice", "1", action_properties={"method": "cash"})
    assert decide(policy, card).allowed
    assert not decide(policy, cash).allowed


def test_json_null_equals_nothing(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": "allow read on a:** when resource.x == resource.y\n"
                                         "allow list on a:** when resource.x != 1\n"})
    assert not allowed(policy, "user:u", "read", "a:1", resource_props={"x": None, "y": None})
    assert not allowed(policy, "user:u", "list", "a:1", resource_props={"x": None})


def test_given_and_with_lines_continue_an_expect(tmp_path: Path) -> None:
    text = ('role auditor {\n  allow read on log:** when resource.owner == subject.id\n}\n'
            'test "continued" {\n'
            "    expect allow user:a read log:1\n"
            '        given resource.owner = "a"\n'
            "        with roles auditor\n"
            "}\n")
    (result,) = run_tests(load(tmp_path, {"p.policy": text}))
    assert result.passed and len(result.cases) == 1
