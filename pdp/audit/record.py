"""One audit record: the JSON object written for one decision.

Built on the writer thread, never on the decision path. Fields (always
present, null when unknown):

    time           RFC 3339, UTC, microseconds ("2026-11-25T12:00:00.123456Z")
    decision_id    the id returned to the caller
    request_id     the caller's request id
    frontend       grpc, grpc-batch, envoy, authzen, cli...
    caller         the calling service's mTLS identity
    policy         {"version": ..., "source": {"kind": "git", "commit": ...}}
    subject        {"type", "id", "roles"} (+ "attributes" when configured)
    action         {"name"} (+ "attributes")
    resource       {"type", "id"} (+ "attributes")
    context        only when attributes are configured
    decision       "ALLOW" or "DENY"
    reasons        [{"rule", "effect", "text", "file", "line"}]
    cached         whether the decision came from the cache
    latency_us     time to decide, in microseconds
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from pdp.audit.redact import Redactor, scrub

if TYPE_CHECKING:
    from pdp.model import Reason, Request
    from pdp.service import CallMeta, Outcome


class Pending(NamedTuple):
    """What the decision path hands to the queue: references only, no formatting
    (a tuple, as it is built once per decision)."""

    at: float  # time.time() when recorded
    request: Request
    outcome: Outcome
    meta: CallMeta


@functools.lru_cache(maxsize=4)
def _second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def rfc3339(at: float) -> str:
    """`at` (epoch seconds) as RFC 3339 in UTC with microseconds; the date part is
    formatted once per second, as records come in bursts."""
    second = int(at)
    return f"{_second(second)}.{int((at - second) * 1e6):06d}Z"


def _entity(redactor: Redactor, root: str, type_: str, id_: str) -> dict[str, Any]:
    if not redactor.hides_identity:
        return {"type": scrub(type_), "id": scrub(id_)}
    entity: dict[str, Any] = {}
    for field, value in (("type", type_), ("id", id_)):
        kept = redactor.identity(root, field, value)
        if kept is not None:
            entity[field] = kept
    return entity


def _optional(text: str | None) -> str | None:
    return None if text is None else scrub(text)


def _reasons(reasons: tuple[Reason, ...]) -> list[Any]:
    # orjson writes a Reason dataclass as {"rule", "effect", "text", "file", "line"} itself.
    return [r if scrub(r.text) is r.text else dataclasses.replace(r, text=scrub(r.text))
            for r in reasons]


def build_record(item: Pending, source: Mapping[str, Any] | None, redactor: Redactor,
                 attributes: bool) -> dict[str, Any]:
    request, outcome, decision = item.request, item.outcome, item.outcome.decision
    subject = _entity(redactor, "subject", request.subject_type, request.subject_id)
    subject["roles"] = sorted(decision.roles | request.roles)
    action: dict[str, Any] = {"name": request.action}
    resource = _entity(redactor, "resource", request.resource_type, request.resource_id)
    record: dict[str, Any] = {
        "time": rfc3339(item.at),
        "decision_id": outcome.decision_id,
        "request_id": _optional(item.meta.request_id),
        "frontend": item.meta.frontend,
        "caller": _optional(item.meta.caller),
        "policy": {"version": decision.policy_version, "source": source},
        "subject": subject,
        "action": action,
        "resource": resource,
        "decision": "ALLOW" if decision.allowed else "DENY",
        "reasons": _reasons(decision.reasons),
        "cached": outcome.cached,
        "latency_us": round(outcome.latency_s * 1e6, 1),
    }
    if attributes:
        subject["attributes"] = redactor.attributes("subject", request.subject_properties)
        action["attributes"] = redactor.attributes("action", request.action_properties)
        resource["attributes"] = redactor.attributes("resource", request.resource_properties)
        record["context"] = redactor.attributes("context", request.context)
    return record
