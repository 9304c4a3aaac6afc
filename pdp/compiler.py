"""Syntax trees -> CompiledPolicy. The only module that reads the syntax tree.

Every problem in the set is collected and reported together; a set with any
error never yields a policy.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from types import MappingProxyType
from typing import Any

from pdp import ast
from pdp.conditions import ConditionError, compile_condition, compile_path
from pdp.errors import PolicyIssue, PolicySetError
from pdp.model import Effect, Reason, Request
from pdp.patterns import Pattern, PatternError, compile_pattern, parse_concrete
from pdp.policy import (
    ANY,
    EVERYONE,
    CompiledPolicy,
    CompiledRule,
    DirectoryEntry,
    Grant,
    PolicyTest,
    RoleInfo,
    RuleBucket,
    TestCase,
)


class _Issues:
    def __init__(self) -> None:
        self.items: list[PolicyIssue] = []

    def add(self, pos: ast.Pos, message: str) -> None:
        self.items.append(PolicyIssue(pos.file, pos.line, pos.column, message))


def compile_policy(
    files: Iterable[ast.PolicyFile],
    subjects: Iterable[ast.SubjectRecord] = (),
    *,
    version: str,
    source_dir: str = "",
    known_issues: Iterable[PolicyIssue] = (),
    unparsed_policy_files: bool = False,
) -> CompiledPolicy:
    """Compile a whole set. `known_issues` (e.g. syntax errors of some files)
    are reported with the rest. With `unparsed_policy_files`, undefined roles
    are not reported: the broken file may define them."""
    files = list(files)
    issues = _Issues()
    issues.items.extend(known_issues)
    tolerate_undefined = unparsed_policy_files
    roles = _compile_roles(files, issues, tolerate_undefined)
    rules = _compile_rules(files, issues)
    grants = _compile_grants(files, roles, issues, tolerate_undefined)
    directory = _compile_directory(subjects, roles, issues, tolerate_undefined)
    tests = _compile_tests(files, issues)
    if issues.items:
        raise PolicySetError(issues.items)
    policy = CompiledPolicy(
        version=version,
        source_dir=source_dir,
        files=tuple(sorted({f.path for f in files} | {entry.file for entry in directory.values()})),
        roles=MappingProxyType(roles),
        rules=tuple(rules),
        grants=tuple(grants),
        directory=MappingProxyType(directory),
        tests=tuple(tests),
        index=_build_index(rules),
        exact_grants=_exact_grants(grants),
        pattern_grants=_pattern_grants(grants),
    )
    policy.know_subjects()
    return policy


# ---- roles ----


def _compile_roles(
    files: list[ast.PolicyFile], issues: _Issues, tolerate_undefined: bool
) -> dict[str, RoleInfo]:
    decls: dict[str, ast.RoleDecl] = {}
    for role in (r for f in files for r in f.roles):
        first = decls.get(role.name.text)
        if first is not None:
            issues.add(role.name.pos, f"role {role.name.text!r} is defined twice (first at {first.pos})")
            continue
        decls[role.name.text] = role
    for role in decls.values():
        for parent in role.inherits:
            if parent.text not in decls and not tolerate_undefined:
                issues.add(parent.pos, f"role {role.name.text!r} inherits undefined role {parent.text!r}")
    cycles = _find_cycles(decls)
    for cycle in cycles:
        start = decls[cycle[0]]
        issues.add(start.name.pos, "inheritance cycle: " + " -> ".join([*cycle, cycle[0]]))
    in_cycle = {name for cycle in cycles for name in cycle}
    return {
        name: RoleInfo(
            name,
            tuple(p.text for p in decl.inherits),
            frozenset() if name in in_cycle else _closure(name, decls),
            decl.pos.file,
            decl.pos.line,
        )
        for name, decl in decls.items()
    }


def _closure(name: str, decls: dict[str, ast.RoleDecl]) -> frozenset[str]:
    seen = {name}
    stack = [name]
    while stack:
        decl = decls.get(stack.pop())
        for parent in decl.inherits if decl else ():
            if parent.text not in seen:
                seen.add(parent.text)
                stack.append(parent.text)
    return frozenset(seen)


def _find_cycles(decls: dict[str, ast.RoleDecl]) -> list[list[str]]:
    """Each inheritance cycle once, as the list of roles around it."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        path.append(name)
        for parent in decls[name].inherits:
            if parent.text not in decls:
                continue
            if state.get(parent.text) == 1:
                cycles.append(path[path.index(parent.text):])
            elif parent.text not in state:
                visit(parent.text, path)
        path.pop()
        state[name] = 2

    for name in decls:
        if name not in state:
            visit(name, [])
    return cycles


