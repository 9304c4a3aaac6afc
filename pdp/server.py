"""The gRPC server: decision and admin services, health, reflection, and its lifecycle.

`run` serves one worker process until SIGTERM/SIGINT: it listens first
(health NOT_SERVING), loads the policy (then SERVING), reloads on file
changes and SIGHUP, and on shutdown stops accepting and lets the calls in
flight finish. `build_service` is the one place the decision path is
assembled (cache, audit and identity plug in there).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pdp import envoy
from pdp.cache import TieredCache, build_cache
from pdp.config import Config
from pdp.grpc_mapping import (
    InvalidRequest,
    RequestMemo,
    decode_check,
    fill_response,
    invalid_fields,
    response_bytes,
    to_request,
    to_response,
)
from pdp.http_server import HttpServer
from pdp.identity.callers import caller_identity
from pdp.identity.config import IdentityConfigError
from pdp.identity.resolver import CERTIFICATE_SUBJECT_TYPE, IdentityResolver
from pdp.identity.serving import admin_guard, build_resolver, server_credentials, tls_files
from pdp.identity.tls import TlsConfigError
from pdp.logs import fields
from pdp.model import Decision, Request, deny_because
from pdp.observability import Observability, bundle_publisher
from pdp.policy import CompiledPolicy
from pdp.redis_sync import ReplicaSync
from pdp.reload import PolicyReloader, ReloadResult
from pdp.service import CallMeta, DecisionService, Outcome, PolicyHolder, new_decision_id
from pdp.v1 import admin_pb2, admin_pb2_grpc, decision_pb2

log = logging.getLogger("pdp.server")

DECISION_SERVICE = decision_pb2.DESCRIPTOR.services_by_name["DecisionService"].full_name
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
HEALTH_NAMES = ("", DECISION_SERVICE, ADMIN_SERVICE, envoy.SERVICE_NAME)
# Every AdminService RPC (policy info, reload, and any added later) is for admins only.
ADMIN_METHODS = frozenset(
    f"/{ADMIN_SERVICE}/{m.name}"
    for m in admin_pb2.DESCRIPTOR.services_by_name["AdminService"].methods
)
# NOT_SERVING while an audit sink fails; "" stays SERVING, as decisions are still made.
AUDIT_HEALTH = "pdp.audit"
# NOT_SERVING while the last policy load failed (the previous version still serves).
POLICY_HEALTH = "pdp.policy"
_GRPC_META = CallMeta("grpc")


class DecisionServicer:
    """pdp.v1.DecisionService."""

    def __init__(
        self, service: DecisionService, config: Config, identity: IdentityResolver | None = None
    ) -> None:
        self._service = service
        self._limits = config.limits
        self._identity = identity
        self._subject_from_caller = identity is not None and identity.config.subject_from_certificate
        self._memo = RequestMemo()
        files = tls_files(config.server.tls)
        self._mtls = files is not None and files.mtls

    def Check(self, data: bytes, context: grpc.ServicerContext) -> bytes:
        """Wire bytes in and out (see `decision_handlers`): a request seen before is
        not decoded again, and the response is laid out from kept bytes."""
        try:
            req = self._memo.get(data) or self._decode(data, context)
            if isinstance(req, Outcome):  # the token was refused
                return response_bytes(req)
            return response_bytes(self._service.check(req, self._meta(context)))
        except InvalidRequest as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # not reached: abort raises
        except Exception:  # fail closed, keep serving
            log.exception("check failed")
            return bytes(_internal_error().SerializeToString())

    def _decode(self, data: bytes, context: grpc.ServicerContext) -> Request | Outcome:
        msg = decode_check(data)
        req = self._prepare(msg, context)
        if isinstance(req, Decision):
            return self._refused(msg, req, context)
        if not msg.subject.token and not self._subject_from_caller:  # depends on the bytes alone
            self._memo.keep(data, req)
        return req

    def _refused(self, msg: Any, decision: Decision, context: grpc.ServicerContext) -> Outcome:
        """A refused token's DENY, audited (and counted) like any decision."""
        outcome = Outcome(decision, new_decision_id(), False, 0.0)
        if self._service.audit is not None:
            self._service.audit.record(to_request(msg, self._limits), outcome, self._meta(context))
        return outcome

    def _prepare(
        self, msg: decision_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> Request | Decision:
        """The validated request, about the token's subject when a token is given."""
        if self._subject_from_caller:
            msg = _caller_as_subject(msg, context)
        req = to_request(msg, self._limits)
        token = msg.subject.token
        if not token:
            return req
        version = _serving_version(self._service.holder)
        if self._identity is None:
            return deny_because("token verification is not configured ([identity] issuers)",
                                version, "pdp.identity.unconfigured")
        return self._identity.resolve(req, token, version)

    def BatchCheck(
        self, request: decision_pb2.BatchCheckRequest, context: grpc.ServicerContext
    ) -> Any:
        entries = request.requests
        if len(entries) > self._limits.max_batch:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"requests: {len(entries)} entries, more than the maximum of {self._limits.max_batch}",
            )
        reply = decision_pb2.BatchCheckResponse()
        try:
            self._batch(entries, context, reply.responses.add)
        except Exception:
            log.exception("batch check failed")
            reply = decision_pb2.BatchCheckResponse(responses=[_internal_error() for _ in entries])
        return reply

    def _batch(
        self, entries: Sequence[Any], context: grpc.ServicerContext, add: Callable[..., Any]
    ) -> None:
        """Decide the valid entries in one go (one policy version), answer each in order."""
        items: list[Request | Decision | InvalidRequest] = []
        for i, entry in enumerate(entries):
            try:
                items.append(self._prepare(entry, context))
            except InvalidRequest as exc:
                items.append(exc.within(f"requests[{i}]"))
        valid = [item for item in items if isinstance(item, Request)]
        outcomes = self._service.check_many(valid, self._meta(context))
        if len(valid) == len(items):
            for outcome in outcomes:
                fill_response(add(), outcome)
            return
        version = outcomes[0].decision.policy_version if outcomes else _serving_version(
            self._service.holder)
        pending = iter(outcomes)
        for item, entry in zip(items, entries, strict=True):
            if isinstance(item, Request):
                fill_response(add(), next(pending))
            elif isinstance(item, InvalidRequest):
                add(**invalid_fields(item, new_decision_id(), version))
            else:
                fill_response(add(), self._refused(entry, item, context))

    def _meta(self, context: grpc.ServicerContext) -> CallMeta:
        if self._service.audit is None:  # nobody reads it: skip the metadata walk
            return _GRPC_META
        return call_meta(context, self._mtls)


