"""Envoy external authorization (envoy.service.auth.v3.Authorization/Check).

Envoy (and Istio, Envoy Gateway, Contour) asks before each request reaches
its upstream. The HTTP request becomes one `Request`:

- subject: the `Authorization: Bearer` token, verified by the identity
  module; else the downstream mTLS principal Envoy reports
  (`service:<principal>`); else `anonymous:anonymous`;
- action: the HTTP method; resource: `route:<path>`, the path without its
  query, or its OpenAPI template (`/todos/{todoId}`) when a file is configured;
- context: the selected headers, host, source address, query parameters.

ALLOW -> OK with the decision id and subject headers for the upstream.
DENY -> 403 with a JSON body; no token where one is required, or a token
that fails verification -> 401 with a `WWW-Authenticate` challenge. Anything
failing inside the PDP -> 403: Envoy must never let a request through on error.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as pb
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from pdp.config import EnvoyConfig
from pdp.identity.callers import caller_identity
from pdp.identity.resolver import IdentityResolver
from pdp.model import Decision, Request, deny_because
from pdp.openapi import RouteTemplates
from pdp.service import CallMeta, DecisionService, Outcome, new_decision_id

log = logging.getLogger("pdp.envoy")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Authorization"].full_name
FRONTEND = "envoy"
ANONYMOUS_ID = "anonymous"
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


@dataclass(frozen=True, slots=True)
class HttpAttributes:
    """What the mapping reads of Envoy's AttributeContext."""

    method: str
    path: str
    query: Mapping[str, Any]
    host: str
    headers: Mapping[str, str]
    source_address: str
    principal: str

    @classmethod
    def of(cls, check: Any) -> HttpAttributes:
        http = check.attributes.request.http
        headers = dict(http.headers) or {h.key: h.value or h.raw_value.decode(errors="replace")
                                         for h in http.header_map.headers}
        path, _, query = http.path.partition("?")
        source = check.attributes.source
        return cls(
            method=http.method,
            path=path.partition("#")[0] or "/",
            query=_query(query or http.query),
            host=http.host,
            headers=headers,
            source_address=source.address.socket_address.address,
            principal=source.principal,
        )


def _query(text: str) -> Mapping[str, Any]:
    if not text:
        return MappingProxyType({})
    parsed = parse_qs(text, keep_blank_values=True)
    return MappingProxyType({k: v[0] if len(v) == 1 else v for k, v in parsed.items()})


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of `Authorization: Bearer <token>`; None without a bearer header."""
    value = headers.get("authorization", "")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


class EnvoyMapping:
    """HTTP attributes -> the engine's Request, as configured."""

    def __init__(self, config: EnvoyConfig, routes: RouteTemplates | None) -> None:
        self.config = config
        self.routes = routes
        # Never the Authorization header: the context reaches the audit log, a token must not.
        self._headers = tuple(h.lower() for h in config.context_headers if h.lower() != "authorization")

    @classmethod
    def from_config(cls, config: EnvoyConfig) -> EnvoyMapping:
        routes = RouteTemplates.from_file(Path(config.openapi_file)) if config.openapi_file else None
        return cls(config, routes)

    def request(self, http: HttpAttributes, subject_type: str, subject_id: str) -> Request:
        match = self.routes.match(http.path) if self.routes is not None else None
        route = match.template if match is not None else http.path
        resource: dict[str, Any] = {"path": http.path}
        if match is not None:
            resource["params"] = dict(match.params)
        context = {
            "headers": {h: http.headers[h] for h in self._headers if h in http.headers},
            "host": http.host,
            "source_address": http.source_address,
            "query": dict(http.query),
        }
        return Request(
            subject_type=subject_type,
            subject_id=subject_id,
            action=http.method,
            resource_type="route",
            resource_id=route,
            resource_properties=MappingProxyType(resource),
            context=MappingProxyType(context),
        )

    def subject_without_token(self, http: HttpAttributes) -> tuple[str, str]:
        if http.principal:
            return self.config.principal_type, http.principal
        return self.config.anonymous_type, ANONYMOUS_ID


