"""Errors in a policy set, each pointing at the file, line and column to fix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class PolicyIssue:
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class PolicySetError(Exception):
    """A policy set that cannot be compiled; it carries every issue found."""

    def __init__(self, errors: list[PolicyIssue]) -> None:
        self.errors = sorted(errors)
        super().__init__("\n".join(str(e) for e in self.errors))