def decision_handlers(servicer: DecisionServicer) -> dict[str, grpc.RpcMethodHandler]:
    """pdp.v1.DecisionService's methods. Check takes and returns wire bytes (no
    (de)serializer): the servicer keeps decoded requests and response bytes."""
    batch_request, batch_response = decision_pb2.BatchCheckRequest, decision_pb2.BatchCheckResponse
    return {
        "Check": grpc.unary_unary_rpc_method_handler(servicer.Check),
        "BatchCheck": grpc.unary_unary_rpc_method_handler(
            servicer.BatchCheck, request_deserializer=batch_request.FromString,
            response_serializer=batch_response.SerializeToString),
    }


def add_registered(server: grpc.Server, service: str,
                   handlers: dict[str, grpc.RpcMethodHandler]) -> None:
    """Serve `handlers` as generated code does: registered methods (found without a
    per-call lookup through the generic handlers), plus a generic handler."""
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)


def call_meta(context: grpc.ServicerContext, mtls: bool) -> CallMeta:
    """The caller (client certificate's SPIFFE ID, else CN) and request id (x-request-id).
    Without mTLS no caller has a certificate: the auth context is not asked (it is
    built afresh per call)."""
    request_id = next((v for k, v in context.invocation_metadata() if k == "x-request-id"), None)
    caller = caller_identity(context) if mtls else None
    if request_id is None and caller is None:
        return _GRPC_META  # shared: nothing of this call's to hold
    return CallMeta("grpc", caller=caller, request_id=request_id)


def _caller_as_subject(msg: Any, context: grpc.ServicerContext) -> Any:
    """[identity] subject_from_certificate: no subject and no token asks about the caller."""
    subject = msg.subject
    if subject.token or subject.type or subject.id:
        return msg
    caller = caller_identity(context)
    if caller is None:
        return msg
    copy = type(msg)()
    copy.CopyFrom(msg)
    copy.subject.type, copy.subject.id = CERTIFICATE_SUBJECT_TYPE, caller
    return copy


def _serving_version(holder: PolicyHolder) -> str:
    policy = holder.current
    return policy.version if policy else ""


def _internal_error() -> Any:
    return to_response(Outcome(deny_because("internal error", ""), new_decision_id(), False, 0.0))


class AdminServicer:
    """pdp.v1.AdminService."""

    def __init__(self, reloader: PolicyReloader, in_pool: bool = False) -> None:
        self._reloader = reloader
        self._in_pool = in_pool
        self.observability: Observability | None = None

    def PolicyInfo(self, request: admin_pb2.PolicyInfoRequest, context: grpc.ServicerContext) -> Any:
        return self._info()

    def _info(self) -> Any:
        info = policy_info(self._reloader.holder)
        if self.observability is not None:
            _audit_status(info.audit, self.observability.status())
        return info

    def Reload(self, request: admin_pb2.ReloadRequest, context: grpc.ServicerContext) -> Any:
        result = self._reloader.reload("admin rpc")
        if self._in_pool and result.changed:  # the supervisor passes SIGHUP to every worker
            os.kill(os.getppid(), signal.SIGHUP)
        info = self._info()
        return admin_pb2.ReloadResponse(
            ok=result.ok, changed=result.changed, info=info,
            error=None if result.ok else _reload_error(result),
        )


