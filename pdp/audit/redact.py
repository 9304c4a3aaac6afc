"""What an audit record must never contain: tokens and sensitive attributes.

Attribute values are only written when the configuration asks for them.
Even then:
- keys that carry credentials (`token`, `authorization`, `cookie`, ...) are
  always removed, wherever they appear;
- anything shaped like a JWT or a bearer credential is replaced in every
  string that is written, ids and reason texts included;
- the configured sensitive paths (policy-language paths such as
  `subject.email`, `context.headers.cookie`, `resource.id`) are removed or
  replaced by a keyed hash, so records stay joinable without the value.
Paths and keys match case-insensitively (header names have no case).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pdp.audit.settings import AuditConfigError

ALWAYS_REMOVED = frozenset({
    "token", "access_token", "id_token", "refresh_token", "jwt", "bearer",
    "authorization", "proxy-authorization", "cookie", "set-cookie",
    "password", "passwd", "secret", "client_secret", "api_key", "apikey", "x-api-key",
})
# A JWS/JWE compact form (base64url JSON header "eyJ...") or an HTTP bearer credential.
_CREDENTIAL = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_.-]*|(?i:bearer)\s+[A-Za-z0-9._~+/=-]+"
)
REDACTED = "[redacted]"
ROOTS = ("subject", "action", "resource", "context")


def scrub(text: str) -> str:
    """`text` with anything shaped like a token replaced."""
    return _CREDENTIAL.sub(REDACTED, text) if _CREDENTIAL.search(text) else text


class Redactor:
    def __init__(self, sensitive: Iterable[str] = (), mode: str = "remove",
                 hash_key: str = "") -> None:
        self._paths: set[tuple[str, ...]] = set()
        for path in sensitive:
            parts = tuple(p.lower() for p in path.split("."))
            if len(parts) < 2 or parts[0] not in ROOTS:
                raise AuditConfigError(f"audit.sensitive: {path!r} must start with one of {', '.join(ROOTS)}")
            self._paths.add(parts)
        self._hash_mode = mode == "hash"
        # Whether any subject/resource type or id is configured sensitive (rare).
        self.hides_identity = any(len(p) == 2 and p[1] in ("type", "id") for p in self._paths)
        self._key = hash_key.encode()

    def identity(self, root: str, field: str, value: str) -> str | None:
        """An id or type written in the clear unless configured sensitive (None: removed)."""
        if (root, field) in self._paths:
            return self._hash(value) if self._hash_mode else None
        return scrub(value)

    def attributes(self, root: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON-ready copy of `values` with credentials and sensitive paths taken out."""
        cleaned = self._clean(values, (root,))
        return cleaned if isinstance(cleaned, dict) else {}

    def _clean(self, value: Any, path: tuple[str, ...]) -> Any:
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():
                name = str(key)
                lower = name.lower()
                if lower in ALWAYS_REMOVED:
                    continue
                child = (*path, lower)
                if child in self._paths:
                    if self._hash_mode:
                        out[name] = self._hash(item)
                    continue
                out[name] = self._clean(item, child)
            return out
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(item, path) for item in value]
        if isinstance(value, str):
            return scrub(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        return scrub(str(value))

    def _hash(self, value: Any) -> str:
        data = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        digest = hmac.new(self._key, data.encode(), hashlib.sha256).hexdigest()
        return f"sha256:{digest[:32]}"
