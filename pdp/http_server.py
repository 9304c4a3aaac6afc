"""The AuthZEN HTTP API served by uvicorn in a thread of the gRPC server's process.

The thread runs its own event loop, so the decision path (policy holder,
cache, audit) is the very one the gRPC servicers use. With `--workers N`
every worker binds the same port with SO_REUSEPORT, as gRPC does, and the
kernel spreads connections across them. With the server's TLS files set,
HTTPS is served (mTLS when a client CA is set) and follows the files as they
rotate, as the gRPC credentials do: a task on the server's event loop looks at
them about once a second and loads a changed, valid pair into the serving
SSLContext (new handshakes get it, open connections keep theirs). A client CA
bundle that changed is added to the trusted CAs: OpenSSL only adds, so a CA
removed from the file stays trusted over HTTPS until restart. Under mTLS the
client certificate's identity (SPIFFE ID, else CN) is the caller in the audit
record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pdp.authzen_http import CALLER_STATE, create_app
from pdp.config import Config
from pdp.identity.callers import identity_from_certificate
from pdp.identity.resolver import IdentityResolver
from pdp.identity.serving import tls_files
from pdp.identity.tls import TlsFiles, TlsMaterial, TlsWatch
from pdp.service import DecisionService

log = logging.getLogger("pdp.http")

START_TIMEOUT_S = 10.0
TLS_CHECK_INTERVAL_S = 1.0


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


class TlsReloader:
    """Loads rotated TLS files into the serving SSLContext. It runs on the server's
    event loop, the one doing the handshakes, so the context never changes under one."""

    def __init__(self, files: TlsFiles) -> None:
        self._watch = TlsWatch(files)

    async def run(self, context: ssl.SSLContext) -> None:
        while True:
            await asyncio.sleep(TLS_CHECK_INTERVAL_S)
            try:
                self.reload(context)
            except Exception:  # keep watching: the next rotation may load
                log.exception("TLS reload failed")

    def reload(self, context: ssl.SSLContext) -> None:
        old = self._watch.material
        new = self._watch.changed()
        if new is None:
            return
        pair = (new.cert, new.key) != (old.cert, old.key)
        ca = new.client_ca is not None and new.client_ca != old.client_ca
        if not (pair or ca):
            return
        try:
            if pair:
                _load_pair(context, new)
            if ca and new.client_ca is not None:
                context.load_verify_locations(cadata=new.client_ca.decode("latin-1"))
        except OSError as exc:  # ssl.SSLError included; OpenSSL may refuse what passed the checks
            log.error("TLS files not loaded for HTTPS, keeping the previous pair: %s", exc)
            _load_pair(context, old)
            return
        log.info("TLS certificate reloaded from %s", self._watch.files.cert)


def _load_pair(context: ssl.SSLContext, material: TlsMaterial) -> None:
    """load_cert_chain reads paths only: hand it the very bytes that were checked
    (not the files again, which may be mid-rotation), from a private directory."""
    with tempfile.TemporaryDirectory(prefix="pdp-tls-") as folder:  # mode 0700
        cert, key = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert.write_bytes(material.cert)
        key.write_bytes(material.key)
        context.load_cert_chain(cert, key)


class _Uvicorn(uvicorn.Server):
    """uvicorn, plus the TLS reload task on its event loop while it serves."""

    def __init__(self, config: uvicorn.Config, tls: TlsReloader | None) -> None:
        super().__init__(config)
        self._tls = tls

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        if self._tls is None:
            return await super().serve(sockets)
        if not self.config.loaded:
            self.config.load()  # builds the SSLContext the reload task loads into
        assert self.config.ssl is not None
        task = asyncio.create_task(self._tls.run(self.config.ssl), name="pdp-http-tls")
        try:
            await super().serve(sockets)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class HttpServer:
    """One uvicorn server on a bound socket, in a daemon thread."""

    def __init__(
        self, config: Config, service: DecisionService, identity: IdentityResolver | None = None,
        reuse_port: bool = False,
    ) -> None:
        listen = config.http.listen
        if listen is None:
            raise ValueError("http.listen is not set")
        tls = tls_files(config.server.tls) if config.http.tls else None
        mtls = tls is not None and tls.mtls
        reloader = TlsReloader(tls) if tls else None  # TlsConfigError before binding
        self.socket = bind(listen, reuse_port)
        self.port: int = self.socket.getsockname()[1]
        self._uvicorn = _Uvicorn(uvicorn.Config(
            create_app(service, config, identity),
            log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=max(1, int(config.server.grace_seconds)),
            ssl_certfile=tls.cert if tls else None,
            ssl_keyfile=tls.key if tls else None,
            ssl_ca_certs=str(tls.client_ca) if tls and tls.client_ca else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if mtls else ssl.CERT_NONE,
            http=MtlsCallerProtocol if mtls else "auto",
        ), reloader)
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
