"""decide(policy, request) -> Decision: deny overrides allow, nothing is allowed by default.

Pure: no I/O, no logging, no shared state but the compiled policy's memo
tables. The common path allocates little beyond the Decision itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pdp.ast import Pos
from pdp.conditions import MISSING, Facts, compile_path
from pdp.model import Decision, Effect, Reason, Request
from pdp.policy import CompiledPolicy, CompiledRule

DEFAULT_DENY_RULE = "default-deny"
_NOWHERE = Pos("", 0, 0)


def decide(policy: CompiledPolicy, request: Request) -> Decision:
    stype, sid = request.subject_type, request.subject_id
    roles = policy.subject_roles(stype, sid)
    if request.roles:
        roles = policy.close(roles | request.roles)
    rid = request.resource_id
    segment = rid.partition("/")[0]
    facts: Facts | None = None
    allows: list[CompiledRule] = []
    denies: list[CompiledRule] = []
    for bucket in policy.plan(roles, request.action, request.resource_type):
        for rules in (bucket.exact.get(rid, ()), bucket.by_segment.get(segment, ()), bucket.general):
            for rule in rules:
                if not rule.pattern.match_id(rid):
                    continue
                if rule.condition is not None:
                    if facts is None:
                        facts = facts_for(policy, request, roles)
                    if not rule.condition(facts):
                        continue
                (denies if rule.is_deny else allows).append(rule)
    if denies:
        return Decision(False, _reasons(denies, facts), policy.version, roles)
    if allows:
        return Decision(True, _reasons(allows, facts), policy.version, roles)
    return Decision(False, (_default_deny(policy, request, roles),), policy.version, roles)


def decision_key(policy: CompiledPolicy, request: Request) -> tuple[Any, ...]:
    """A hashable key for caching `decide(policy, request)`: the policy version
    and exactly the inputs the decision can depend on. Attributes that no
    applicable rule reads are left out, so requests that differ only in them
    share a key."""
    roles = policy.subject_roles(request.subject_type, request.subject_id)
    if request.roles:
        roles = policy.close(roles | request.roles)
    reads = policy.reads_for(roles, request.action, request.resource_type)
    values: tuple[Any, ...] = ()
    if reads:
        facts = facts_for(policy, request, roles)
        values = tuple([_hashable(read(facts)) for read in _readers(reads)])
    return (
        policy.version, request.subject_type, request.subject_id, request.roles,
        request.action, request.resource_type, request.resource_id, reads, values,
    )


_READERS: dict[tuple[str, ...], tuple[Any, ...]] = {}


def _readers(paths: tuple[str, ...]) -> tuple[Any, ...]:
    """The getters of these paths, compiled once per distinct tuple (few: one per plan)."""
    readers = _READERS.get(paths)
    if readers is None:
        if len(_READERS) >= 4096:  # bounded across reloads of ever-new policies
            _READERS.clear()
        readers = _READERS[paths] = tuple(compile_path(path, _NOWHERE) for path in paths)
    return readers


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _hashable(value: Any) -> Any:
    """A value that compares like the original and hashes (lists, objects, kinds kept)."""
    kind = type(value)
    if kind in _SCALARS:  # the common case, before the slower ABC checks
        return (kind.__name__, value)
    if isinstance(value, Mapping):
        return ("object", tuple(sorted((k, _hashable(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple, frozenset)):
        items = sorted(value) if isinstance(value, frozenset) else value
        return ("list", tuple(_hashable(v) for v in items))
    return (kind.__name__, value)


def facts_for(policy: CompiledPolicy, request: Request, roles: frozenset[str]) -> Facts:
    """What conditions read. Directory properties win over the request's own."""
    return Facts(
        request.subject_type,
        request.subject_id,
        _subject_properties(policy, request),
        roles,
        request.action,
        request.action_properties,
        request.resource_type,
        request.resource_id,
        request.resource_properties,
        request.context,
    )


def _subject_properties(policy: CompiledPolicy, request: Request) -> Mapping[str, Any]:
    entry = policy.directory.get((request.subject_type, request.subject_id))
    if entry is None or not entry.properties:
        return request.subject_properties
    if not request.subject_properties:
        return entry.properties
    return {**request.subject_properties, **entry.properties}


def _reasons(rules: list[CompiledRule], facts: Facts | None) -> tuple[Reason, ...]:
    if len(rules) > 1:
        rules.sort(key=lambda r: r.index)
    return tuple(_explained(rule, facts) for rule in rules)


def _explained(rule: CompiledRule, facts: Facts | None) -> Reason:
    """The rule's reason, naming the attributes its condition found missing
    (a deny written as `not resource.x ...` applies when x is missing)."""
    if facts is None or not rule.readers:
        return rule.reason
    missing = [path for path, read in rule.readers if read(facts) is MISSING]
    if not missing:
        return rule.reason
    note = "missing attributes: " + ", ".join(missing)
    text = f"{rule.reason.text} ({note})" if rule.reason.text else note
    return Reason(rule.name, rule.effect, text, rule.file, rule.line)


def _default_deny(policy: CompiledPolicy, request: Request, roles: frozenset[str]) -> Reason:
    held = policy.roles_text(roles)
    text = (
        f"no rule allows {request.action} on {request.resource_type}:{request.resource_id}"
        f" for {request.subject_type}:{request.subject_id} with roles [{held}]"
    )
    missing = _missing_attributes(policy, request, roles)
    if missing:
        text += "; missing attributes: " + ", ".join(missing)
    return Reason(DEFAULT_DENY_RULE, Effect.DENY, text, "", 0)


def _missing_attributes(policy: CompiledPolicy, request: Request, roles: frozenset[str]) -> list[str]:
    """Attributes that conditions of otherwise matching allow rules read but the request lacked."""
    if not policy.explains_missing(roles, request.action, request.resource_type):
        return []
    rules = policy.rules_for(roles, request.action, request.resource_type, request.resource_id)
    readers = dict(reader for rule in rules if not rule.is_deny for reader in rule.readers)
    if not readers:
        return []
    facts = facts_for(policy, request, roles)
    return sorted(path for path, read in readers.items() if read(facts) is MISSING)
