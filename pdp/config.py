"""Settings of the service: defaults < TOML file < `PDP_` environment < command line.

The settings are a tree of frozen dataclasses, one per TOML table. To add a
section, write a dataclass of settings and add a field of that type to
`Config`: its keys then come from `[section]` in the file, from
`PDP_SECTION_KEY` in the environment and from `--section-key` on the command
line, with no other code. A setting may add a short flag alias with
`setting(default, "help", flag="--alias")`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdp.audit.settings import AuditSettings
from pdp.identity.settings import IdentitySettings

ENV_PREFIX = "PDP_"
CONFIG_ENV = "PDP_CONFIG"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the setting and its source."""


def setting(default: Any, help: str, flag: str | None = None) -> Any:
    """A dataclass field with the help text (and optional flag alias) the CLI shows."""
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True, slots=True)
class TlsConfig:
    # The files are re-read when they change (certificate rotation without restart).
    cert_file: str | None = setting(
        None, "PEM server certificate chain; enables TLS", flag="--tls-cert"
    )
    key_file: str | None = setting(
        None, "PEM private key of the server certificate", flag="--tls-key"
    )
    client_ca_file: str | None = setting(
        None, "PEM CA bundle; when set, clients must present a certificate it signed (mTLS)",
        flag="--client-ca",
    )


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: str = setting("127.0.0.1:50051", "HOST:PORT to listen on", flag="--listen")
    workers: int = setting(
        1, "worker processes sharing the port (SO_REUSEPORT); 'auto' = one per core",
        flag="--workers",
    )
    # 4, not more: request threads contend for the GIL, and with 16 a Check cost
    # ~50% more server CPU at 64 calls in flight (README, "Performance: gRPC");
    # not fewer, so that a call blocked on I/O (a JWKS refetch, Redis at its
    # timeout) leaves threads to serve the others.
    threads: int = setting(4, "request threads per worker")
    max_message_bytes: int = setting(4 * 1024 * 1024, "largest request message accepted")
    grace_seconds: float = setting(10.0, "on SIGTERM/SIGINT, time allowed for calls in flight")
    reflection: bool = setting(True, "serve gRPC server reflection")
    tls: TlsConfig = field(default_factory=TlsConfig)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    dir: str = setting("policies", "folder of the policy set", flag="--policies")
    watch: bool = setting(True, "reload when a file under the folder changes")
    debounce_ms: int = setting(300, "wait for changes to settle this long before reloading")
    source: str = setting(
        "dir", "where the policy comes from: dir (the --policies folder) or redis (the bundle "
        "made current by `pdp publish`; needs --redis-url)",
    )


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_batch: int = setting(1000, "most requests in one BatchCheck")
    max_type_length: int = setting(256, "longest subject or resource type, in characters")
    max_id_length: int = setting(1024, "longest subject or resource id, in characters")
    max_action_length: int = setting(256, "longest action name, in characters")
    max_token_length: int = setting(16384, "longest bearer token, in characters")
    max_properties_bytes: int = setting(
        65536, "largest properties or context object, in encoded bytes"
    )


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = setting("info", "server log level: debug, info, warning, error")
    format: str = setting("json", "server log format: json (one object per line) or text")


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The decision cache; see pdp/cache.py. Level 2 uses redis.url when it is set."""

    size: int = setting(10_000, "level-1 (in-process) cache entries; 0 turns level 1 off")
    ttl: float = setting(300.0, "seconds a decision lives in the level-2 (Redis) cache")
    redis: bool = setting(True, "share decisions through Redis (level 2) when redis.url is set")
    l2_lookup: str = setting(
        "auto", "when a level-1 miss asks Redis before deciding locally: auto (only while "
        "measured slower locally; writes only then), always, never (write only)",
    )
    redis_timeout_ms: float = setting(
        5.0, "longest a Check waits for a level-2 read", flag="--redis-timeout-ms"
    )
    write_queue: int = setting(10_000, "level-2 writes waiting to be sent; more are dropped")
    retry_seconds: float = setting(1.0, "after a Redis fault, probe it again this often")

    def validate(self) -> None:
        if self.l2_lookup not in ("auto", "always", "never"):
            raise ConfigError(f"cache.l2_lookup: expected auto, always or never, got {self.l2_lookup!r}")
        if self.ttl <= 0 or self.redis_timeout_ms <= 0:
            raise ConfigError("cache.ttl and cache.redis_timeout_ms must be positive")


@dataclass(frozen=True, slots=True)
class EnvoyConfig:
    """Envoy external authorization (envoy.service.auth.v3) on the gRPC port; see pdp/envoy.py."""

    enabled: bool = setting(True, "serve Envoy ext_authz Check on the gRPC port")
    openapi_file: str | None = setting(
        None, "OpenAPI file (JSON; YAML when PyYAML is installed) whose path templates name routes"
    )
    context_headers: tuple[str, ...] = setting(
        ("user-agent", "x-request-id", "x-forwarded-for", "content-type"),
        "request headers copied into the context (comma-separated, lower case)",
    )
    require_token: bool = setting(False, "answer 401 to requests without a bearer token")
    decision_id_header: str = setting("x-pdp-decision-id", "header with the decision id ('' = none)")
    subject_header: str = setting("x-pdp-subject", "upstream header with type:id of the subject ('' = none)")
    show_reasons: bool = setting(True, "DENY bodies list the reasons")
    principal_type: str = setting("service", "subject type of the downstream mTLS principal")
    anonymous_type: str = setting("anonymous", "subject type when there is neither token nor principal")
    realm: str = setting("pdp", "realm of the WWW-Authenticate challenge")


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The AuthZEN Authorization API over HTTP; see pdp/authzen_http.py."""

    listen: str | None = setting(None, "HOST:PORT of the AuthZEN HTTP API (off when unset)", flag="--http")
    require_token: bool = setting(
        False, "callers must send Authorization: Bearer <JWT> that [identity] verifies"
    )
    tls: bool = setting(True, "serve HTTPS with the server.tls files when they are set (mTLS with a CA)")


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """The Redis every replica shares; see pdp/redisio.py for the URL forms."""

    url: str | None = setting(
        None, "redis://, rediss://, redis+cluster:// or redis+sentinel:// URL (off when unset)",
    )
    assignments: bool = setting(True, "merge the role assignments of `pdp grant` (needs the URL)")
    resync_seconds: float = setting(
        1.0, "re-check the current bundle and the assignments this often, besides pub/sub "
        "(one GET each: the bound on catching up on a missed announcement)"
    )


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus metrics; see pdp/metrics.py."""

    listen: str | None = setting(
        None, "HOST:PORT serving Prometheus /metrics (off when unset)", flag="--metrics"
    )


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    envoy: EnvoyConfig = field(default_factory=EnvoyConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    audit: AuditSettings = field(default_factory=AuditSettings)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    identity: IdentitySettings = field(default_factory=IdentitySettings)


@dataclass(frozen=True, slots=True)
class Setting:
    """One leaf of the tree, e.g. path ("server", "listen")."""

    path: tuple[str, ...]
    hint: Any
    default: Any
    help: str
    flag: str | None

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def env(self) -> str:
        return ENV_PREFIX + "_".join(self.path).upper()

    @property
    def dest(self) -> str:
        return "cfg__" + "__".join(self.path)

    @property
    def long_flag(self) -> str:
        return "--" + "-".join(self.path).replace("_", "-")


def settings(cls: type[Any] = Config, prefix: tuple[str, ...] = ()) -> Iterator[Setting]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        path = (*prefix, f.name)
        if dataclasses.is_dataclass(hint):
            yield from settings(typing.cast(type[Any], hint), path)
        else:
            yield Setting(path, hint, f.default, f.metadata.get("help", ""), f.metadata.get("flag"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (plus its alias); unset flags leave the lower layers alone."""
    parser.add_argument("--config", metavar="FILE", help=f"TOML config file (or ${CONFIG_ENV})")
    for s in settings():
        flags = [s.flag, s.long_flag] if s.flag else [s.long_flag]
        parser.add_argument(
            *flags, dest=s.dest, default=None, metavar="VALUE",
            help=f"{s.help} (default {s.default!r}; ${s.env})",
        )


