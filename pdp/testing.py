"""Runs a policy set's `test` blocks against the engine."""

from __future__ import annotations

from dataclasses import dataclass

from pdp.engine import decide
from pdp.model import Decision
from pdp.policy import CompiledPolicy, PolicyTest, TestCase


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: TestCase
    decision: Decision

    @property
    def passed(self) -> bool:
        return self.decision.allowed == self.case.expect_allow


@dataclass(frozen=True, slots=True)
class TestResult:
    test: PolicyTest
    cases: tuple[CaseResult, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)


def run_tests(policy: CompiledPolicy) -> list[TestResult]:
    return [
        TestResult(test, tuple(CaseResult(c, decide(policy, c.request)) for c in test.cases))
        for test in policy.tests
    ]
