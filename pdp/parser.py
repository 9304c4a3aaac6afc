"""Policy text -> syntax tree (pdp.ast), with errors in a security engineer's words."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from importlib import resources
from typing import Any

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from pdp import ast
from pdp.errors import PolicyIssue, PolicySetError

OPENERS = frozenset({"LPAR", "LSQB"})
CLOSERS = frozenset({"RPAR", "RSQB"})

# Terminal names -> words for "expected ..." messages.
TERMINAL_WORDS = {
    "_NL": "end of line",
    "NAME": "a name",
    "PATTERN": "a TYPE:ID pattern",
    "STRING": 'a "string"',
    "NUMBER": "a number",
    "EFFECT": "allow or deny",
    "STAR": "'*'",
    "COMPARE": "a comparison (== != < <= > >=)",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "EQUAL": "'='",
    "$END": "end of file",
}


class _Postlexer:
    """Drops line breaks inside ( ) and [ ], where a statement goes on.

    It never looks ahead: the contextual lexer lexes each token in the parser
    state left by the tokens already yielded."""

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        depth = 0
        for token in stream:
            if token.type == "_NL" and depth:
                continue
            if token.type in OPENERS:
                depth += 1
            elif token.type in CLOSERS and depth:
                depth -= 1
            yield token


@functools.cache
def _parser() -> tuple[Lark, _AstBuilder]:
    """The parser, with the AST builder run as each rule is reduced: no parse
    tree is built (on a large set, building and walking it cost a third of
    the parse). The builder knows the current file, so parses take a lock."""
    grammar = resources.files("pdp").joinpath("grammar.lark").read_text(encoding="utf-8")
    builder = _AstBuilder()
    lark = Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        postlex=_Postlexer(),
        transformer=builder,
        maybe_placeholders=False,
    )
    return lark, builder


_PARSE_LOCK = threading.Lock()


def _describe(token_types: set[str] | frozenset[str]) -> str:
    words = []
    for name in sorted(token_types):
        word = TERMINAL_WORDS.get(name)
        if word is None:
            word = name.lower() if name.isupper() and name.isalpha() else name
        if word not in words:
            words.append(word)
    if not words:
        return "nothing more"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _shown(token: Token) -> str:
    if token.type == "_NL":
        return "end of line"
    if token.type == "$END":
        return "end of file"
    return repr(str(token))


def syntax_issue(path: str, text: str, err: UnexpectedInput) -> PolicyIssue:
    line, column = err.line or 0, err.column or 0
    if isinstance(err, UnexpectedToken):
        token = err.token
        if token.type == "_NL":  # a newline token starts at the end of the line
            line, column = token.line or line, token.column or column
        expected = _describe(err.accepts or err.expected)
        message = f"unexpected {_shown(token)}; expected {expected}"
    elif isinstance(err, UnexpectedCharacters):
        at = err.pos_in_stream or 0
        char = text[at] if at < len(text) else ""
        message = f"unexpected character {char!r}"
        if err.allowed:
            message += f"; expected {_describe(err.allowed)}"
        if char == '"':
            message += " (a string ends on the line it starts)"
    elif isinstance(err, UnexpectedEOF):
        message = f"unexpected end of file; expected {_describe(set(err.expected))}"
    else:  # pragma: no cover - lark has no other kinds
        message = str(err)
    return PolicyIssue(path, line, column, message)


def parse_policy(path: str, text: str) -> ast.PolicyFile:
    """Parse one file's text; `path` (relative to the policy folder) is used in positions."""
    lark, builder = _parser()
    with _PARSE_LOCK:
        builder.file = path
        try:
            items: list[Any] = lark.parse(text)  # type: ignore[assignment]  # the builder returns a list
        except UnexpectedInput as err:
            raise PolicySetError([syntax_issue(path, text, err)]) from None
    return ast.PolicyFile(
        path=path,
        roles=tuple(i for i in items if isinstance(i, ast.RoleDecl)),
        rules=tuple(i for i in items if isinstance(i, ast.RuleDecl)),
        grants=tuple(i for i in items if isinstance(i, ast.GrantDecl)),
        tests=tuple(i for i in items if isinstance(i, ast.TestDecl)),
    )


def _unquote(token: Token) -> str:
    body = str(token)[1:-1]
    return body.replace('\\"', '"').replace("\\\\", "\\") if "\\" in body else body


def _number(token: Token) -> int | float:
    text = str(token)
    return float(text) if "." in text else int(text)


