"""Who is calling the PDP (from the caller's TLS certificate), and who may administer it.

The caller's identity is the SPIFFE ID in its certificate's URI SAN, else the
certificate's CN. Admin RPCs (reload, policy info, anything that changes
state) are allowed only to configured caller identities when clients present
certificates (mTLS); without client certificates there is no identity to
trust, so admin RPCs are allowed only from loopback peers.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

SPIFFE_SCHEME = "spiffe://"


@functools.lru_cache(maxsize=1024)
def identity_from_certificate(pem: bytes) -> str | None:
    """SPIFFE ID from the URI SAN, else the subject CN, else None."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
            if uri.startswith(SPIFFE_SCHEME):
                return uri
    except x509.ExtensionNotFound:
        pass
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return value.decode() if isinstance(value, bytes) else value


def caller_identity(context: grpc.ServicerContext) -> str | None:
    """The verified identity of a TLS client, or None (no TLS, or no client certificate)."""
    auth = context.auth_context()
    for pem in auth.get("x509_pem_cert", ()):
        found = identity_from_certificate(bytes(pem))
        if found:
            return found
    for name in auth.get("x509_common_name", ()):
        return bytes(name).decode(errors="replace")
    return None


def is_loopback_peer(peer: str) -> bool:
    """`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000` and unix sockets are local."""
    kind, _, rest = peer.partition(":")
    if kind in ("unix", "unix-abstract"):
        return True
    if kind == "ipv4":
        host = rest.rsplit(":", 1)[0]
    elif kind == "ipv6":
        host = rest.rsplit("]", 1)[0].lstrip("[")
    else:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class AdminAccess:
    """Who may call admin RPCs: listed caller identities under mTLS, else loopback only."""

    callers: frozenset[str]
    mtls: bool

    def allows(self, context: grpc.ServicerContext) -> bool:
        if self.mtls:
            caller = caller_identity(context)
            return caller is not None and caller in self.callers
        return is_loopback_peer(context.peer())


class AdminGuard(grpc.ServerInterceptor):  # type: ignore[misc]
    """Answers PERMISSION_DENIED to admin RPCs from callers `access` does not allow."""

    def __init__(self, access: AdminAccess, methods: Collection[str]) -> None:
        self._access = access
        self._methods = frozenset(methods)  # full names: "/pdp.v1.AdminService/Reload"

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method not in self._methods or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        access = self._access

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            if not access.allows(context):
                context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{method} is an admin RPC; this caller is not an admin",
                )
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
