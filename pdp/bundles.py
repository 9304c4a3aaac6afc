"""Policy bundles in Redis: the source files of a policy set, stored under their version.

A bundle is the list of `SourceFile`s plus who published it and when. Its
version is `version_of(files)`, so any reader can verify a bundle by hashing
it again: a corrupt or tampered bundle is refused, never compiled.

Keys (one hash tag, so every operation, such as the make-current script,
stays on one cluster slot):

    pdp:bundles:{bundles}:bundle:<version>  JSON: format, version, published_by, published_at, files
    pdp:bundles:{bundles}:meta              hash version -> JSON of the same without the files
    pdp:bundles:{bundles}:current           the version every replica should serve
    pdp:bundles:{bundles}:announce          pub/sub channel; each message is a version made current
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.commands.core import Script

from pdp.loader import SourceFile, version_of
from pdp.redisio import key

CURRENT_KEY = key("bundles", "bundles", "current")
META_KEY = key("bundles", "bundles", "meta")
CHANNEL = key("bundles", "bundles", "announce")
FORMAT = 1

# Make a stored version current and announce it, atomically; refuses an unknown version.
_MAKE_CURRENT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1
"""


class BundleError(Exception):
    """A bundle that cannot be used: missing, malformed, or not matching its version."""


@dataclass(frozen=True, slots=True)
class BundleInfo:
    version: str
    published_by: str
    published_at: float
    files: int


@dataclass(frozen=True, slots=True)
class Bundle:
    info: BundleInfo
    sources: tuple[SourceFile, ...]


def bundle_key(version: str) -> str:
    return key("bundles", "bundles", "bundle", version)


def default_publisher() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def make_bundle(sources: Sequence[SourceFile], published_by: str, at: float | None = None) -> Bundle:
    info = BundleInfo(version_of(sources), published_by, time.time() if at is None else at, len(sources))
    return Bundle(info, tuple(sources))


# ---- encoding ----


def _info_dict(info: BundleInfo) -> dict[str, Any]:
    return {"format": FORMAT, "version": info.version, "published_by": info.published_by,
            "published_at": info.published_at, "files": info.files}


def encode(bundle: Bundle) -> bytes:
    files = [{"path": s.path, "content": base64.b64encode(s.content).decode()} for s in bundle.sources]
    return json.dumps({**_info_dict(bundle.info), "files": files}, separators=(",", ":")).encode()


def decode(raw: bytes, version: str) -> Bundle:
    """The bundle stored under `version`, verified: its files must hash to that version."""
    try:
        data = json.loads(raw)
        sources = tuple(
            SourceFile(str(f["path"]), base64.b64decode(f["content"], validate=True))
            for f in data["files"]
        )
        info = BundleInfo(str(data["version"]), str(data.get("published_by", "")),
                          float(data.get("published_at", 0.0)), len(sources))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise BundleError(f"bundle {version} is malformed: {type(exc).__name__}: {exc}") from None
    actual = version_of(sources)
    if info.version != version or actual != version:
        raise BundleError(
            f"bundle {version} does not match its version: its files hash to {actual}"
        )
    return Bundle(info, sources)


def _decode_info(raw: bytes) -> BundleInfo:
    data = json.loads(raw)
    return BundleInfo(str(data["version"]), str(data.get("published_by", "")),
                      float(data.get("published_at", 0.0)), int(data.get("files", 0)))


# ---- the store ----


class BundleStore:
    """Bundles in one Redis (or Redis Cluster): `client` is a redis-py client."""

    def __init__(self, client: Any) -> None:
        self.redis = client
        self._make_current = Script(client, _MAKE_CURRENT.encode())

    def store(self, bundle: Bundle) -> None:
        """Store a bundle under its version (idempotent: same version, same files)."""
        version = bundle.info.version
        self.redis.set(bundle_key(version), encode(bundle))
        if not self.redis.hexists(META_KEY, version):  # the first publisher stays on record
            self.redis.hset(META_KEY, version, json.dumps(_info_dict(bundle.info)))

    def make_current(self, version: str) -> None:
        """Mark a stored version current and announce it; BundleError if it is not stored."""
        if not self._make_current(keys=[bundle_key(version), CURRENT_KEY], args=[version, CHANNEL]):
            raise BundleError(f"version {version} is not stored (see `pdp bundles list`)")

    def publish(self, bundle: Bundle) -> None:
        self.store(bundle)
        self.make_current(bundle.info.version)

    def current_version(self) -> str | None:
        raw = self.redis.get(CURRENT_KEY)
        return raw.decode() if isinstance(raw, bytes) else raw

    def load(self, version: str) -> Bundle:
        """A stored bundle, verified against its version; BundleError if missing or bad."""
        raw = self.redis.get(bundle_key(version))
        if raw is None:
            raise BundleError(f"bundle {version} is not stored")
        return decode(raw, version)

    def resolve(self, prefix: str) -> str:
        """The one stored version starting with `prefix` (so a short hash works)."""
        if len(prefix) == 64:
            return prefix  # a whole version: no need to search
        matches = [i.version for i in self.list() if i.version.startswith(prefix)]
        if len(matches) != 1:
            found = "no stored version" if not matches else f"{len(matches)} stored versions"
            raise BundleError(f"{found} starts with {prefix!r}")
        return matches[0]

    def list(self) -> list[BundleInfo]:
        """Every stored bundle, oldest first."""
        infos = [_decode_info(raw) for raw in self.redis.hgetall(META_KEY).values()]
        return sorted(infos, key=lambda i: (i.published_at, i.version))
