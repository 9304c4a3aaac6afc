"""`--workers N`: N processes share one port (SO_REUSEPORT); signals reach them all."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from conftest import free_port
from grpc_support import PdpProcess, write_policies

from pdp.client import PdpClient


def test_two_workers_share_the_port_and_stop_together(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p")
    port = free_port()
    args = ["--policies", str(folder), "--listen", f"127.0.0.1:{port}", "--workers", "2",
            "--policy-watch", "false"]
    with PdpProcess(args) as server:
        listening = server.msg("listening", count=2)
        assert {e["port"] for e in listening} == {port}
        worker_pids = {e["pid"] for e in listening}
        assert len(worker_pids) == 2
        server.msg("policy loaded", count=2)

        # Each worker loaded the policy itself, so its load time tells them apart.
        # The kernel spreads new connections across the workers.
        served_by: set[int] = set()
        for _ in range(40):
            with PdpClient(f"127.0.0.1:{port}") as client:
                assert client.check("user:alice", "read", "document:a").allowed
                info = client.policy_info()
                served_by.add(info.loaded_at.seconds * 10**9 + info.loaded_at.nanos)
            if len(served_by) == 2:
                break
        assert len(served_by) == 2

        server.send(signal.SIGHUP)
        reloads = server.wait_log(lambda e: e.get("trigger") == "SIGHUP", count=2)
        assert {e["pid"] for e in reloads} == worker_pids

        assert server.stop(signal.SIGTERM) == 0
    assert {e["pid"] for e in server.logs if e["msg"] == "stopped"} == worker_pids
    assert server.logs[-1]["msg"] == "workers stopped"


def test_workers_need_a_fixed_port(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p")
    args = ["--policies", str(folder), "--listen", "127.0.0.1:0", "--workers", "2"]
    with PdpProcess(args) as server:
        assert server.proc.wait(30) == 1
    assert "fixed port" in server.msg("cannot start workers")[0]["error"]


def test_workers_that_fail_at_startup_stop_the_pool(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p")
    args = ["--policies", str(folder), "--listen", f"127.0.0.1:{free_port()}", "--workers", "2",
            "--server-tls-cert-file", str(tmp_path / "missing.crt"),
            "--server-tls-key-file", str(tmp_path / "missing.key")]
    with PdpProcess(args) as server:
        assert server.proc.wait(60) == 1
    assert server.msg("worker failed at startup; stopping all")
    assert server.msg("cannot listen")


def test_a_reload_rpc_reaches_every_worker(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p")
    port = free_port()
    args = ["--policies", str(folder), "--listen", f"127.0.0.1:{port}", "--workers", "2",
            "--policy-watch", "false"]
    with PdpProcess(args) as server:
        server.msg("policy loaded", count=2)
        (folder / "extra.policy").write_text("allow list on folder:** as folders\n")
        with PdpClient(f"127.0.0.1:{port}") as client:
            reply = client.reload()
        assert reply.ok and reply.changed
        # The worker that answered asked the supervisor to pass SIGHUP to all.
        server.wait_log(lambda e: e.get("trigger") == "SIGHUP", count=2)
        versions: set[str] = set()
        for _ in range(20):
            with PdpClient(f"127.0.0.1:{port}") as client:
                versions.add(client.policy_info().version)
                assert client.check("user:a", "list", "folder:x").allowed
        assert versions == {reply.info.version}
        assert server.stop() == 0


def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p")
    args = ["--policies", str(folder), "--listen", f"127.0.0.1:{free_port()}", "--workers", "2",
            "--policy-watch", "false"]
    with PdpProcess(args) as server:
        worker_pids = {e["pid"] for e in server.msg("policy loaded", count=2)}
        server.proc.kill()  # no chance to stop its workers
        server.proc.wait()
        server.wait_log(lambda e: e["msg"] == "stopped", count=2)
    assert {e["pid"] for e in server.logs if e["msg"] == "supervisor gone; stopping"} == worker_pids
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in worker_pids):
        assert time.monotonic() < deadline, "workers still running"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie left for init to reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
