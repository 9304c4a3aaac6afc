"""Conditions compiled into closures over the facts of one request.

No policy text is ever executed: each syntax node becomes a small Python
function. A missing attribute, or values of different kinds, make a
comparison or function call false; nothing raises at decision time.
"""

from __future__ import annotations

import ipaddress
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pdp import ast
from pdp.patterns import PatternError, compile_glob


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Facts:
    """What a condition can read: the request plus what the policy knows of the subject."""

    __slots__ = (
        "action",
        "action_props",
        "context",
        "resource_id",
        "resource_props",
        "resource_type",
        "roles",
        "subject_id",
        "subject_props",
        "subject_type",
    )

    def __init__(
        self,
        subject_type: str,
        subject_id: str,
        subject_props: Mapping[str, Any],
        roles: frozenset[str],
        action: str,
        action_props: Mapping[str, Any],
        resource_type: str,
        resource_id: str,
        resource_props: Mapping[str, Any],
        context: Mapping[str, Any],
    ) -> None:
        self.subject_type = subject_type
        self.subject_id = subject_id
        self.subject_props = subject_props
        self.roles = roles
        self.action = action
        self.action_props = action_props
        self.resource_type = resource_type
        self.resource_id = resource_id
        self.resource_props = resource_props
        self.context = context


Getter = Callable[[Facts], Any]
Predicate = Callable[[Facts], bool]


class ConditionError(ValueError):
    def __init__(self, message: str, pos: ast.Pos) -> None:
        super().__init__(message)
        self.pos = pos


# ---- kinds: values of different kinds never compare equal or ordered ----

_KINDS: dict[type, str] = {
    str: "string", int: "number", float: "number", bool: "bool",
    list: "list", tuple: "list", frozenset: "list", dict: "object",
}


def kind(value: Any) -> str | None:
    found = _KINDS.get(type(value))
    if found is None and isinstance(value, Mapping):
        return "object"
    return found


def equal(a: Any, b: Any) -> bool:
    ka = kind(a)
    if ka is None or ka != kind(b):
        return False
    if ka == "list":
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def contains(container: Any, item: Any) -> bool:
    kc = kind(container)
    if kc == "list":
        ki = kind(item)
        if ki is None:
            return False
        if ki == "string" and type(container) is frozenset:  # subject.roles
            return item in container
        return any(equal(item, element) for element in container)
    if kc == "string":
        return type(item) is str and item in container
    return False


