"""Where a policy version came from: a git checkout's commit, or a published bundle.

Worked out once when a policy is loaded (never per decision) and written
into every audit record made under that version.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class PolicySource:
    kind: str  # "git", "dir" or "bundle"
    path: str | None = None
    commit: str | None = None
    dirty: bool | None = None
    published_by: str | None = None
    published_at: str | None = None

    def to_dict(self) -> dict[str, str | bool]:
        return {k: v for k in self.__slots__ if (v := getattr(self, k)) is not None}


def _git(path: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(path), *args],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def directory_source(path: str | Path) -> PolicySource:
    """The source of a policy folder: its commit if it is in a git checkout."""
    folder = Path(path).resolve()
    commit = _git(folder, "rev-parse", "HEAD")
    if commit is None:
        return PolicySource("dir", path=str(folder))
    status = _git(folder, "status", "--porcelain", "--", ".")
    return PolicySource("git", path=str(folder), commit=commit, dirty=bool(status))


def bundle_source(published_by: str, published_at: str) -> PolicySource:
    """The source of a bundle another replica published through Redis."""
    return PolicySource("bundle", published_by=published_by, published_at=published_at)
