"""The example policy set (policies/) and the AuthZEN example folders load,
their own `test` blocks pass through `pdp test`, and the behaviours they are
there to show hold when asked through decide() directly."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pdp.engine import decide
from pdp.loader import load_policy_dir
from pdp.model import Decision, Effect, Request
from pdp.testing import run_tests

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "policies"
EXAMPLE_DIRS = [POLICIES, ROOT / "examples" / "authzen-todo", ROOT / "examples" / "authzen-gateway"]
ORDERS_API = "spiffe://prod.example/ns/orders/sa/api"


def _pdp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pdp", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )


@pytest.fixture(scope="module")
def shop() -> Any:
    return load_policy_dir(POLICIES)


def ask(
    policy: Any,
    subject: str,
    action: str,
    resource: str,
    *,
    subject_props: Mapping[str, Any] | None = None,
    resource_props: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    roles: frozenset[str] = frozenset(),
) -> Decision:
    subject_type, _, subject_id = subject.partition(":")
    resource_type, _, resource_id = resource.partition(":")
    return decide(policy, Request(
        subject_type, subject_id, action, resource_type, resource_id,
        subject_properties=subject_props or {},
        resource_properties=resource_props or {},
        context=context or {},
        roles=roles,
    ))


@pytest.mark.parametrize("folder", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_folder_validates(folder: Path) -> None:
    result = _pdp("validate", str(folder))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("folder", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_folder_test_blocks_pass(folder: Path) -> None:
    result = _pdp("test", str(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failed" in result.stdout, result.stdout


@pytest.mark.parametrize("folder", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_folder_test_blocks_pass_through_the_library(folder: Path) -> None:
    results = run_tests(load_policy_dir(folder))
    assert len(results) >= 2
    failures = [
        (r.test.name, case.case, case.decision.reasons)
        for r in results for case in r.cases if not case.passed
    ]
    assert failures == []


def test_shop_summary_counts_every_part() -> None:
    policy = load_policy_dir(POLICIES)
    summary = policy.summary()
    assert (summary["roles"], summary["rules"], summary["subjects"]) == (10, 30, 6)
    assert summary["version"] == policy.version
    assert len(policy.version) == 64


def test_deny_overrides_platform_admin_allow_all(shop: Any) -> None:
    assert ask(shop, "user:olivia", "shipping.relabel", "shipment:77").allowed
    decision = ask(shop, "user:olivia", "audit.delete", "audit-log:payments/2026-11-24")
    assert not decision.allowed
    assert [r.rule for r in decision.reasons] == ["audit-logs-append-only"]
    reason = decision.reasons[0]
    assert reason.effect is Effect.DENY
    assert reason.text == "audit logs are append-only: nobody may change or delete them"
    assert reason.file == "guardrails.policy"
    assert reason.line == 10
    assert "platform-admin" in decision.roles and "auditor" in decision.roles


def test_large_refund_needs_finance_department(shop: Any) -> None:
    big = {"amount": 900}
    assert ask(shop, "user:dana", "orders.refund", "order:9", resource_props=big).allowed
    denied = ask(shop, "user:olivia", "orders.refund", "order:9", resource_props=big)
    assert [r.rule for r in denied.reasons] == ["large-refund-needs-finance"]
    # The directory's department beats the one the caller sends.
    spoofed = ask(shop, "user:bob", "orders.refund", "order:9", resource_props=big,
                  subject_props={"department": "finance"}, roles=frozenset({"finance"}))
    assert not spoofed.allowed
    # No amount at all counts as a large refund (the deny is written fail-safe).
    no_amount = ask(shop, "user:bob", "orders.refund", "order:9", roles=frozenset({"finance"}))
    assert not no_amount.allowed


def test_ownership_condition(shop: Any) -> None:
    mine = ask(shop, "user:alice", "orders.read", "order:1", resource_props={"owner": "alice"})
    assert mine.allowed
    assert [r.rule for r in mine.reasons] == ["customer-read-own-order"]
    assert mine.reasons[0].file == "roles.policy"
    theirs = ask(shop, "user:alice", "orders.read", "order:2", resource_props={"owner": "carol"})
    assert not theirs.allowed
    assert not ask(shop, "user:alice", "orders.read", "order:3").allowed
    cancel = {"owner": "alice", "status": "shipped"}
    assert not ask(shop, "user:alice", "orders.cancel", "order:1", resource_props=cancel).allowed


def test_directory_roles_and_inheritance(shop: Any) -> None:
    decision = ask(shop, "user:dana", "orders.read", "order:1002")
    assert decision.allowed
    assert {"finance", "support", "customer"} <= decision.roles
    assert [r.rule for r in decision.reasons] == ["support-read-orders"]
    job = ask(shop, "machine:nightly-report", "reports.write", "report:nightly/2026-11-24.csv")
    assert job.allowed and "report-job" in job.roles
    assert not ask(shop, "machine:nightly-report", "reports.write", "report:finance/q3.pdf").allowed


def test_default_deny_lists_the_roles(shop: Any) -> None:
    decision = ask(shop, "user:bob", "invoices.issue", "invoice:2026/0042")
    assert not decision.allowed
    assert len(decision.reasons) == 1
    assert decision.reasons[0].effect is Effect.DENY
    assert "support" in decision.reasons[0].text


def test_service_identities(shop: Any) -> None:
    assert ask(shop, "service:orders", "payments.charge", "payment:p-1").allowed
    by_spiffe = ask(shop, f"service:{ORDERS_API}", "payments.charge", "payment:p-1")
    assert by_spiffe.allowed
    assert {"orders-service", "workload"} <= by_spiffe.roles
    assert not ask(shop, f"service:{ORDERS_API}/debug", "payments.charge", "payment:p-1").allowed
    staging = "service:spiffe://staging.example/ns/orders/sa/api"
    denied = ask(shop, staging, "payments.charge", "payment:p-1",
                 roles=frozenset({"orders-service"}))
    assert [r.rule for r in denied.reasons] == ["staging-never-in-prod"]
    machine = ask(shop, "machine:nightly-report", "customers.read", "customer:carol",
                  roles=frozenset({"orders-service"}))
    assert [r.rule for r in machine.reasons] == ["no-customer-data-for-machines"]


def test_condition_on_context_network(shop: Any) -> None:
    office = {"ip": "10.20.3.4"}
    assert ask(shop, "user:bob", "customers.read", "customer:carol", context=office).allowed
    home = {"ip": "203.0.113.9"}
    assert not ask(shop, "user:bob", "customers.read", "customer:carol", context=home).allowed
