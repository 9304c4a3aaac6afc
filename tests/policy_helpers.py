"""Small helpers for tests that compile policy text and ask for decisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pdp.engine import decide
from pdp.loader import load_policy_dir
from pdp.model import Decision, Request
from pdp.policy import CompiledPolicy


def write_set(folder: Path, files: dict[str, Any]) -> Path:
    """Write a policy folder: str values as text, dict values as JSON."""
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
    return folder


def load(folder: Path, files: dict[str, Any]) -> CompiledPolicy:
    return load_policy_dir(write_set(folder, files))


def ask(
    policy: CompiledPolicy,
    subject: str,
    action: str,
    resource: str,
    *,
    roles: tuple[str, ...] = (),
    subject_props: dict[str, Any] | None = None,
    resource_props: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> Decision:
    stype, _, sid = subject.partition(":")
    rtype, _, rid = resource.partition(":")
    return decide(
        policy,
        Request(
            stype, sid, action, rtype, rid,
            subject_properties=subject_props or {},
            resource_properties=resource_props or {},
            context=context or {},
            roles=frozenset(roles),
        ),
    )


def allowed(policy: CompiledPolicy, subject: str, action: str, resource: str, **kw: Any) -> bool:
    return ask(policy, subject, action, resource, **kw).allowed
