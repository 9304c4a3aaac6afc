"""The AuthZEN information model as JSON <-> the internal Request and Decision.

Shared by every JSON front end (the CLI's --requests, the AuthZEN HTTP API)
so that they validate and answer alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pdp.model import EMPTY, Decision, Request

MAX_ID_LENGTH = 1024


class RequestError(ValueError):
    """A request that cannot be evaluated; the message names the field."""


def _object(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return EMPTY
    if not isinstance(value, dict):
        raise RequestError(f"{field} must be an object")
    return value


def _text(parent: Mapping[str, Any], key: str, field: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or not value:
        raise RequestError(f"{field}.{key} is required and must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise RequestError(f"{field}.{key} is longer than {MAX_ID_LENGTH} characters")
    return value


def _part(body: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    value = body.get(field)
    if not isinstance(value, dict):
        raise RequestError(f"{field} is required and must be an object")
    return value


def roles_of(properties: Mapping[str, Any], field: str = "subject.properties.roles") -> frozenset[str]:
    roles = properties.get("roles")
    if roles is None:
        return frozenset()
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise RequestError(f"{field} must be a list of strings")
    return frozenset(roles)


def subject_token(body: Any, max_length: int) -> str | None:
    """The JWT a subject may carry (`subject.token`, as in the gRPC API), or None."""
    subject = body.get("subject") if isinstance(body, dict) else None
    token = subject.get("token") if isinstance(subject, dict) else None
    if token is None:
        return None
    if not isinstance(token, str) or not token:
        raise RequestError("subject.token must be a non-empty string")
    if len(token) > max_length:
        raise RequestError(f"subject.token is longer than {max_length} characters")
    return token


def request_from_json(body: Any, with_token: bool = False) -> Request:
    """An AuthZEN evaluation request ({subject, action, resource, context}).

    With `with_token`, a subject carrying a `token` may leave out its type and
    id (empty here): the verified token names the subject.
    """
    if not isinstance(body, dict):
        raise RequestError("the request must be a JSON object")
    subject = _part(body, "subject")
    if with_token and subject.get("token") is not None:
        subject_type = _text(subject, "type", "subject") if "type" in subject else ""
        subject_id = _text(subject, "id", "subject") if "id" in subject else ""
    else:
        subject_type, subject_id = _text(subject, "type", "subject"), _text(subject, "id", "subject")
    action = _part(body, "action")
    action_name = _text(action, "name", "action")
    resource = _part(body, "resource")
    resource_type, resource_id = _text(resource, "type", "resource"), _text(resource, "id", "resource")
    subject_properties = _object(subject.get("properties"), "subject.properties")
    return Request(
        subject_type=subject_type,
        subject_id=subject_id,
        action=action_name,
        resource_type=resource_type,
        resource_id=resource_id,
        subject_properties=subject_properties,
        resource_properties=_object(resource.get("properties"), "resource.properties"),
        action_properties=_object(action.get("properties"), "action.properties"),
        context=_object(body.get("context"), "context"),
        roles=roles_of(subject_properties),
    )


def decision_to_json(decision: Decision, **context: Any) -> dict[str, Any]:
    """{"decision": bool, "context": {"reasons": [...], "policy_version": ..., **context}}."""
    return {
        "decision": decision.allowed,
        "context": {
            "reasons": [r.to_dict() for r in decision.reasons],
            "policy_version": decision.policy_version,
            **context,
        },
    }


def error_to_json(message: str, **context: Any) -> dict[str, Any]:
    return {"decision": False, "context": {"error": message, **context}}


# The Access Evaluations API: top-level defaults, entries that override them key by key.
BATCH_KEYS = ("subject", "action", "resource", "context")
EXECUTE_ALL = "execute_all"
DENY_ON_FIRST_DENY = "deny_on_first_deny"
PERMIT_ON_FIRST_PERMIT = "permit_on_first_permit"
SEMANTICS = (EXECUTE_ALL, DENY_ON_FIRST_DENY, PERMIT_ON_FIRST_PERMIT)


@dataclass(frozen=True, slots=True)
class Batch:
    """An evaluations request: each entry already merged with the defaults."""

    entries: tuple[Mapping[str, Any], ...]
    semantic: str

    def stops_after(self, allowed: bool) -> bool:
        """Whether a decision ends the batch under its semantic."""
        if self.semantic == DENY_ON_FIRST_DENY:
            return not allowed
        if self.semantic == PERMIT_ON_FIRST_PERMIT:
            return allowed
        return False


def batch_from_json(body: Any, max_entries: int) -> Batch | None:
    """The batch of an evaluations request; None when it has no `evaluations` (one evaluation).

    Errors of the whole payload raise RequestError; an entry's own errors surface
    when the entry is evaluated (`request_from_json`), so the other entries still run.
    """
    if not isinstance(body, dict):
        raise RequestError("the request must be a JSON object")
    entries = body.get("evaluations")
    if entries is None or entries == []:
        return None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise RequestError("evaluations must be an array of objects")
    if len(entries) > max_entries:
        raise RequestError(f"evaluations: {len(entries)} entries, more than the maximum of {max_entries}")
    options = _object(body.get("options"), "options")
    semantic = options.get("evaluations_semantic", EXECUTE_ALL)
    if semantic not in SEMANTICS:
        raise RequestError(f"options.evaluations_semantic must be one of {', '.join(SEMANTICS)}")
    defaults = {key: body[key] for key in BATCH_KEYS if key in body}
    return Batch(tuple({**defaults, **entry} for entry in entries), semantic)
