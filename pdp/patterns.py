"""Subject and resource patterns: `TYPE:ID` where `*` matches any run of
characters but `/`, and `**` any run at all. Nothing else is special."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
ANY = "*"

IdMatcher = Callable[[str], bool]


class PatternError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled pattern. `type` is `*` for any type; `literal` is the whole
    ID when it has no wildcard; `segment` is the ID's fixed first path segment
    when the pattern has one, which the rule index uses."""

    text: str
    type: str
    literal: str | None
    segment: str | None
    match_id: IdMatcher

    def matches(self, type_: str, id_: str) -> bool:
        return (self.type == ANY or self.type == type_) and self.match_id(id_)


def _always(_: str) -> bool:
    return True


def _no_slash(value: str) -> bool:
    return "/" not in value


def _id_matcher(id_pattern: str) -> IdMatcher:
    if id_pattern == "**":
        return _always
    if id_pattern == "*":
        return _no_slash
    head, star, tail = id_pattern.partition("*")
    if not star:
        return id_pattern.__eq__
    if tail == "*" and "*" not in head:  # "prefix/**": the common case, no regex
        return lambda value: value.startswith(head)
    regex = "".join(
        ".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part)
        for part in re.split(r"(\*\*|\*)", id_pattern)
        if part
    )
    return re.compile(regex, re.DOTALL).fullmatch  # type: ignore[return-value]


def compile_pattern(text: str) -> Pattern:
    """`*` alone, or TYPE:ID with TYPE an identifier or `*`. Raises PatternError."""
    if text == ANY:
        return Pattern(text, ANY, None, None, _always)
    type_, colon, id_pattern = text.partition(":")
    if not colon:
        raise PatternError(f"pattern {text!r} has no ':' (write TYPE:ID, TYPE:* or *)")
    if type_ != ANY and not IDENTIFIER.match(type_):
        raise PatternError(f"pattern {text!r}: type {type_!r} is not a name or '*'")
    if not id_pattern:
        raise PatternError(f"pattern {text!r} has an empty ID (write {type_}:* for any)")
    if "***" in id_pattern:
        raise PatternError(f"pattern {text!r}: '***' is ambiguous; use '*' or '**'")
    literal = None if "*" in id_pattern else id_pattern
    first, slash, _ = id_pattern.partition("/")
    segment = first if literal is None and slash and "*" not in first else None
    return Pattern(text, type_, literal, segment, _id_matcher(id_pattern))


def parse_concrete(text: str) -> tuple[str, str]:
    """A concrete TYPE:ID (a test's subject or resource, a directory key)."""
    type_, colon, id_ = text.partition(":")
    if not colon or not IDENTIFIER.match(type_) or not id_:
        raise PatternError(f"{text!r} is not TYPE:ID")
    if "*" in id_:
        raise PatternError(f"{text!r} is a pattern; name one concrete TYPE:ID here")
    return type_, id_


def compile_glob(text: str) -> IdMatcher:
    """A pattern over a whole string (for `matches`): TYPE:ID when it has a
    type, else the `*`/`**` rules over the value as it is."""
    if "***" in text:
        raise PatternError(f"pattern {text!r}: '***' is ambiguous; use '*' or '**'")
    if text == ANY or ":" in text:
        pattern = compile_pattern(text)
        if pattern.type == ANY:
            return lambda value: _split_matches(pattern, value)
        prefix = pattern.type + ":"
        return lambda value: value.startswith(prefix) and pattern.match_id(value[len(prefix):])
    return _id_matcher(text)


def _split_matches(pattern: Pattern, value: str) -> bool:
    type_, colon, id_ = value.partition(":")
    return bool(colon) and pattern.matches(type_, id_)