def policy_info(holder: PolicyHolder) -> Any:
    info = admin_pb2.PolicyInfoResponse()
    policy = holder.current
    if policy is not None:
        summary = policy.summary()
        info.version = policy.version
        info.source_dir = str(policy.source_dir)
        for key in ("files", "roles", "rules", "grants", "subjects", "tests"):
            setattr(info, key, int(summary.get(key, 0)))
        if holder.loaded_at is not None:
            info.loaded_at.CopyFrom(_timestamp(holder.loaded_at))
    if holder.last_error is not None:
        info.last_error.CopyFrom(_error(holder.last_error, holder.last_issues, holder.failed_at))
    return info


def _audit_status(out: Any, status: dict[str, Any]) -> None:
    out.enabled, out.healthy = status["enabled"], status["healthy"]
    if not status["enabled"]:
        return
    out.queue_depth, out.queue_size = status["queue_depth"], status["queue_size"]
    out.dropped = status["dropped"]
    for name, sink in status["sinks"].items():
        out.sinks.add(name=name, healthy=sink["healthy"], written=sink["written"],
                      lost=sink["lost"], last_error=sink["last_error"] or "")


def _reload_error(result: ReloadResult) -> Any:
    return _error(result.error or "", result.issues, None)


def _error(message: str, issues: Sequence[Any], at: float | None) -> Any:
    error = admin_pb2.ReloadError(
        message=message,
        issues=[
            admin_pb2.PolicyIssue(file=i.file, line=max(i.line, 0), column=max(i.column, 0),
                                  message=i.message)
            for i in issues
        ],
    )
    if at is not None:
        error.at.CopyFrom(_timestamp(at))
    return error


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def build_service(config: Config, holder: PolicyHolder) -> DecisionService:
    """The decision path for this process; the cache, audit and identity plug in here."""
    return DecisionService(holder, cache=build_cache(config))


@dataclass(slots=True)
class Server:
    """One running gRPC server and the parts its lifecycle needs."""

    grpc_server: grpc.Server
    port: int
    health: health.HealthServicer
    reloader: PolicyReloader
    service: DecisionService
    identity: IdentityResolver | None = None
    sync: ReplicaSync | None = None  # what this replica follows in Redis
    observability: Observability | None = None  # audit log and metrics

    def mark_serving(self) -> None:
        status = health_pb2.HealthCheckResponse.SERVING
        for name in HEALTH_NAMES:
            self.health.set(name, status)

    def stop(self, grace_seconds: float) -> None:
        """Stop accepting; wait up to the grace period for the calls in flight."""
        self.health.enter_graceful_shutdown()
        self.grpc_server.stop(grace_seconds).wait()
        if isinstance(self.service.cache, TieredCache):
            self.service.cache.close()
        if self.observability is not None:
            self.observability.close()  # drains the audit queue into the sinks