# ---- rules ----


def _compile_rules(files: list[ast.PolicyFile], issues: _Issues) -> list[CompiledRule]:
    decls = [rule for f in files for role in f.roles for rule in role.rules]
    decls += [rule for f in files for rule in f.rules]
    decls.sort(key=lambda r: (r.pos.file, r.pos.line, r.pos.column))
    named: dict[str, ast.RuleDecl] = {}
    compiled = []
    for index, decl in enumerate(decls):
        if decl.name is not None:
            first = named.get(decl.name.text)
            if first is not None:
                message = f"rule name {decl.name.text!r} is used twice (first at {first.pos})"
                issues.add(decl.name.pos, message)
            named.setdefault(decl.name.text, decl)
        rule = _compile_rule(index, decl, issues)
        if rule is not None:
            compiled.append(rule)
    return compiled


def _compile_rule(index: int, decl: ast.RuleDecl, issues: _Issues) -> CompiledRule | None:
    pattern = _pattern(decl.pattern, issues)
    condition = None
    if decl.condition is not None:
        try:
            condition = compile_condition(decl.condition)
        except ConditionError as err:
            issues.add(err.pos, str(err))
            return None
    if pattern is None:
        return None
    name = decl.name.text if decl.name else f"{decl.pos.file}:{decl.pos.line}"
    effect = Effect.DENY if decl.effect == "deny" else Effect.ALLOW
    return CompiledRule(
        index=index,
        name=name,
        effect=effect,
        role=decl.role,
        actions=None if decl.actions is None else frozenset(a.text for a in decl.actions),
        pattern=pattern,
        condition=condition.test if condition else None,
        reads=condition.reads if condition else frozenset(),
        readers=tuple((p, compile_path(p, decl.pos)) for p in sorted(condition.reads)) if condition else (),
        reason=Reason(name, effect, decl.reason or "", decl.pos.file, decl.pos.line),
        file=decl.pos.file,
        line=decl.pos.line,
    )


def _pattern(name: ast.Name, issues: _Issues) -> Pattern | None:
    try:
        return compile_pattern(name.text)
    except PatternError as err:
        issues.add(name.pos, f"bad pattern: {err}")
        return None


def _build_index(rules: list[CompiledRule]) -> MappingProxyType[tuple[str, str, str], RuleBucket]:
    grouped: dict[tuple[str, str, str], list[CompiledRule]] = defaultdict(list)
    for rule in rules:
        role = rule.role if rule.role is not None else EVERYONE
        for action in rule.actions if rule.actions is not None else (ANY,):
            grouped[(role, action, rule.pattern.type)].append(rule)
    return MappingProxyType({key: _bucket(group) for key, group in grouped.items()})


def _bucket(rules: list[CompiledRule]) -> RuleBucket:
    exact: dict[str, list[CompiledRule]] = defaultdict(list)
    by_segment: dict[str, list[CompiledRule]] = defaultdict(list)
    general: list[CompiledRule] = []
    for rule in rules:
        if rule.pattern.literal is not None:
            exact[rule.pattern.literal].append(rule)
        elif rule.pattern.segment is not None:
            by_segment[rule.pattern.segment].append(rule)
        else:
            general.append(rule)
    return RuleBucket(
        exact={k: tuple(v) for k, v in exact.items()},
        by_segment={k: tuple(v) for k, v in by_segment.items()},
        general=tuple(general),
    )


# ---- grants and directory ----


