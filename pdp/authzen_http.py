"""The OpenID AuthZEN Authorization API 1.0 over HTTP (a Starlette app).

POST /access/v1/evaluation, POST /access/v1/evaluations and
GET /.well-known/authzen-configuration; the search APIs answer 501 for now.
Every evaluation goes through `DecisionService.check`, so the cache and the
audit record are the same as for gRPC. A payload that cannot be read at all
is a 400 with a JSON error; an entry of a batch that cannot be evaluated is
`decision: false` with the error in its `context`. `X-Request-ID` is echoed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pdp.authzen import (
    EXECUTE_ALL,
    Batch,
    RequestError,
    batch_from_json,
    decision_to_json,
    error_to_json,
    subject_token,
)
from pdp.authzen import request_from_json as authzen_request
from pdp.config import Config
from pdp.identity.reasons import TEXT, Rejection
from pdp.identity.resolver import IdentityResolver
from pdp.model import Decision, Request, deny_because
from pdp.service import CallMeta, DecisionService, Outcome, new_decision_id

log = logging.getLogger("pdp.authzen")

FRONTEND = "authzen"
EVALUATION = "/access/v1/evaluation"
EVALUATIONS = "/access/v1/evaluations"
SEARCH = "/access/v1/search/{kind}"
WELL_KNOWN = "/.well-known/authzen-configuration"
REQUEST_ID = "x-request-id"
CALLER_STATE = "pdp_caller"  # request.state key: the mTLS client's identity (pdp.http_server)


class HttpError(Exception):
    """An answer for the whole request: HTTP status, JSON error, extra headers."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class Refused:
    """A request whose subject token was refused, and the DENY that says why."""

    request: Request
    decision: Decision