def build_server(
    config: Config,
    holder: PolicyHolder | None = None,
    reuse_port: bool = False,
    extra_services: Mapping[str, dict[str, grpc.RpcMethodHandler]] | None = None,
    identity: IdentityResolver | None = None,
    pool_worker: bool = False,
) -> Server:
    """Create and bind (not start) the server; health is NOT_SERVING until a policy loads.

    `pool_worker`: this process is one of `--workers`, whose parent relays SIGHUP."""
    holder = holder or PolicyHolder()
    identity = identity or build_resolver(config.identity)
    service = build_service(config, holder)
    sync = ReplicaSync.from_config(config)
    service.assignments = sync.assignments
    reloader = sync.reloader(holder, Path(config.policy.dir))
    options = [
        ("grpc.max_receive_message_length", config.server.max_message_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    grpc_server = grpc.server(
        futures.ThreadPoolExecutor(config.server.threads, thread_name_prefix="pdp-rpc"),
        options=options,
        interceptors=[admin_guard(config.identity, tls_files(config.server.tls), ADMIN_METHODS)],
    )
    add_registered(grpc_server, DECISION_SERVICE,
                   decision_handlers(DecisionServicer(service, config, identity)))
    for name, handlers in (extra_services or {}).items():
        add_registered(grpc_server, name, handlers)
    admin = AdminServicer(reloader, in_pool=pool_worker)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(admin, grpc_server)
    envoy.add_to_server(grpc_server, service, config.envoy, identity)
    health_servicer = health.HealthServicer()
    for name in HEALTH_NAMES:
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    _follow_policy_health(holder, health_servicer)
    if config.server.reflection:
        names = (*HEALTH_NAMES[1:], health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, grpc_server)
    port = _bind(grpc_server, config)
    observed = _observe(config, service, health_servicer, sync)
    admin.observability = observed
    server = Server(grpc_server, port, health_servicer, reloader, service, identity, sync,
                    observed)

    def loaded(policy: CompiledPolicy) -> None:
        observed.policy_loaded(policy)  # the policy source in audit records and metrics
        server.mark_serving()

    reloader.on_loaded = loaded
    return server


def _follow_policy_health(holder: PolicyHolder, health_servicer: health.HealthServicer) -> None:
    status = health_pb2.HealthCheckResponse
    health_servicer.set(POLICY_HEALTH, status.NOT_SERVING)
    holder.on_status = lambda loaded: health_servicer.set(
        POLICY_HEALTH, status.SERVING if loaded else status.NOT_SERVING
    )


def _observe(config: Config, service: DecisionService, health_servicer: health.HealthServicer,
             sync: ReplicaSync) -> Observability:
    """Audit log and metrics on the decision path; `pdp.audit` health follows the sinks."""
    observed = Observability.start(config.audit, config.metrics.listen)
    service.audit = observed.recorder
    if sync.policy_loader is not None:
        observed.publisher = bundle_publisher(sync.policy_loader.store)
    if observed.audit is not None:
        def report(healthy: bool) -> None:
            status = health_pb2.HealthCheckResponse
            health_servicer.set(AUDIT_HEALTH, status.SERVING if healthy else status.NOT_SERVING)

        report(True)
        observed.audit.on_health = report
    return observed


def _bind(grpc_server: grpc.Server, config: Config) -> int:
    address, files = config.server.listen, tls_files(config.server.tls)
    if files is not None:  # re-read on change: certificates rotate without a restart
        port = grpc_server.add_secure_port(address, server_credentials(files))
    else:
        port = grpc_server.add_insecure_port(address)
    return int(port)


def run(
    config: Config,
    reuse_port: bool = False,
    extra_services: Mapping[str, dict[str, grpc.RpcMethodHandler]] | None = None,
    pool_worker: bool = False,
) -> int:
    """Serve until SIGTERM/SIGINT, then shut down gracefully; returns the exit code."""
    try:
        server = build_server(config, reuse_port=reuse_port, extra_services=extra_services,
                              pool_worker=pool_worker)
    except (RuntimeError, OSError, TlsConfigError) as exc:
        log.error("cannot listen", extra=fields(listen=config.server.listen, error=str(exc)))
        return 1
    except IdentityConfigError as exc:
        log.error("bad [identity] configuration", extra=fields(error=str(exc)))
        return 1
    stop = threading.Event()
    _install_signal_handlers(stop, server.reloader)
    server.grpc_server.start()
    log.info("listening", extra=fields(
        listen=config.server.listen, port=server.port, tls=bool(config.server.tls.cert_file),
        policies=config.policy.dir if config.policy.source == "dir" else "redis bundle",
    ))
    try:
        http = _start_http(config, server, reuse_port)
    except (RuntimeError, OSError, TlsConfigError) as exc:
        log.error("cannot listen", extra=fields(http=config.http.listen, error=str(exc)))
        server.stop(0)
        return 1
    sync = server.sync or ReplicaSync()
    sync.start(server.reloader)  # first, so role assignments are in before health says SERVING
    server.reloader.reload("startup")
    watch = config.policy.watch and not sync.uses_bundles
    watcher = server.reloader.watch(config.policy.debounce_ms) if watch else None
    while not stop.wait(1.0):
        pass
    log.info("shutting down", extra=fields(grace_seconds=config.server.grace_seconds))
    if http is not None:
        http.stop()
    server.stop(config.server.grace_seconds)
    if watcher is not None:
        watcher.stop()
    sync.stop()
    log.info("stopped")
    return 0


def _start_http(config: Config, server: Server, reuse_port: bool) -> HttpServer | None:
    """The AuthZEN HTTP API beside gRPC, on the same decision path (`--http`)."""
    if config.http.listen is None:
        return None
    http = HttpServer(config, server.service, server.identity, reuse_port=reuse_port)
    http.start()
    log.info("http listening", extra=fields(listen=config.http.listen, port=http.port,
                                            scheme=http.scheme))
    return http


def _install_signal_handlers(stop: threading.Event, reloader: PolicyReloader) -> None:
    def on_stop(signum: int, _frame: object) -> None:
        log.info("signal received", extra=fields(signal=signal.Signals(signum).name))
        stop.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, lambda _s, _f: reloader.reload_in_background("SIGHUP"))