def _compile_grants(
    files: list[ast.PolicyFile], roles: dict[str, RoleInfo], issues: _Issues, tolerate: bool
) -> list[Grant]:
    grants = []
    for decl in (g for f in files for g in f.grants):
        for role in decl.roles:
            if role.text not in roles and not tolerate:
                issues.add(role.pos, f"grant of undefined role {role.text!r}")
        for subject in decl.subjects:
            pattern = _pattern(subject, issues)
            if pattern is not None:
                grants.append(
                    Grant(tuple(r.text for r in decl.roles), pattern, decl.pos.file, decl.pos.line)
                )
    return grants


def _exact_grants(grants: list[Grant]) -> MappingProxyType[tuple[str, str], frozenset[str]]:
    exact: dict[tuple[str, str], set[str]] = defaultdict(set)
    for grant in grants:
        if grant.subject.literal is not None and grant.subject.type != ANY:
            exact[(grant.subject.type, grant.subject.literal)].update(grant.roles)
    return MappingProxyType({k: frozenset(v) for k, v in exact.items()})


def _pattern_grants(
    grants: list[Grant],
) -> MappingProxyType[str, tuple[tuple[Pattern, frozenset[str]], ...]]:
    by_type: dict[str, list[tuple[Pattern, frozenset[str]]]] = defaultdict(list)
    for grant in grants:
        if grant.subject.literal is None or grant.subject.type == ANY:
            by_type[grant.subject.type].append((grant.subject, frozenset(grant.roles)))
    return MappingProxyType({k: tuple(v) for k, v in by_type.items()})


def _compile_directory(
    records: Iterable[ast.SubjectRecord],
    roles: dict[str, RoleInfo],
    issues: _Issues,
    tolerate: bool,
) -> dict[tuple[str, str], DirectoryEntry]:
    directory: dict[tuple[str, str], DirectoryEntry] = {}
    for record in records:
        try:
            key = parse_concrete(record.subject.text)
        except PatternError as err:
            issues.add(record.pos, f"directory key: {err}")
            continue
        for role in record.roles:
            if role.text not in roles and not tolerate:
                issues.add(role.pos, f"directory gives {record.subject.text} undefined role {role.text!r}")
        first = directory.get(key)
        if first is not None:
            where = f"{first.file}:{first.line}"
            issues.add(record.pos, f"subject {record.subject.text} is listed twice (first at {where})")
            continue
        directory[key] = DirectoryEntry(
            tuple(r.text for r in record.roles),
            MappingProxyType(record.properties),
            record.pos.file,
            record.pos.line,
        )
    return directory


# ---- tests ----

GIVEN_ROOTS = {"subject": "subject_properties", "resource": "resource_properties",
               "action": "action_properties", "context": "context"}


def _compile_tests(files: list[ast.PolicyFile], issues: _Issues) -> list[PolicyTest]:
    tests = []
    for decl in (t for f in files for t in f.tests):
        cases = [case for e in decl.expects if (case := _compile_expect(e, issues)) is not None]
        tests.append(PolicyTest(decl.name, tuple(cases), decl.pos.file, decl.pos.line))
    return tests


def _compile_expect(expect: ast.Expect, issues: _Issues) -> TestCase | None:
    try:
        stype, sid = parse_concrete(expect.subject.text)
        rtype, rid = parse_concrete(expect.resource.text)
    except PatternError as err:
        issues.add(expect.pos, f"test: {err}")
        return None
    attributes: dict[str, dict[str, Any]] = {slot: {} for slot in GIVEN_ROOTS.values()}
    for path, value in expect.given:
        root, _, rest = path.text.partition(".")
        slot = GIVEN_ROOTS.get(root)
        if slot is None or not rest or (root in ("subject", "resource") and rest in ("id", "type")):
            issues.add(path.pos, f"test: cannot set {path.text!r} (set subject.NAME, resource.NAME, "
                                 "action.NAME or context.NAME)")
            continue
        _set_path(attributes[slot], rest.split("."), _given_value(value))
    request = Request(
        subject_type=stype,
        subject_id=sid,
        action=expect.action.text,
        resource_type=rtype,
        resource_id=rid,
        roles=frozenset(r.text for r in expect.roles),
        **attributes,
    )
    return TestCase(
        expect.effect == "allow", expect.subject.text, expect.action.text, expect.resource.text,
        request, expect.pos.file, expect.pos.line,
    )


def _given_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _set_path(target: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value
