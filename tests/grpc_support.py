"""Real PDP servers for the gRPC tests: in-process (`running_server`) or a
`pdp serve` subprocess (`PdpProcess`), always on a free 127.0.0.1 port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from pdp import config as settings
from pdp.server import Server, build_server
from pdp.v1 import decision_pb2, decision_pb2_grpc

POLICY = """\
role reader {
    allow read, list on document:** reason "readers read documents" as reader-read
}

role writer inherits reader {
    allow write on document:drafts/** when resource.owner == subject.id
        reason "writers edit their own drafts"
        as writer-own-drafts
}

role approver {
    allow approve on invoice:** when resource.amount <= 1000
        reason "approvers approve up to 1000"
        as approve-small
}

grant reader to user:*

deny delete on document:locked/** reason "locked documents are never deleted" as locked
"""

SERVICES_POLICY = """\
allow call on grpc:test.Echo/Ping reason "anyone may ping" as ping-anyone
role echo-admin {
    allow call on grpc:test.Echo/** reason "echo admins call everything" as echo-admin-all
}
grant echo-admin to service:admin
"""

BROKEN_POLICY = "role broken {\n    allow read on\n}\n"


def write_policies(folder: Path, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {"main.policy": POLICY}).items():
        (folder / name).write_text(text)
    return folder


def make_config(policy_dir: Path, **sections: dict[str, Any]) -> settings.Config:
    """Defaults for tests: any free port, no file watching unless asked."""
    cli: dict[tuple[str, ...], str] = {
        ("server", "listen"): "127.0.0.1:0",
        ("policy", "dir"): str(policy_dir),
        ("policy", "watch"): "false",
        ("server", "grace_seconds"): "5",
    }
    for section, values in sections.items():
        for key, value in values.items():
            cli[(*section.split("."), key)] = str(value)
    return settings.load(cli=cli)


@contextlib.contextmanager
def running_server(
    config: settings.Config,
    identity: Any = None,
    extra_services: dict[str, dict[str, grpc.RpcMethodHandler]] | None = None,
) -> Iterator[Server]:
    """The real server in this process, started and loaded."""
    server = build_server(config, identity=identity, extra_services=extra_services)
    server.grpc_server.start()
    server.reloader.reload("test")
    try:
        yield server
    finally:
        server.stop(1.0)


def stub(port: int) -> tuple[grpc.Channel, Any]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, decision_pb2_grpc.DecisionServiceStub(channel)


def request(
    subject: str = "user:alice", action: str = "read", resource: str = "document:a",
    **props: Any,
) -> decision_pb2.CheckRequest:
    from pdp.client import make_request

    return make_request(subject, action, resource, **props)


class PdpProcess:
    """`pdp serve` in a subprocess; its JSON log lines are collected as they come."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.logs: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self._drained = False
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pdp", "serve", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})}, cwd=cwd,
        )
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.raw.append(line)
                with contextlib.suppress(ValueError):
                    self.logs.append(json.loads(line))
                self._cond.notify_all()
        with self._cond:
            self._drained = True
            self._cond.notify_all()

    def wait_log(self, match: Callable[[dict[str, Any]], bool], count: int = 1,
                 timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.logs if match(e)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self._drained:
                    raise AssertionError(f"log entry not seen; stderr so far:\n{''.join(self.raw)}")
                self._cond.wait(min(left, 0.2))

    def msg(self, text: str, count: int = 1, timeout: float = 20) -> list[dict[str, Any]]:
        return self.wait_log(lambda e: e.get("msg") == text, count, timeout)

    @property
    def port(self) -> int:
        return int(self.msg("listening")[0]["port"])

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def __enter__(self) -> PdpProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.proc.poll() is None:  # a test that ended early: stop it (and its workers)
            with contextlib.suppress(subprocess.TimeoutExpired):  # killed by then
                self.stop(timeout=10)