class EnvoyAuthorizer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """envoy.service.auth.v3.Authorization on the PDP's gRPC server."""

    def __init__(
        self, service: DecisionService, mapping: EnvoyMapping, identity: IdentityResolver | None = None
    ) -> None:
        self._service = service
        self._mapping = mapping
        self._config = mapping.config
        self._identity = identity

    def Check(self, request: pb.CheckRequest, context: grpc.ServicerContext) -> pb.CheckResponse:
        try:
            return self._check(HttpAttributes.of(request), context)
        except Exception:  # fail closed: Envoy answers 403, never lets the request through
            log.exception("envoy check failed")
            return self._denied(
                http_status_pb2.Forbidden, code_pb2.PERMISSION_DENIED,
                {"decision": False, "error": "internal error"}, new_decision_id(),
            )

    def _check(self, http: HttpAttributes, context: grpc.ServicerContext) -> pb.CheckResponse:
        start = time.perf_counter()
        meta = self._meta(http, context)
        token = bearer_token(http.headers)
        if token is None:
            subject = self._mapping.subject_without_token(http)
            request = self._mapping.request(http, *subject)
            if self._config.require_token:
                why = deny_because("a bearer token is required", self._version(), "pdp.identity.missing")
                return self._unauthorized(request, why, meta, None, start)
            return self._answer(request, self._service.check(request, meta))
        request = self._mapping.request(http, "", "")
        resolved = self._verify(request, token)
        if isinstance(resolved, Decision):
            return self._unauthorized(request, resolved, meta, "invalid_token", start)
        return self._answer(resolved, self._service.check(resolved, meta))

    def _verify(self, request: Request, token: str) -> Request | Decision:
        if self._identity is None:
            return deny_because("token verification is not configured ([identity] issuers)",
                                self._version(), "pdp.identity.unconfigured")
        if not token:
            return deny_because("the bearer token is empty", self._version(), "pdp.identity.malformed")
        return self._identity.resolve(request, token, self._version())

    def _version(self) -> str:
        policy = self._service.holder.current
        return policy.version if policy is not None else ""

    def _meta(self, http: HttpAttributes, context: grpc.ServicerContext) -> CallMeta:
        caller = caller_identity(context)  # Envoy's own certificate: SPIFFE ID, else CN
        return CallMeta(FRONTEND, caller=caller, request_id=http.headers.get("x-request-id"))

    def _answer(self, request: Request, outcome: Outcome) -> pb.CheckResponse:
        if outcome.decision.allowed:
            return self._ok(request, outcome)
        return self._denied(
            http_status_pb2.Forbidden, code_pb2.PERMISSION_DENIED,
            self._body(outcome.decision, outcome.decision_id), outcome.decision_id,
        )

    def _unauthorized(
        self, request: Request, decision: Decision, meta: CallMeta, error: str | None, start: float
    ) -> pb.CheckResponse:
        """401: recorded in the audit like any decision, with a Bearer challenge."""
        outcome = Outcome(decision, new_decision_id(), False, time.perf_counter() - start)
        if self._service.audit is not None:
            self._service.audit.record(request, outcome, meta)
        challenge = f'Bearer realm="{self._config.realm}"'
        if error is not None:
            challenge += f', error="{error}"'
        body = self._body(decision, outcome.decision_id)
        if error is not None:
            body["error"] = error
        return self._denied(
            http_status_pb2.Unauthorized, code_pb2.UNAUTHENTICATED, body, outcome.decision_id,
            {"www-authenticate": challenge},
        )

    def _body(self, decision: Decision, decision_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {"decision": decision.allowed, "decision_id": decision_id}
        if self._config.show_reasons:
            body["reasons"] = [{"rule": r.rule, "text": r.text} for r in decision.reasons]
        return body

    def _ok(self, request: Request, outcome: Outcome) -> pb.CheckResponse:
        headers = {}
        if self._config.decision_id_header:
            headers[self._config.decision_id_header] = outcome.decision_id
        if self._config.subject_header:
            headers[self._config.subject_header] = f"{request.subject_type}:{request.subject_id}"
        return pb.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=pb.OkHttpResponse(headers=_header_options(headers)),
        )

    def _denied(
        self, http_code: int, rpc_code: int, body: dict[str, Any], decision_id: str,
        extra: Mapping[str, str] | None = None,
    ) -> pb.CheckResponse:
        headers = {"content-type": "application/json", **(extra or {})}
        if self._config.decision_id_header:
            headers[self._config.decision_id_header] = decision_id
        return pb.CheckResponse(
            status=status_pb2.Status(code=rpc_code),
            denied_response=pb.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=http_code),
                headers=_header_options(headers),
                body=json.dumps(body, separators=(",", ":")),
            ),
        )


def _header_options(headers: Mapping[str, str]) -> list[base_pb2.HeaderValueOption]:
    # Overwrite: a client must not be able to send its own x-pdp-subject upstream.
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=k, value=v), append_action=_OVERWRITE
        )
        for k, v in headers.items()
    ]


def add_to_server(
    server: grpc.Server, service: DecisionService, config: EnvoyConfig,
    identity: IdentityResolver | None = None,
) -> None:
    """Register Authorization/Check when enabled; reads the OpenAPI file once, here."""
    if config.enabled:
        authorizer = EnvoyAuthorizer(service, EnvoyMapping.from_config(config), identity)
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(authorizer, server)

