"""Python client of the decision service, sync (`PdpClient`) and asyncio (`AsyncPdpClient`).

    with PdpClient("127.0.0.1:50051") as pdp:
        answer = pdp.check("user:alice", "orders.read", "order:42",
                           resource_properties={"owner": "alice"})
        if answer.allowed: ...

Every call has a deadline (the client's `timeout`, or per call). Retries are
gRPC's own retry policy, only for UNAVAILABLE and only on the calls that are
safe to repeat (Check, BatchCheck, PolicyInfo); never for Reload.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import grpc.aio

from pdp.v1 import admin_pb2, admin_pb2_grpc, decision_pb2, decision_pb2_grpc

Metadata = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """Server verification (`ca_file`; None = system roots) and, for mTLS, a client certificate."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # Expected name in the server certificate, when it differs from the target host.
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


def _service_config(attempts: int) -> str:
    idempotent = [
        {"service": "pdp.v1.DecisionService"},
        {"service": "pdp.v1.AdminService", "method": "PolicyInfo"},
    ]
    policy = {
        "maxAttempts": max(2, attempts),
        "initialBackoff": "0.05s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    config: dict[str, Any] = {"methodConfig": [{"name": idempotent}]}
    if attempts > 1:
        config["methodConfig"][0]["retryPolicy"] = policy
    return json.dumps(config)


def _channel_options(tls: TlsOptions | None, attempts: int) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.enable_retries", 1 if attempts > 1 else 0),
        ("grpc.service_config", _service_config(attempts)),
    ]
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options


def _split(name: str, what: str) -> tuple[str, str]:
    type_, sep, id_ = name.partition(":")
    if not sep:
        raise ValueError(f"{what} must be TYPE:ID, got {name!r}")
    return type_, id_


def make_request(
    subject: str,
    action: str,
    resource: str,
    *,
    subject_properties: Mapping[str, Any] | None = None,
    resource_properties: Mapping[str, Any] | None = None,
    action_properties: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    roles: Iterable[str] | None = None,
    token: str | None = None,
) -> decision_pb2.CheckRequest:
    """A CheckRequest from `TYPE:ID` names and plain dicts (JSON-compatible values)."""
    req = decision_pb2.CheckRequest()
    req.subject.type, req.subject.id = _split(subject, "subject")
    req.action.name = action
    req.resource.type, req.resource.id = _split(resource, "resource")
    sprops = dict(subject_properties or {})
    if roles is not None:
        sprops["roles"] = list(roles)
    for struct, values in (
        (req.subject.properties, sprops),
        (req.resource.properties, resource_properties),
        (req.action.properties, action_properties),
        (req.context, context),
    ):
        if values:
            struct.update(values)
    if token:
        req.subject.token = token
    return req


class _Base:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    def _deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout


class PdpClient(_Base):
    """A blocking client; thread-safe, keep one per process and reuse it."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        tls: TlsOptions | None = None,
        timeout: float = 2.0,
        attempts: int = 3,
    ) -> None:
        super().__init__(timeout)
        options = _channel_options(tls, attempts)
        self.channel = (
            grpc.secure_channel(target, tls.credentials(), options) if tls
            else grpc.insecure_channel(target, options)
        )
        self._decisions = decision_pb2_grpc.DecisionServiceStub(self.channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    def check(
        self, subject: str, action: str, resource: str, *, timeout: float | None = None,
        metadata: Metadata | None = None, **fields: Any,
    ) -> decision_pb2.CheckResponse:
        """Decide one request; `fields` are make_request's keywords."""
        request = make_request(subject, action, resource, **fields)
        return self.check_request(request, timeout=timeout, metadata=metadata)

    def check_request(
        self, request: decision_pb2.CheckRequest, *, timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> decision_pb2.CheckResponse:
        reply = self._decisions.Check(request, timeout=self._deadline(timeout), metadata=metadata)
        return cast(decision_pb2.CheckResponse, reply)

    def batch_check(
        self, requests: Iterable[decision_pb2.CheckRequest], *, timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> list[decision_pb2.CheckResponse]:
        """One response per request, in order; a bad entry gets its own DENY with `error`."""
        batch = decision_pb2.BatchCheckRequest(requests=requests)
        reply = self._decisions.BatchCheck(batch, timeout=self._deadline(timeout), metadata=metadata)
        return list(reply.responses)

    def policy_info(self, *, timeout: float | None = None) -> admin_pb2.PolicyInfoResponse:
        reply = self._admin.PolicyInfo(admin_pb2.PolicyInfoRequest(), timeout=self._deadline(timeout))
        return cast(admin_pb2.PolicyInfoResponse, reply)

    def reload(self, *, timeout: float | None = None) -> admin_pb2.ReloadResponse:
        reply = self._admin.Reload(admin_pb2.ReloadRequest(), timeout=self._deadline(timeout))
        return cast(admin_pb2.ReloadResponse, reply)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> PdpClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class AsyncPdpClient(_Base):
    """The asyncio twin of PdpClient; create and use it inside one event loop."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        tls: TlsOptions | None = None,
        timeout: float = 2.0,
        attempts: int = 3,
    ) -> None:
        super().__init__(timeout)
        options = _channel_options(tls, attempts)
        self.channel = (
            grpc.aio.secure_channel(target, tls.credentials(), options) if tls
            else grpc.aio.insecure_channel(target, options)
        )
        self._decisions = decision_pb2_grpc.DecisionServiceStub(self.channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    async def check(
        self, subject: str, action: str, resource: str, *, timeout: float | None = None,
        metadata: Metadata | None = None, **fields: Any,
    ) -> decision_pb2.CheckResponse:
        request = make_request(subject, action, resource, **fields)
        return await self.check_request(request, timeout=timeout, metadata=metadata)

    async def check_request(
        self, request: decision_pb2.CheckRequest, *, timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> decision_pb2.CheckResponse:
        reply = await self._decisions.Check(
            request, timeout=self._deadline(timeout), metadata=metadata
        )
        return cast(decision_pb2.CheckResponse, reply)

    async def batch_check(
        self, requests: Iterable[decision_pb2.CheckRequest], *, timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> list[decision_pb2.CheckResponse]:
        batch = decision_pb2.BatchCheckRequest(requests=requests)
        reply = await self._decisions.BatchCheck(
            batch, timeout=self._deadline(timeout), metadata=metadata
        )
        return list(reply.responses)

    async def policy_info(self, *, timeout: float | None = None) -> admin_pb2.PolicyInfoResponse:
        reply = await self._admin.PolicyInfo(
            admin_pb2.PolicyInfoRequest(), timeout=self._deadline(timeout)
        )
        return cast(admin_pb2.PolicyInfoResponse, reply)

    async def reload(self, *, timeout: float | None = None) -> admin_pb2.ReloadResponse:
        reply = await self._admin.Reload(admin_pb2.ReloadRequest(), timeout=self._deadline(timeout))
        return cast(admin_pb2.ReloadResponse, reply)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncPdpClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()