def _ordered(op: str) -> Callable[[Any, Any], bool]:
    compare: Callable[[Any, Any], bool] = {
        "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    }[op]

    def ordered(a: Any, b: Any) -> bool:
        ka = kind(a)
        return ka in ("number", "string") and ka == kind(b) and compare(a, b)

    return ordered


def _dig(value: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return MISSING
        value = value.get(key, MISSING)
        if value is MISSING:
            return MISSING
    return value


# ---- paths ----

ROOTS = ("subject", "resource", "action", "context")


def compile_path(path: str, pos: ast.Pos) -> Getter:
    root, _, rest = path.partition(".")
    keys = tuple(rest.split(".")) if rest else ()
    if root not in ROOTS:
        raise ConditionError(
            f"unknown attribute {path!r}: paths start with subject., resource., action or context.",
            pos,
        )
    if any(not key for key in keys):
        raise ConditionError(f"attribute path {path!r} has an empty part", pos)
    return _GETTERS[root](keys, path, pos)


def _subject(keys: tuple[str, ...], path: str, pos: ast.Pos) -> Getter:
    if keys == ("id",):
        return lambda f: f.subject_id
    if keys == ("type",):
        return lambda f: f.subject_type
    if keys == ("roles",):
        return lambda f: f.roles
    if not keys:
        raise ConditionError("'subject' alone is not a value: use subject.id, subject.NAME...", pos)
    return _props_getter("subject_props", keys)


def _resource(keys: tuple[str, ...], path: str, pos: ast.Pos) -> Getter:
    if keys == ("id",):
        return lambda f: f.resource_id
    if keys == ("type",):
        return lambda f: f.resource_type
    if not keys:
        raise ConditionError("'resource' alone is not a value: use resource.id, resource.NAME...", pos)
    return _props_getter("resource_props", keys)


def _action(keys: tuple[str, ...], path: str, pos: ast.Pos) -> Getter:
    if not keys:
        return lambda f: f.action
    return _props_getter("action_props", keys)


def _context(keys: tuple[str, ...], path: str, pos: ast.Pos) -> Getter:
    if not keys:
        raise ConditionError("'context' alone is not a value: use context.NAME", pos)
    return _props_getter("context", keys)


def _props_getter(slot: str, keys: tuple[str, ...]) -> Getter:
    if len(keys) == 1:
        key = keys[0]
        if slot == "resource_props":
            return lambda f: f.resource_props.get(key, MISSING)
        if slot == "subject_props":
            return lambda f: f.subject_props.get(key, MISSING)
        if slot == "context":
            return lambda f: f.context.get(key, MISSING)
        return lambda f: f.action_props.get(key, MISSING)
    return lambda f: _dig(getattr(f, slot), keys)


_GETTERS: dict[str, Callable[[tuple[str, ...], str, ast.Pos], Getter]] = {
    "subject": _subject, "resource": _resource, "action": _action, "context": _context,
}


# ---- expressions ----


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    test: Predicate
    reads: frozenset[str]  # attribute paths the condition reads, e.g. "resource.owner"


def compile_condition(expr: ast.Expr) -> CompiledCondition:
    reads: set[str] = set()
    return CompiledCondition(_predicate(expr, reads), frozenset(reads))


def _predicate(expr: ast.Expr, reads: set[str]) -> Predicate:
    if isinstance(expr, ast.BoolOp):
        parts = [_predicate(e, reads) for e in expr.operands]
        return _all(parts) if expr.op == "and" else _any(parts)
    if isinstance(expr, ast.Not):
        inner = _predicate(expr.operand, reads)
        return lambda f: not inner(f)
    if isinstance(expr, ast.Compare):
        return _compare(expr, reads)
    if isinstance(expr, ast.Membership):
        return _membership(expr, reads)
    if isinstance(expr, ast.Call):
        return _call(expr, reads)
    # A bare value is true only when it is the boolean true.
    value = _value(expr, reads)
    return lambda f: value(f) is True


def _all(parts: list[Predicate]) -> Predicate:
    if len(parts) == 2:
        a, b = parts
        return lambda f: a(f) and b(f)
    return lambda f: all(p(f) for p in parts)


def _any(parts: list[Predicate]) -> Predicate:
    if len(parts) == 2:
        a, b = parts
        return lambda f: a(f) or b(f)
    return lambda f: any(p(f) for p in parts)


def _value(expr: ast.Expr, reads: set[str]) -> Getter:
    if isinstance(expr, ast.Literal):
        constant = expr.value
        return lambda f: constant
    if isinstance(expr, ast.PathRef):
        reads.add(expr.path)
        return compile_path(expr.path, expr.pos)
    if isinstance(expr, ast.ListExpr):
        items = [_value(e, reads) for e in expr.items]
        if all(isinstance(e, ast.Literal) for e in expr.items):
            constant_list = tuple(e.value for e in expr.items if isinstance(e, ast.Literal))
            return lambda f: constant_list
        return lambda f: tuple(item(f) for item in items)
    predicate = _predicate(expr, reads)  # a condition used as a value is a boolean
    return lambda f: predicate(f)


def _compare(expr: ast.Compare, reads: set[str]) -> Predicate:
    left, right = _value(expr.left, reads), _value(expr.right, reads)
    if expr.op in ("==", "!="):
        if isinstance(expr.right, ast.Literal) and not isinstance(expr.right.value, tuple):
            return _compare_constant(left, expr.right.value, expr.op == "==")
        if expr.op == "==":
            return lambda f: equal(left(f), right(f))
        return lambda f: _differ(left(f), right(f))
    ordered = _ordered(expr.op)
    return lambda f: ordered(left(f), right(f))


def _compare_constant(left: Getter, constant: Any, want_equal: bool) -> Predicate:
    constant_kind = kind(constant)
    if want_equal:
        return lambda f: kind(v := left(f)) == constant_kind and v == constant
    return lambda f: kind(v := left(f)) == constant_kind and v != constant


def _differ(a: Any, b: Any) -> bool:
    ka = kind(a)
    return ka is not None and ka == kind(b) and not equal(a, b)


def _membership(expr: ast.Membership, reads: set[str]) -> Predicate:
    item, container = _value(expr.item, reads), _value(expr.container, reads)
    if expr.negated:
        return lambda f: _not_in(item(f), container(f))
    return lambda f: contains(container(f), item(f))


def _not_in(item: Any, container: Any) -> bool:
    kc = kind(container)
    if kind(item) is None or kc not in ("list", "string"):
        return False  # missing or the wrong kind: the comparison is false
    if kc == "string" and type(item) is not str:
        return False
    return not contains(container, item)


# ---- functions ----


def _string_literal(expr: ast.Expr, function: str) -> str:
    if not isinstance(expr, ast.Literal) or not isinstance(expr.value, str):
        raise ConditionError(f"{function}(): the second argument must be a \"string\"", expr.pos)
    return expr.value


def _call(expr: ast.Call, reads: set[str]) -> Predicate:
    spec = FUNCTIONS.get(expr.function)
    if spec is None:
        known = ", ".join(sorted(FUNCTIONS))
        raise ConditionError(f"unknown function {expr.function!r} (known: {known})", expr.pos)
    if len(expr.args) != 2:
        raise ConditionError(
            f"{expr.function}() takes 2 arguments, got {len(expr.args)}", expr.pos
        )
    return spec(expr, reads)


def _startswith(expr: ast.Call, reads: set[str]) -> Predicate:
    a, b = (_value(e, reads) for e in expr.args)
    return lambda f: type(x := a(f)) is str and type(y := b(f)) is str and x.startswith(y)


def _endswith(expr: ast.Call, reads: set[str]) -> Predicate:
    a, b = (_value(e, reads) for e in expr.args)
    return lambda f: type(x := a(f)) is str and type(y := b(f)) is str and x.endswith(y)


def _matches(expr: ast.Call, reads: set[str]) -> Predicate:
    value = _value(expr.args[0], reads)
    text = _string_literal(expr.args[1], "matches")
    try:
        glob = compile_glob(text)
    except PatternError as err:
        raise ConditionError(f"matches(): bad pattern: {err}", expr.args[1].pos) from None
    return lambda f: type(v := value(f)) is str and glob(v)


def _cidr(expr: ast.Call, reads: set[str]) -> Predicate:
    value = _value(expr.args[0], reads)
    text = _string_literal(expr.args[1], "cidr")
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConditionError(f"cidr(): {text!r} is not a network", expr.args[1].pos) from None

    def in_network(f: Facts) -> bool:
        ip = value(f)
        if type(ip) is not str:
            return False
        try:
            return ipaddress.ip_address(ip) in network
        except ValueError:
            return False

    return in_network


FUNCTIONS: dict[str, Callable[[ast.Call, set[str]], Predicate]] = {
    "startswith": _startswith,
    "endswith": _endswith,
    "matches": _matches,
    "cidr": _cidr,
}
