"""A policy folder -> CompiledPolicy: find the files, hash them, parse, compile.

The version is a SHA-256 over every `*.policy` and `*.subjects.json` file
(path and content), so two replicas with the same files agree on it and any
change of a rule or of directory data makes a new version.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdp import ast
from pdp.compiler import compile_policy
from pdp.errors import PolicyIssue, PolicySetError
from pdp.parser import parse_policy
from pdp.policy import CompiledPolicy

POLICY_SUFFIX = ".policy"
DIRECTORY_SUFFIX = ".subjects.json"

__all__ = ["CompiledPolicy", "PolicySetError", "SourceFile", "compile_sources", "load_policy_dir"]


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: str  # relative to the policy folder, with `/` separators
    content: bytes


def is_policy_source(name: str) -> bool:
    return name.endswith(POLICY_SUFFIX) or name.endswith(DIRECTORY_SUFFIX)


def read_sources(folder: str | Path) -> list[SourceFile]:
    """Every policy and directory file under the folder, in a stable order.
    Hidden folders (such as .git) are skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise PolicySetError([PolicyIssue(str(folder), 0, 0, "not a folder")])
    sources = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if is_policy_source(name):
                path = Path(dirpath, name)
                sources.append(SourceFile(path.relative_to(root).as_posix(), path.read_bytes()))
    return sorted(sources, key=lambda s: s.path)


def version_of(sources: Iterable[SourceFile]) -> str:
    digest = hashlib.sha256()
    for source in sorted(sources, key=lambda s: s.path):
        for part in (source.path.encode(), source.content):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()


def load_policy_dir(folder: str | Path) -> CompiledPolicy:
    """Compile the policy set in a folder; raises PolicySetError with every issue."""
    return compile_sources(read_sources(folder), source_dir=str(folder))


@contextmanager
def _without_gc() -> Iterator[None]:
    """Compiling allocates millions of long-lived objects; the cyclic collector
    would rescan them again and again (a sixth of a large set's compile).
    Reference counting still frees what dies young."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compile_sources(sources: list[SourceFile], source_dir: str = "") -> CompiledPolicy:
    with _without_gc():
        return _compile_sources(sources, source_dir)


def _compile_sources(sources: list[SourceFile], source_dir: str) -> CompiledPolicy:
    issues: list[PolicyIssue] = []
    files: list[ast.PolicyFile] = []
    subjects: list[ast.SubjectRecord] = []
    for source in sources:
        try:
            text = _decode(source)
            if source.path.endswith(POLICY_SUFFIX):
                files.append(parse_policy(source.path, text))
            else:
                subjects.extend(parse_directory(source.path, text))
        except PolicySetError as err:
            issues.extend(err.errors)
    return compile_policy(
        files,
        subjects,
        version=version_of(sources),
        source_dir=source_dir,
        known_issues=issues,
        unparsed_policy_files=any(i.file.endswith(POLICY_SUFFIX) for i in issues),
    )


def _decode(source: SourceFile) -> str:
    try:
        return source.content.decode("utf-8")
    except UnicodeDecodeError as err:
        line = source.content.count(b"\n", 0, err.start) + 1
        column = err.start - (source.content.rfind(b"\n", 0, err.start) + 1) + 1
        raise PolicySetError([PolicyIssue(source.path, line, column, "not UTF-8 text")]) from None


# ---- directory data ----


def parse_directory(path: str, text: str) -> list[ast.SubjectRecord]:
    """A `*.subjects.json` file: {"TYPE:ID": {"roles": [...], "properties": {...}}}."""
    repeated: list[str] = []
    try:
        data = json.loads(text, object_pairs_hook=lambda pairs: _object(pairs, repeated))
    except json.JSONDecodeError as err:
        issue = PolicyIssue(path, err.lineno, err.colno, f"malformed JSON: {err.msg}")
        raise PolicySetError([issue]) from None
    if repeated:  # JSON parsers keep the last silently; a directory must not
        raise PolicySetError([_repeated_issue(path, text, key) for key in repeated])
    if not isinstance(data, dict):
        raise PolicySetError([PolicyIssue(path, 1, 1, "a directory file is a JSON object of TYPE:ID keys")])
    records, issues = [], []
    keys = _KeyPositions(path, text)
    for key, entry in data.items():
        pos = keys.find(key)
        problem = _entry_problem(key, entry)
        if problem:
            issues.append(PolicyIssue(pos.file, pos.line, pos.column, problem))
            continue
        roles = tuple(ast.Name(r, pos) for r in entry.get("roles", []))
        records.append(ast.SubjectRecord(ast.Name(key, pos), roles, dict(entry.get("properties", {})), pos))
    if issues:
        raise PolicySetError(issues)
    return records


def _object(pairs: list[tuple[str, Any]], repeated: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            repeated.append(key)
        result[key] = value
    return result


def _repeated_issue(path: str, text: str, key: str) -> PolicyIssue:
    needle = json.dumps(key)
    offset = text.find(needle, text.find(needle) + 1)
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return PolicyIssue(path, line, column, f"{key} is listed twice in one object")


def _entry_problem(key: str, entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return f"{key}: the value must be an object with \"roles\" and/or \"properties\""
    unknown = set(entry) - {"roles", "properties"}
    if unknown:
        return f"{key}: unknown field(s) {', '.join(sorted(unknown))} (only roles, properties)"
    roles = entry.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        return f"{key}: \"roles\" must be a list of role names"
    if not isinstance(entry.get("properties", {}), dict):
        return f"{key}: \"properties\" must be an object"
    return None


_COLON = re.compile(r"\s*:")


class _KeyPositions:
    """Where each key of a JSON object is written. Keys come in file order, so
    one forward scan finds them all (searching from the top each time made
    a 100,000-subject directory take most of a minute)."""

    def __init__(self, path: str, text: str) -> None:
        self.path, self.text = path, text
        self.offset, self.line, self.line_start = 0, 1, 0

    def find(self, key: str) -> ast.Pos:
        text, needle = self.text, json.dumps(key)
        found = text.find(needle, self.offset)
        while found >= 0 and not _COLON.match(text, found + len(needle)):
            found = text.find(needle, found + 1)  # the same text as a value, not a key
        if found < 0:
            return ast.Pos(self.path, 1, 1)
        newlines = text.count("\n", self.offset, found)
        if newlines:
            self.line += newlines
            self.line_start = text.rfind("\n", self.offset, found) + 1
        self.offset = found + len(needle)
        return ast.Pos(self.path, self.line, found - self.line_start + 1)
