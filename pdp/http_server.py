"""The AuthZEN HTTP API served by uvicorn in a thread of the gRPC server's process.

The thread runs its own event loop, so the decision path (policy holder,
cache, audit) is the very one the gRPC servicers use. With `--workers N`
every worker binds the same port with SO_REUSEPORT, as gRPC does, and the
kernel spreads connections across them. With the server's TLS files set,
HTTPS is served (mTLS when a client CA is set); the files are read at start,
not followed on rotation as the gRPC credentials are. Under mTLS the client
certificate's identity (SPIFFE ID, else CN) is the caller in the audit record.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pdp.authzen_http import CALLER_STATE, create_app
from pdp.config import Config
from pdp.identity.callers import identity_from_certificate
from pdp.identity.resolver import IdentityResolver
from pdp.service import DecisionService

log = logging.getLogger("pdp.http")

START_TIMEOUT_S = 10.0


def bind(listen: str, reuse_port: bool) -> socket.socket:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only then (else Nagle: +40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, int(port)))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class MtlsCallerProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the verified client certificate's identity
    in each request's state (uvicorn does not pass the peer certificate to the app)."""

    _caller: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            self._caller = identity_from_certificate(ssl.DER_cert_to_PEM_cert(der).encode())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._caller is not None:
            self.scope["state"][CALLER_STATE] = self._caller


class HttpServer:
    """One uvicorn server on a bound socket, in a daemon thread."""

    def __init__(
        self, config: Config, service: DecisionService, identity: IdentityResolver | None = None,
        reuse_port: bool = False,
    ) -> None:
        listen = config.http.listen
        if listen is None:
            raise ValueError("http.listen is not set")
        self.socket = bind(listen, reuse_port)
        self.port: int = self.socket.getsockname()[1]
        tls = config.server.tls if config.http.tls and config.server.tls.cert_file else None
        mtls = tls is not None and tls.client_ca_file is not None
        self._uvicorn = uvicorn.Server(uvicorn.Config(
            create_app(service, config, identity),
            log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=max(1, int(config.server.grace_seconds)),
            ssl_certfile=tls.cert_file if tls else None,
            ssl_keyfile=tls.key_file if tls else None,
            ssl_ca_certs=tls.client_ca_file if tls else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if mtls else ssl.CERT_NONE,
            http=MtlsCallerProtocol if mtls else "auto",
        ))
        self._thread = threading.Thread(target=self._serve, name="pdp-http", daemon=True)

    @property
    def scheme(self) -> str:
        return "https" if self._uvicorn.config.is_ssl else "http"

    def _serve(self) -> None:
        try:
            self._uvicorn.run(sockets=[self.socket])
        except BaseException:
            log.exception("the HTTP server stopped on an error")

    def start(self) -> None:
        """Start serving; returns once the server accepts requests."""
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop accepting, finish the requests in flight (up to the grace period)."""
        self._uvicorn.should_exit = True
        self._thread.join(self._uvicorn.config.timeout_graceful_shutdown or 10)
        self.socket.close()
