"""Redis connections for every part of the PDP that talks to Redis.

One URL names the deployment; `connect` returns a client for it with short
timeouts and no automatic retries (a caller on the decision path would rather
decide locally than wait), and `FaultTracker` keeps the health of one Redis
dependency: it counts faults, logs only when the state changes, and keeps
callers off a failing server except for one probe per retry interval.

URL forms (options after `?` are redis-py connection options, e.g.
`ssl_ca_certs=/path/ca.pem`, `ssl_cert_reqs=none`, `client_name=pdp-eu1`):

    redis://[[user]:password@]host[:port][/db]        one server
    rediss://...                                      the same over TLS
    redis+cluster://[[user]:password@]host:port[,host:port...]
                                                      Redis Cluster, seed nodes
    rediss+cluster://...                              Redis Cluster over TLS
    redis://host:port?cluster=true                    Redis Cluster, one seed
    redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/db]
                                                      the master Sentinel names
                                                      SERVICE (rediss+sentinel
                                                      for TLS to the master);
                                                      `sentinel_password=` in
                                                      the query if the
                                                      sentinels need one

Keys: `key(namespace, tag, *parts)` -> `pdp:<namespace>:{<tag>}[:part...]`.
Redis Cluster hashes only the `{...}` part, so keys that one operation (a
MULTI, a multi-key command) touches together must share a tag; keys used one
at a time should carry their own tag so they spread over the slots.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel

from pdp import metrics
from pdp.logs import fields

log = logging.getLogger("pdp.redis")

# Redis on the decision path: a loopback round trip is ~0.1 ms, a LAN one < 1 ms.
DEFAULT_TIMEOUT_S = 0.005
KEY_PREFIX = "pdp"

Client = redis.Redis | RedisCluster
# What a Redis call can raise when the server is down, slow, or says no.
ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException, OSError)

_SCHEMES = {"redis", "rediss"}
_TRUE = {"1", "true", "yes", "on"}


class RedisUrlError(ValueError):
    """A Redis URL that cannot be used; the message never includes the password."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed URL: what kind of deployment, its nodes, and the connection options."""

    kind: str  # "server", "cluster" or "sentinel"
    nodes: tuple[tuple[str, int], ...]
    service: str | None
    options: Mapping[str, Any]  # redis-py connection kwargs: username, password, db, ssl...


def parse(url: str) -> RedisTarget:
    """Parse any of the URL forms in the module docstring."""
    parts = urlsplit(url)
    base, _, variant = parts.scheme.partition("+")
    if base not in _SCHEMES or variant not in ("", "cluster", "sentinel"):
        raise RedisUrlError(
            f"{redact(url)}: scheme must be redis, rediss, redis+cluster, rediss+cluster, "
            "redis+sentinel or rediss+sentinel"
        )
    query = dict(parse_qsl(parts.query))
    if query.pop("cluster", "").lower() in _TRUE:
        variant = variant or "cluster"
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    nodes = tuple(_node(n, url) for n in hostlist.split(",") if n) or (("127.0.0.1", 6379),)
    path = parts.path
    service = None
    if variant == "sentinel":
        service, _, path = path.lstrip("/").partition("/")
        if not service:
            raise RedisUrlError(f"{redact(url)}: a sentinel URL names the service: /SERVICE[/db]")
    if variant == "cluster" and path.strip("/") not in ("", "0"):
        raise RedisUrlError(f"{redact(url)}: Redis Cluster has only database 0")
    host, port = nodes[0]
    single = urlunsplit((base, f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}",
                         path, urlencode(query), ""))
    try:
        options = parse_url(single)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise RedisUrlError(f"{redact(url)}: {exc}") from exc
    for name in ("host", "port"):
        options.pop(name, None)
    if base == "rediss":
        options.pop("connection_class", None)
        options["ssl"] = True
    return RedisTarget(variant or "server", nodes, service, options)


def _node(text: str, url: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "6379")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise RedisUrlError(f"{redact(url)}: bad port in {text!r}") from None


def connect(
    url: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    connect_timeout_s: float | None = None,
    decode_responses: bool = False,
) -> Client:
    """A client for `url` that gives up after `timeout_s` and never retries on its own.

    Nothing connects until the first command, so this works with Redis down.
    """
    target = parse(url)
    common: dict[str, Any] = {
        **target.options,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": connect_timeout_s if connect_timeout_s is not None else timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": decode_responses,
    }
    if target.kind == "cluster":
        common.pop("db", None)
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in target.nodes],  # type: ignore[no-untyped-call]
            require_full_coverage=False, **common,
        )
    if target.kind == "sentinel":
        return _sentinel_master(target, common)
    return redis.Redis(host=target.nodes[0][0], port=target.nodes[0][1], **common)