class _AstBuilder(Transformer[Token, Any]):
    """Builds pdp.ast nodes as the parser reduces each rule; the compiler never
    sees lark's objects. Positions come from the tokens (no parse tree, no meta)."""

    def __init__(self) -> None:
        super().__init__(visit_tokens=False)
        self.file = ""

    def _name(self, token: Token) -> ast.Name:
        return ast.Name(str(token), self._at(token))

    def _at(self, token: Token) -> ast.Pos:
        return ast.Pos(self.file, token.line or 0, token.column or 0)

    def start(self, children: list[Any]) -> list[Any]:
        return children

    # ---- statements ----

    def role(self, children: list[Any]) -> ast.RoleDecl:
        name = self._name(children[0])
        inherits: tuple[ast.Name, ...] = ()
        rules = []
        for child in children[1:]:
            if isinstance(child, tuple):
                inherits = child
            elif isinstance(child, ast.RuleDecl):
                rules.append(_with_role(child, name.text))
        return ast.RoleDecl(name, inherits, tuple(rules), name.pos)

    def inherits(self, children: list[Token]) -> tuple[ast.Name, ...]:
        return tuple(self._name(t) for t in children)

    def rule(self, children: list[Any]) -> ast.RuleDecl:
        effect, actions, pattern, *rest = children
        parts = {kind: value for kind, value in rest}
        return ast.RuleDecl(
            effect=str(effect),
            actions=actions,
            pattern=self._name(pattern),
            condition=parts.get("when"),
            reason=parts.get("reason"),
            name=parts.get("as"),
            role=None,
            pos=self._at(effect),
        )

    def actions(self, children: list[Token]) -> tuple[ast.Name, ...] | None:
        if children[0].type == "STAR":
            return None
        return tuple(self._name(t) for t in children)

    def when(self, children: list[Any]) -> tuple[str, ast.Expr]:
        return ("when", children[0])

    def reason(self, children: list[Token]) -> tuple[str, str]:
        return ("reason", _unquote(children[0]))

    def rule_name(self, children: list[Token]) -> tuple[str, ast.Name]:
        return ("as", self._name(children[0]))

    def grant(self, children: list[Token]) -> ast.GrantDecl:
        roles = tuple(self._name(t) for t in children if t.type == "NAME")
        subjects = tuple(self._name(t) for t in children if t.type == "PATTERN")
        return ast.GrantDecl(roles, subjects, roles[0].pos)

    def test(self, children: list[Any]) -> ast.TestDecl:
        return ast.TestDecl(_unquote(children[0]), tuple(children[1:]), self._at(children[0]))

    def expect(self, children: list[Any]) -> ast.Expect:
        effect, subject, action, resource, *rest = children
        given: tuple[tuple[ast.Name, Any], ...] = ()
        roles: tuple[ast.Name, ...] = ()
        for kind, value in rest:
            if kind == "given":
                given = value
            else:
                roles = value
        return ast.Expect(
            str(effect), self._name(subject), self._name(action), self._name(resource),
            given, roles, self._at(effect),
        )

    def given(self, children: list[Any]) -> tuple[str, tuple[Any, ...]]:
        return ("given", tuple(children))

    def assignment(self, children: list[Any]) -> tuple[ast.Name, Any]:
        return (self._name(children[0]), children[1].value)

    def with_roles(self, children: list[Token]) -> tuple[str, tuple[ast.Name, ...]]:
        return ("roles", tuple(self._name(t) for t in children))

    # ---- conditions ----

    def or_expr(self, children: list[ast.Expr]) -> ast.Expr:
        return ast.BoolOp("or", tuple(children), children[0].pos)

    def and_expr(self, children: list[ast.Expr]) -> ast.Expr:
        return ast.BoolOp("and", tuple(children), children[0].pos)

    def not_(self, children: list[ast.Expr]) -> ast.Expr:
        return ast.Not(children[0], children[0].pos)

    def compare(self, children: list[Any]) -> ast.Expr:
        left, op, right = children
        return ast.Compare(str(op), left, right, left.pos)

    def in_(self, children: list[ast.Expr]) -> ast.Expr:
        return ast.Membership(children[0], children[1], False, children[0].pos)

    def not_in(self, children: list[ast.Expr]) -> ast.Expr:
        return ast.Membership(children[0], children[1], True, children[0].pos)

    def path(self, children: list[Token]) -> ast.Expr:
        return ast.PathRef(str(children[0]), self._at(children[0]))

    def call(self, children: list[Any]) -> ast.Expr:
        name = self._name(children[0])
        args = tuple(c for c in children[1:] if c is not None)
        return ast.Call(name.text, args, name.pos)

    def list_expr(self, children: list[ast.Expr]) -> ast.Expr:
        items = tuple(c for c in children if c is not None)
        return ast.ListExpr(items, items[0].pos if items else ast.Pos(self.file, 0, 0))

    def list_value(self, children: list[ast.Literal]) -> ast.Literal:
        items = tuple(c.value for c in children if c is not None)
        return ast.Literal(items, children[0].pos if children else ast.Pos(self.file, 0, 0))

    def string(self, children: list[Token]) -> ast.Literal:
        return ast.Literal(_unquote(children[0]), self._at(children[0]))

    def number(self, children: list[Token]) -> ast.Literal:
        return ast.Literal(_number(children[0]), self._at(children[0]))

    def true(self, children: list[Token]) -> ast.Literal:
        return ast.Literal(True, self._at(children[0]))

    def false(self, children: list[Token]) -> ast.Literal:
        return ast.Literal(False, self._at(children[0]))


def _with_role(rule: ast.RuleDecl, role: str) -> ast.RuleDecl:
    return ast.RuleDecl(
        rule.effect, rule.actions, rule.pattern, rule.condition, rule.reason, rule.name,
        role, rule.pos,
    )

