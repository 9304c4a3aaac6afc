"""Concrete request paths -> the OpenAPI route templates that describe them.

Gateways in the AuthZEN interop authorize against the route template
(`/todos/{todoId}`), not the concrete path (`/todos/42`), so that one rule
covers a whole route. Matching follows OpenAPI: segment by segment, a
`{name}` segment takes one non-empty segment, and a template with literal
segments wins over a templated one (`/todos/mine` before `/todos/{todoId}`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any


class OpenApiError(ValueError):
    """An OpenAPI file that cannot be read or has no `paths`."""


@dataclass(frozen=True, slots=True)
class RouteMatch:
    template: str
    params: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class _Template:
    text: str
    segments: tuple[str, ...]
    params: tuple[tuple[int, str], ...]  # (segment index, parameter name)

    @property
    def rank(self) -> tuple[int, ...]:
        """Sorts literal segments first, position by position."""
        return tuple(1 if self._is_param(s) else 0 for s in self.segments)

    @staticmethod
    def _is_param(segment: str) -> bool:
        return len(segment) > 2 and segment[0] == "{" and segment[-1] == "}"

    @classmethod
    def parse(cls, text: str) -> _Template:
        segments = tuple(_split(text))
        params = tuple((i, s[1:-1]) for i, s in enumerate(segments) if cls._is_param(s))
        return cls(text, segments, params)

    def match(self, parts: tuple[str, ...]) -> RouteMatch | None:
        names = dict(self.params)
        for i, (want, got) in enumerate(zip(self.segments, parts, strict=True)):
            if i in names:
                if not got:
                    return None
            elif want != got:
                return None
        return RouteMatch(self.text, MappingProxyType({name: parts[i] for i, name in self.params}))


def _split(path: str) -> list[str]:
    return path.strip("/").split("/") if path.strip("/") else []


class RouteTemplates:
    """The templates of one OpenAPI document, grouped by segment count."""

    def __init__(self, templates: Iterable[str]) -> None:
        by_length: dict[int, list[_Template]] = {}
        for text in templates:
            template = _Template.parse(text)
            by_length.setdefault(len(template.segments), []).append(template)
        self._by_length = {n: sorted(ts, key=lambda t: t.rank) for n, ts in by_length.items()}

    def match(self, path: str) -> RouteMatch | None:
        parts = tuple(_split(path))
        for template in self._by_length.get(len(parts), ()):
            found = template.match(parts)
            if found is not None:
                return found
        return None

    @classmethod
    def from_file(cls, path: Path) -> RouteTemplates:
        return cls(_paths(_read(path), path))


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OpenApiError(f"{path}: cannot read: {exc.strerror}") from exc
    if path.suffix.lower() in (".yaml", ".yml"):
        return _yaml(text, path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise OpenApiError(f"{path}: not JSON: {exc}") from exc


def _yaml(text: str, path: Path) -> Any:
    try:
        import yaml  # type: ignore[import-untyped, unused-ignore]  # optional: only if installed
    except ImportError:
        raise OpenApiError(f"{path}: YAML needs PyYAML installed; or give the file as JSON") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise OpenApiError(f"{path}: not YAML: {exc}") from exc


def _paths(document: Any, path: Path) -> list[str]:
    paths = document.get("paths") if isinstance(document, dict) else None
    if not isinstance(paths, dict) or not all(isinstance(p, str) for p in paths):
        raise OpenApiError(f"{path}: no `paths` object")
    return list(paths)