def _sentinel_master(target: RedisTarget, common: dict[str, Any]) -> redis.Redis:
    password = common.pop("sentinel_password", None)
    sentinel_options = {k: v for k, v in common.items() if k.startswith("socket_")}
    sentinel_options["retry"] = common["retry"]
    if password:
        sentinel_options["password"] = password
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.nodes), sentinel_kwargs=sentinel_options, **common)
    master: redis.Redis = sentinel.master_for(str(target.service))  # type: ignore[no-untyped-call]
    return master


class LazyClient:
    """A client made on first use and remade after a failed attempt to make it.

    A cluster client reads the slot map when it is made, so with the cluster
    down at start making it raises: that must be a fault of the first call
    (counted, retried later), not a crash at start. The URL is checked now.
    """

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                 connect_timeout_s: float | None = None, decode_responses: bool = False) -> None:
        parse(url)
        self.url = url
        self._args = (timeout_s, connect_timeout_s, decode_responses)
        self._client: Client | None = None
        self._lock = threading.Lock()

    def get(self) -> Client:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                self._client = connect(self.url, *self._args)
            return self._client

    def detach(self) -> Client | None:
        """Stop handing out the current client (the next `get` makes a new one) and
        return it, for the caller to `close_client` where blocking does not matter:
        closing waits for the calls still in flight on it."""
        with self._lock:
            client, self._client = self._client, None
        return client

    def close(self) -> None:
        close_client(self.detach())


def close_client(client: Client | None) -> None:
    """Close every connection of `client`; never raises."""
    if client is None:
        return
    with contextlib.suppress(*ERRORS):
        if isinstance(client, redis.Redis):
            client.connection_pool.disconnect()  # a sentinel pool is not closed by close()
        client.close()


def redact(url: str) -> str:
    """The URL with its password replaced, for logs and error messages."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=f"{user}{':***' if colon else ''}@{hosts}"))


def key(namespace: str, tag: str, *parts: str) -> str:
    """`pdp:<namespace>:{<tag>}[:part...]`; the tag picks the cluster slot."""
    head = f"{KEY_PREFIX}:{namespace}:{{{tag}}}"
    return ":".join((head, *parts)) if parts else head


class FaultTracker:
    """Health of one Redis dependency, shared by the threads that use it.

    Callers ask `available()` before a Redis call and report `ok()` or
    `fault(exc)` after it. While failing, `available()` lets one caller
    through per `retry_s` (the probe), so a dead or paused server costs one
    timeout per interval instead of one per request. Each fault is counted
    (here and in `pdp_redis_faults`); the log gets one line when the
    dependency starts failing and one when it recovers.

    With `settle_s`, a success after failing only starts a trial: calls go
    through again, but the recovery is declared (and logged) once calls have
    succeeded for `settle_s`; a fault during the trial returns to failing
    without a new log line. A partial outage (one master of a cluster) then
    logs one failure and one recovery instead of a pair per probe.
    """

    def __init__(self, component: str, retry_s: float = 1.0, settle_s: float = 0.0) -> None:
        self.component = component
        self.retry_s = retry_s
        self.settle_s = settle_s
        self.faults = 0
        self.outages = 0
        self.last_error: str | None = None
        self._failing = False  # faults since the last declared recovery
        self._blocked = False  # failing and not on trial: only probes go through
        self._trial_since = 0.0
        self._probe_at = 0.0
        self._lock = threading.Lock()

    @property
    def healthy(self) -> bool:
        return not self._failing

    @property
    def blocked(self) -> bool:
        """True while calls other than the probe should skip Redis."""
        return self._blocked

    def available(self) -> bool:
        if not self._blocked:  # the common case: no lock
            return True
        with self._lock:
            now = time.monotonic()
            if not self._blocked or now >= self._probe_at:
                self._probe_at = now + self.retry_s
                return True
            return False

    def ok(self) -> None:
        if not self._failing:
            return
        with self._lock:
            if not self._failing:
                return
            now = time.monotonic()
            if self._blocked:  # the first success: a trial starts
                self._blocked = False
                self._trial_since = now
            if now - self._trial_since < self.settle_s:
                return
            self._failing = False
            faults = self.faults
        log.info("redis recovered", extra=fields(component=self.component, faults=faults))

    def fault(self, exc: BaseException) -> None:
        metrics.redis_fault(self.component)
        error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.faults += 1
            self.last_error = error
            self._probe_at = time.monotonic() + self.retry_s
            self._blocked = True
            if self._failing:
                return
            self._failing = True
            self.outages += 1
        log.warning("redis failing; continuing without it", extra=fields(
            component=self.component, error=error, retry_s=self.retry_s))