class AuthZenApi:
    def __init__(
        self, service: DecisionService, config: Config, identity: IdentityResolver | None = None
    ) -> None:
        self._service = service
        self._max_bytes = config.server.max_message_bytes
        self._max_batch = config.limits.max_batch
        self._require_token = config.http.require_token
        self._identity = identity
        self._realm = config.envoy.realm
        self._max_token = config.limits.max_token_length

    async def evaluation(self, request: HttpRequest) -> Response:
        try:
            meta = self._caller(request)
            body = await self._json(request)
            outcome = self._decide(body, meta)
        except RequestError as exc:
            return _error(request, HttpError(400, str(exc)))
        except HttpError as exc:
            return _error(request, exc)
        return _json(request, _decision(outcome))

    async def evaluations(self, request: HttpRequest) -> Response:
        try:
            meta = self._caller(request)
            body = await self._json(request)
            batch = batch_from_json(body, self._max_batch)
            if batch is None:  # no `evaluations`: a single evaluation, answered as such
                return _json(request, _decision(self._decide(body, meta)))
        except RequestError as exc:
            return _error(request, HttpError(400, str(exc)))
        except HttpError as exc:
            return _error(request, exc)
        return _json(request, {"evaluations": self._run(batch, meta)})

    def _prepare(self, body: Any) -> Request | Refused:
        """The request; about the token's subject when `subject.token` is given (as in gRPC).

        Raises RequestError for a request that cannot be evaluated.
        """
        token = subject_token(body, self._max_token)
        request = authzen_request(body, with_token=True)
        if token is None:
            return request
        policy = self._service.holder.current
        version = policy.version if policy is not None else ""
        if self._identity is None:
            return Refused(request, deny_because(
                "token verification is not configured ([identity] issuers)", version,
                "pdp.identity.unconfigured"))
        resolved = self._identity.resolve(request, token, version)
        return Refused(request, resolved) if isinstance(resolved, Decision) else resolved

    def _decide(self, body: Any, meta: CallMeta) -> Outcome:
        prepared = self._prepare(body)
        if isinstance(prepared, Refused):
            return self._refuse(prepared, meta)
        return self._service.check(prepared, meta)

    def _refuse(self, refused: Refused, meta: CallMeta) -> Outcome:
        """A refused token is a DENY saying why, audited like any decision."""
        outcome = Outcome(refused.decision, new_decision_id(), False, 0.0)
        if self._service.audit is not None:
            self._service.audit.record(refused.request, outcome, meta)
        return outcome

    def _run(self, batch: Batch, meta: CallMeta) -> list[dict[str, Any]]:
        if batch.semantic == EXECUTE_ALL:
            return self._run_all(batch, meta)
        results: list[dict[str, Any]] = []
        for i, entry in enumerate(batch.entries):
            try:
                outcome = self._decide(entry, meta)
            except RequestError as exc:
                results.append(error_to_json(f"evaluations[{i}]: {exc}"))
                continue
            results.append(_decision(outcome))
            if batch.stops_after(outcome.decision.allowed):
                break
        return results

    def _run_all(self, batch: Batch, meta: CallMeta) -> list[dict[str, Any]]:
        """Every entry, the valid ones decided against one policy version (`check_many`)."""
        slots: list[dict[str, Any] | Refused | None] = []  # None: the next of `outcomes`
        requests: list[Request] = []
        for i, entry in enumerate(batch.entries):
            try:
                prepared = self._prepare(entry)
            except RequestError as exc:
                slots.append(error_to_json(f"evaluations[{i}]: {exc}"))
                continue
            if isinstance(prepared, Refused):
                slots.append(prepared)
            else:
                requests.append(prepared)
                slots.append(None)
        outcomes = iter(self._service.check_many(requests, meta))
        return [
            _decision(next(outcomes)) if slot is None
            else _decision(self._refuse(slot, meta)) if isinstance(slot, Refused)
            else slot
            for slot in slots
        ]

    async def configuration(self, request: HttpRequest) -> Response:
        base = str(request.base_url).rstrip("/")
        return _json(request, {
            "policy_decision_point": base,
            "access_evaluation_endpoint": base + EVALUATION,
            "access_evaluations_endpoint": base + EVALUATIONS,
        })

    async def search(self, request: HttpRequest) -> Response:
        kind = request.path_params["kind"]
        return _error(request, HttpError(501, f"the {kind} search API is not implemented yet"))

    def _caller(self, request: HttpRequest) -> CallMeta:
        """With `http.require_token`, the caller's bearer JWT must verify; it names the caller."""
        request_id = request.headers.get(REQUEST_ID)
        if not self._require_token:
            caller = request.scope.get("state", {}).get(CALLER_STATE)
            return CallMeta(FRONTEND, caller=caller, request_id=request_id)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        challenge = f'Bearer realm="{self._realm}"'
        if scheme.lower() != "bearer" or not token.strip():
            raise HttpError(401, "a bearer token is required", {"www-authenticate": challenge})
        if self._identity is None:
            raise HttpError(500, "token verification is not configured ([identity] issuers)")
        result = self._identity.verifier.verify(token.strip())
        if isinstance(result, Rejection):
            raise HttpError(401, f"token rejected ({result.value}): {TEXT[result]}",
                            {"www-authenticate": challenge + ', error="invalid_token"'})
        return CallMeta(FRONTEND, caller=f"{result.subject_type}:{result.subject_id}",
                        request_id=request_id)

    async def _json(self, request: HttpRequest) -> Any:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise HttpError(413, f"the body is larger than {self._max_bytes} bytes")
        raw = await request.body()
        if len(raw) > self._max_bytes:
            raise HttpError(413, f"the body is larger than {self._max_bytes} bytes")
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"the body is not JSON: {exc}") from None


def _decision(outcome: Outcome) -> dict[str, Any]:
    return decision_to_json(outcome.decision, decision_id=outcome.decision_id)


def _headers(request: HttpRequest, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    headers = dict(extra or {})
    request_id = request.headers.get(REQUEST_ID)
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return headers


def _json(request: HttpRequest, data: Any, status: int = 200) -> Response:
    return JSONResponse(data, status_code=status, headers=_headers(request))


def _error(request: HttpRequest, exc: HttpError) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=exc.status,
                        headers=_headers(request, exc.headers))


async def _http_exception(request: HttpRequest, exc: Exception) -> Response:
    """404/405 from routing, as JSON like every other answer."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return _error(request, HttpError(status, detail))


def create_app(
    service: DecisionService, config: Config, identity: IdentityResolver | None = None
) -> Starlette:
    api = AuthZenApi(service, config, identity)
    return Starlette(
        routes=[
            Route(EVALUATION, api.evaluation, methods=["POST"]),
            Route(EVALUATIONS, api.evaluations, methods=["POST"]),
            Route(WELL_KNOWN, api.configuration, methods=["GET"]),
            Route(SEARCH, api.search, methods=["POST"]),
        ],
        exception_handlers={HTTPException: _http_exception, Exception: _http_exception},
    )