def from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    config_file = getattr(args, "config", None) or env.get(CONFIG_ENV)
    cli = {s.path: v for s in settings() if (v := getattr(args, s.dest, None)) is not None}
    return load(Path(config_file) if config_file else None, env, cli)


def load(
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    cli: Mapping[tuple[str, ...], str] | None = None,
) -> Config:
    """Build the config from its layers; raises ConfigError naming the bad setting."""
    known = {s.path: s for s in settings()}
    config = Config()
    if file is not None:
        for path, value in _read_toml(file).items():
            config = _apply(config, known, path, value, str(file))
    for name, value in (env or {}).items():
        if name.startswith(ENV_PREFIX) and name != CONFIG_ENV:
            path = _env_path(name, known)
            config = _apply(config, known, path, value, f"${name}")
    for path, value in (cli or {}).items():
        config = _apply(config, known, path, value, "the command line")
    return config


def _read_toml(file: Path) -> dict[tuple[str, ...], Any]:
    try:
        with file.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: {exc}") from exc
    return dict(_flatten(data, ()))


def _flatten(data: Mapping[str, Any], prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flatten(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _env_path(name: str, known: Mapping[tuple[str, ...], Setting]) -> tuple[str, ...]:
    for path, s in known.items():
        if s.env == name:
            return path
    raise ConfigError(f"${name}: unknown setting (known: {', '.join(s.env for s in known.values())})")


def _apply(
    config: Config, known: Mapping[tuple[str, ...], Setting], path: tuple[str, ...], raw: Any,
    source: str,
) -> Config:
    s = known.get(path)
    if s is None:
        raise ConfigError(f"{source}: unknown setting {'.'.join(path)!r}")
    try:
        value = _coerce(s, raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {s.dotted}: {exc}") from exc
    return typing.cast(Config, _replace(config, path, value))


def _replace(node: Any, path: tuple[str, ...], value: Any) -> Any:
    head, *rest = path
    new = value if not rest else _replace(getattr(node, head), tuple(rest), value)
    return dataclasses.replace(node, **{head: new})


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(s: Setting, raw: Any) -> Any:
    hint = s.hint
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    if optional:
        if raw in ("", None):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if s.path == ("server", "workers") and raw == "auto":
        return 0
    if hint is bool:
        return _to_bool(raw)
    if hint is int:
        return _to_int(raw)
    if hint is float:
        if isinstance(raw, bool):
            raise TypeError(f"expected a number, got {raw!r}")
        return float(raw)
    if hint is str:
        if not isinstance(raw, str):
            raise TypeError(f"expected a string, got {raw!r}")
        return raw
    if typing.get_origin(hint) is tuple and typing.get_origin(typing.get_args(hint)[0]) is dict:
        # A list of tables: [[identity.issuers]] in the file, a JSON array elsewhere.
        items = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(items, list | tuple) or not all(isinstance(i, dict) for i in items):
            raise TypeError("expected a list of tables ([[...]] in the file, a JSON array)")
        return tuple(dict(i) for i in items)
    if typing.get_origin(hint) is tuple:
        items = raw.split(",") if isinstance(raw, str) else raw
        return tuple(str(i).strip() for i in items if str(i).strip())
    raise TypeError(f"unsupported setting type {hint!r}")


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _to_int(raw: Any) -> int:
    if isinstance(raw, (bool, float)):
        raise TypeError(f"expected an integer, got {raw!r}")
    value = int(raw)
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")
    return value


def worker_count(config: Config) -> int:
    """`server.workers`, with 0 (auto) resolved to the cores this process may use."""
    if config.server.workers:
        return config.server.workers
    return len(os.sched_getaffinity(0)) or 1
