"""One audit record: the JSON object written for one decision.

Two steps, so that the expensive one can leave the server process:

- `flatten` (on the request's thread, about 1 µs) turns the request,
  outcome and call metadata into a `Flat` tuple of primitives: strings,
  floats, bools, None, tuples and frozensets; the attribute mappings only
  when attributes are written. A batch of them pickles in one C call, and
  the strings decisions share (policy version, reason texts, front end)
  pickle once per batch. Not on the writer thread: Python code there,
  however short, contends for the GIL with gRPC's threads (a thread that
  gave up the GIL for I/O may wait out the 5 ms switch interval to get it
  back), while a request thread flattening its own record holds the GIL
  anyway, and the writer thread is left with one C call (pickle) and a
  pipe write per batch.
- `build_record` (in the audit writer process, or on the writer thread in
  thread mode) turns a `Flat` into the record: redaction, roles, reasons.
  It is the one place that builds a record.

Fields (always present, null when unknown):

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

import functools
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pdp.audit.redact import Redactor, scrub

if TYPE_CHECKING:
    from pdp.model import Reason, Request
    from pdp.service import CallMeta, Outcome

# (rule, effect, text, file, line)
FlatReason = tuple[str, str, str, str, int]
# (subject, action, resource, context) properties, as the request had them
FlatAttributes = tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]
# See `flatten` for the order of the fields.
Flat = tuple[
    float, str, str | None, str, str | None,  # at, decision_id, request_id, frontend, caller
    str, bool, bool, float,  # policy version, allowed, cached, latency_s
    str, str, str, str, str,  # subject type and id, action, resource type and id
    frozenset[str], frozenset[str],  # the decision's roles, the request's roles
    tuple[FlatReason, ...],
    FlatAttributes | None,
]


def flatten(at: float, request: Request, outcome: Outcome, meta: CallMeta, attributes: bool) -> Flat:
    """The plain values a record is built from, taken on the request's thread (see the
    module docstring for why there and not on the writer thread)."""
    decision = outcome.decision
    return (
        at, outcome.decision_id, meta.request_id, meta.frontend, meta.caller,
        decision.policy_version, decision.allowed, outcome.cached, outcome.latency_s,
        request.subject_type, request.subject_id, request.action,
        request.resource_type, request.resource_id,
        decision.roles, request.roles,
        _flat_reasons(decision.reasons),
        (request.subject_properties, request.action_properties, request.resource_properties,
         request.context) if attributes else None,
    )


@functools.lru_cache(maxsize=4096)
def _flat_reasons(reasons: tuple[Reason, ...]) -> tuple[FlatReason, ...]:
    # A few rules make most decisions (and a cached decision repeats its reasons).
    return tuple([(r.rule, r.effect.value, r.text, r.file, r.line) for r in reasons])


def policy_version(flat: Flat) -> str:
    return flat[5]


@functools.lru_cache(maxsize=4)
def _second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def rfc3339(at: float) -> str:
    """`at` (epoch seconds) as RFC 3339 in UTC with microseconds; the date part is
    formatted once per second, as records come in bursts."""
    second = int(at)
    return f"{_second(second)}.{int((at - second) * 1e6):06d}Z"


@functools.lru_cache(maxsize=8192)
def _scrubbed(text: str) -> str:
    # Types, ids and request ids repeat from record to record; the regex need not.
    return scrub(text)


@functools.lru_cache(maxsize=1024)
def _roles(decision_roles: frozenset[str], request_roles: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(decision_roles | request_roles))


def _entity(redactor: Redactor, root: str, type_: str, id_: str) -> dict[str, Any]:
    if not redactor.hides_identity:
        return {"type": _scrubbed(type_), "id": _scrubbed(id_)}
    entity: dict[str, Any] = {}
    for field, value in (("type", type_), ("id", id_)):
        kept = redactor.identity(root, field, value)
        if kept is not None:
            entity[field] = kept
    return entity


def _optional(text: str | None) -> str | None:
    return None if text is None else _scrubbed(text)


@functools.lru_cache(maxsize=1024)
def _reason(reason: FlatReason) -> dict[str, Any]:
    # A few rules make most decisions: each reason is scrubbed once, and the
    # (never changed) dict shared by the records that give it.
    rule, effect, text, file, line = reason
    return {"rule": rule, "effect": effect, "text": scrub(text), "file": file, "line": line}


def build_record(flat: Flat, source: Mapping[str, Any] | None, redactor: Redactor,
                 attributes: bool) -> dict[str, Any]:
    (at, decision_id, request_id, frontend, caller, version, allowed, cached, latency_s,
     subject_type, subject_id, action_name, resource_type, resource_id,
     decision_roles, request_roles, reasons, properties) = flat
    subject = _entity(redactor, "subject", subject_type, subject_id)
    subject["roles"] = _roles(decision_roles, request_roles)
    action: dict[str, Any] = {"name": action_name}
    resource = _entity(redactor, "resource", resource_type, resource_id)
    record: dict[str, Any] = {
        "time": rfc3339(at),
        "decision_id": decision_id,
        "request_id": _optional(request_id),
        "frontend": frontend,
        "caller": _optional(caller),
        "policy": {"version": version, "source": source},
        "subject": subject,
        "action": action,
        "resource": resource,
        "decision": "ALLOW" if allowed else "DENY",
        "reasons": [_reason(r) for r in reasons],
        "cached": cached,
        "latency_us": round(latency_s * 1e6, 1),
    }
    if attributes and properties is not None:
        subject_props, action_props, resource_props, context = properties
        subject["attributes"] = redactor.attributes("subject", subject_props)
        action["attributes"] = redactor.attributes("action", action_props)
        resource["attributes"] = redactor.attributes("resource", resource_props)
        record["context"] = redactor.attributes("context", context)
    return record
