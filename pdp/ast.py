"""The syntax tree of a policy file, as the parser produces it.

Every node knows where it came from (file, line, column) so that the
compiler's errors and the engine's reasons can point at the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Pos:
    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


# ---- conditions ----


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any  # str, int, float, bool, or tuple of those
    pos: Pos


@dataclass(frozen=True, slots=True)
class PathRef:
    path: str  # dotted, e.g. "resource.owner.team"
    pos: Pos


@dataclass(frozen=True, slots=True)
class ListExpr:
    items: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Compare:
    op: str  # == != < <= > >=
    left: Expr
    right: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class Membership:
    item: Expr
    container: Expr
    negated: bool
    pos: Pos


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Call:
    function: str
    args: tuple[Expr, ...]
    pos: Pos


Expr = Literal | PathRef | ListExpr | Compare | Membership | Not | BoolOp | Call


# ---- statements ----


@dataclass(frozen=True, slots=True)
class Name:
    """An identifier and where it was written."""

    text: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class RuleDecl:
    effect: str  # "allow" | "deny"
    actions: tuple[Name, ...] | None  # None: any action (`*`)
    pattern: Name
    condition: Expr | None
    reason: str | None
    name: Name | None
    role: str | None  # None: a top-level rule for every subject
    pos: Pos


@dataclass(frozen=True, slots=True)
class RoleDecl:
    name: Name
    inherits: tuple[Name, ...]
    rules: tuple[RuleDecl, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class GrantDecl:
    roles: tuple[Name, ...]
    subjects: tuple[Name, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Expect:
    effect: str
    subject: Name
    action: Name
    resource: Name
    given: tuple[tuple[Name, Any], ...]
    roles: tuple[Name, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class TestDecl:
    name: str
    expects: tuple[Expect, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class PolicyFile:
    path: str  # relative to the policy folder
    roles: tuple[RoleDecl, ...]
    rules: tuple[RuleDecl, ...]  # top-level rules
    grants: tuple[GrantDecl, ...]
    tests: tuple[TestDecl, ...]


@dataclass(frozen=True, slots=True)
class SubjectRecord:
    """One entry of a `*.subjects.json` directory file."""

    subject: Name  # TYPE:ID as written
    roles: tuple[Name, ...]
    properties: dict[str, Any]
    pos: Pos
