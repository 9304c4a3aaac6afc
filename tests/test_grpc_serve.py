"""`pdp serve` as an operator runs it: config file, PDP_ variables, bad settings, busy port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from conftest import free_port
from grpc_support import PdpProcess, write_policies

from pdp.client import PdpClient, make_request


def test_config_file_and_environment(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p")
    port = free_port()
    toml = tmp_path / "pdp.toml"
    toml.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\n[limits]\nmax_batch = 3\n'
                    '[log]\nformat = "json"\n')
    env = {"PDP_POLICY_DIR": str(folder), "PDP_LIMITS_MAX_BATCH": "2"}
    with PdpProcess(["--config", str(toml)], env=env) as server:
        assert server.port == port
        server.msg("policy loaded")
        with PdpClient(f"127.0.0.1:{port}") as client:
            assert client.check("user:a", "read", "document:x").allowed
            entry = make_request("user:a", "read", "document:x")
            with pytest.raises(grpc.RpcError) as err:  # the environment's 2 beats the file's 3
                client.batch_check([entry] * 3)
            assert "maximum of 2" in err.value.details()
        assert server.stop() == 0
    assert all(e["level"] in {"info", "debug"} for e in server.logs)


def test_bad_setting_exits_2_naming_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pdp", "serve", "--workers", "lots"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "server.workers" in done.stderr


def test_busy_port_is_an_error_not_a_shared_port(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p")
    args = ["--policies", str(folder), "--listen", "127.0.0.1:0"]
    with PdpProcess(args) as first:
        port = first.port
        busy = ["--policies", str(folder), "--listen", f"127.0.0.1:{port}"]
        with PdpProcess(busy) as second:
            assert second.proc.wait(30) == 1
            assert second.msg("cannot listen")
        assert first.stop() == 0


def test_server_logs_are_json_lines_with_nothing_per_decision(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p")
    with PdpProcess(["--policies", str(folder), "--listen", "127.0.0.1:0"]) as server:
        port = server.port
        server.msg("policy loaded")
        before = len(server.raw)
        with PdpClient(f"127.0.0.1:{port}") as client:
            for _ in range(50):
                client.check("user:a", "read", "document:x")
            client.batch_check([make_request("user:a", "read", "document:x")] * 50)
        assert len(server.raw) == before
        assert server.stop() == 0
    assert len(server.logs) == len(server.raw)  # every line parsed as JSON
    for entry in server.logs:
        assert {"time", "level", "logger", "msg", "pid"} <= entry.keys()
