"""The compiled policy: immutable, indexed, and introspectable.

A decision never scans the rule list. Rules are indexed by (role, action,
resource type), with `*` standing for any action or any type and "" for the
top-level rules that apply to every subject; inside an index entry, by the
exact resource ID or by the fixed first path segment of the pattern.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pdp.conditions import Getter, Predicate
from pdp.model import Effect, Reason, Request
from pdp.patterns import Pattern

ANY = "*"
EVERYONE = ""  # the index's role key for top-level rules
MEMO_LIMIT = 65536  # entries per memo table before it is cleared (bounds memory)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int  # position in the set, for stable ordering of reasons
    name: str
    effect: Effect
    role: str | None
    actions: frozenset[str] | None  # None: any action
    pattern: Pattern
    condition: Predicate | None
    reads: frozenset[str]  # attribute paths the condition reads
    readers: tuple[tuple[str, Getter], ...]  # the same paths with their getters, to explain
    reason: Reason  # built once, shared by every decision this rule makes
    file: str
    line: int

    @property
    def is_deny(self) -> bool:
        return self.effect is Effect.DENY


@dataclass(frozen=True, slots=True)
class RuleBucket:
    """The rules of one (role, action, type): exact IDs, by first segment, the rest."""

    exact: Mapping[str, tuple[CompiledRule, ...]]
    by_segment: Mapping[str, tuple[CompiledRule, ...]]
    general: tuple[CompiledRule, ...]


@dataclass(frozen=True, slots=True)
class RoleInfo:
    name: str
    inherits: tuple[str, ...]
    closure: frozenset[str]  # the role and every role it inherits, transitively
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class Grant:
    roles: tuple[str, ...]
    subject: Pattern
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    roles: tuple[str, ...]
    properties: Mapping[str, Any]
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class TestCase:
    expect_allow: bool
    subject: str
    action: str
    resource: str
    request: Request
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class PolicyTest:
    name: str
    cases: tuple[TestCase, ...]
    file: str
    line: int


@dataclass(slots=True)
class CompiledPolicy:
    """Built once by the compiler and never changed; the memo tables are caches only."""

    version: str
    source_dir: str
    files: tuple[str, ...]
    roles: Mapping[str, RoleInfo]
    rules: tuple[CompiledRule, ...]
    grants: tuple[Grant, ...]
    directory: Mapping[tuple[str, str], DirectoryEntry]
    tests: tuple[PolicyTest, ...]
    index: Mapping[tuple[str, str, str], RuleBucket]
    exact_grants: Mapping[tuple[str, str], frozenset[str]]
    pattern_grants: Mapping[str, tuple[tuple[Pattern, frozenset[str]], ...]]
    _subject_memo: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    _close_memo: dict[frozenset[str], frozenset[str]] = field(default_factory=dict)
    _plan_memo: dict[tuple[frozenset[str], str, str], tuple[RuleBucket, ...]] = field(
        default_factory=dict
    )
    _reads_memo: dict[tuple[frozenset[str], str, str], tuple[str, ...]] = field(default_factory=dict)
    _explain_memo: dict[tuple[frozenset[str], str, str], bool] = field(default_factory=dict)
    _roles_text_memo: dict[frozenset[str], str] = field(default_factory=dict)
    # Closed roles of every subject the set names exactly (directory, grants),
    # computed once at compile time and never evicted.
    _known_subjects: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Counts for people: files (policy and directory), roles, rules, grants
        (one per role list and subject pattern), directory subjects, test blocks
        and their expectations."""
        return {
            "files": len(self.files),
            "roles": len(self.roles),
            "rules": len(self.rules),
            "grants": len(self.grants),
            "subjects": len(self.directory),
            "tests": len(self.tests),
            "expectations": sum(len(t.cases) for t in self.tests),
            "version": self.version,
        }

    # ---- roles ----

    def close(self, roles: frozenset[str]) -> frozenset[str]:
        """Roles closed under inheritance; roles the set does not define stay as they are."""
        closed = self._close_memo.get(roles)
        if closed is None:
            result = set(roles)
            for role in roles:
                info = self.roles.get(role)
                if info is not None:
                    result |= info.closure
            closed = frozenset(result)
            _remember(self._close_memo, roles, closed)
        return closed

    def subject_roles(self, subject_type: str, subject_id: str) -> frozenset[str]:
        """The closed roles that grants and the directory give this subject."""
        key = (subject_type, subject_id)
        roles = self._known_subjects.get(key)
        if roles is None:
            roles = self._subject_memo.get(key)
            if roles is None:
                roles = self.close(self._granted(key))
                _remember(self._subject_memo, key, roles)
        return roles

    def know_subjects(self) -> None:
        """Called once by the compiler: resolve the subjects the set names."""
        for key in (*self.directory, *self.exact_grants):
            self._known_subjects[key] = self.close(self._granted(key))

    def roles_text(self, roles: frozenset[str]) -> str:
        text = self._roles_text_memo.get(roles)
        if text is None:
            text = ", ".join(sorted(roles)) or "none"
            _remember(self._roles_text_memo, roles, text)
        return text

    def _granted(self, key: tuple[str, str]) -> frozenset[str]:
        granted: set[str] = set(self.exact_grants.get(key, ()))
        entry = self.directory.get(key)
        if entry is not None:
            granted.update(entry.roles)
        for type_ in (key[0], ANY):
            for pattern, roles in self.pattern_grants.get(type_, ()):
                if pattern.match_id(key[1]):
                    granted |= roles
        return frozenset(granted)

    # ---- rules ----

    def plan(self, roles: frozenset[str], action: str, resource_type: str) -> tuple[RuleBucket, ...]:
        """The index entries a decision for these roles, action and type must look at."""
        key = (roles, action, resource_type)
        plan = self._plan_memo.get(key)
        if plan is None:
            index = self.index
            plan = tuple(
                bucket
                for role in (EVERYONE, *sorted(roles))
                for act in (action, ANY)
                for typ in (resource_type, ANY)
                if (bucket := index.get((role, act, typ))) is not None
            )
            _remember(self._plan_memo, key, plan)
        return plan

    def reads_for(self, roles: frozenset[str], action: str, resource_type: str) -> tuple[str, ...]:
        """Every attribute path that a decision for these roles, action and type may read."""
        key = (roles, action, resource_type)
        reads = self._reads_memo.get(key)
        if reads is None:
            found: set[str] = set()
            for bucket in self.plan(roles, action, resource_type):
                for rules in (*bucket.exact.values(), *bucket.by_segment.values(), bucket.general):
                    for rule in rules:
                        found |= rule.reads
            reads = tuple(sorted(found))
            _remember(self._reads_memo, key, reads)
        return reads

    def explains_missing(self, roles: frozenset[str], action: str, resource_type: str) -> bool:
        """Whether any allow rule a decision may meet has a condition (whose
        missing inputs a default deny would name)."""
        key = (roles, action, resource_type)
        found = self._explain_memo.get(key)
        if found is None:
            found = any(
                rule.readers and not rule.is_deny
                for bucket in self.plan(roles, action, resource_type)
                for rules in (*bucket.exact.values(), *bucket.by_segment.values(), bucket.general)
                for rule in rules
            )
            _remember(self._explain_memo, key, found)
        return found

    def rules_for(self, roles: frozenset[str], action: str, type_: str, id_: str) -> list[CompiledRule]:
        """Every rule whose role, action and pattern fit (conditions not evaluated)."""
        segment = id_.partition("/")[0]
        found = [
            rule
            for bucket in self.plan(roles, action, type_)
            for rules in (bucket.exact.get(id_, ()), bucket.by_segment.get(segment, ()), bucket.general)
            for rule in rules
            if rule.pattern.match_id(id_)
        ]
        return sorted(found, key=lambda r: r.index)


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memo) >= MEMO_LIMIT:
        memo.clear()  # crude but bounded; the memo is rebuilt from hot keys
    memo[key] = value

