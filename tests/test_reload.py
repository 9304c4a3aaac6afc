"""Hot reload of a running `pdp serve`: file changes and SIGHUP, under concurrent load.

Every call made while the policy changes must succeed and see one whole
version: the old one or the new one, never an error or a mix.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
from grpc_support import BROKEN_POLICY, PdpProcess, request, write_policies

from pdp.client import PdpClient
from pdp.v1 import decision_pb2 as pb


class Load:
    """Threads calling Check and BatchCheck until stopped, recording every outcome."""

    def __init__(self, port: int, threads: int = 4) -> None:
        self.versions: set[str] = set()
        self.failures: list[str] = []
        self.calls = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(port,)) for _ in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _run(self, port: int) -> None:
        batch = pb.BatchCheckRequest(requests=[request()] * 20)
        with PdpClient(f"127.0.0.1:{port}", timeout=10) as client:
            while not self._stop.is_set():
                try:
                    single = client.check_request(request())
                    replies = client.batch_check(batch.requests)
                    batch_versions = {r.policy_version for r in replies}
                    ok = single.allowed and all(r.allowed for r in replies)
                    with self._lock:
                        self.calls += 2
                        self.versions |= batch_versions | {single.policy_version}
                        if not ok or len(batch_versions) != 1:
                            self.failures.append(f"mixed or denied: {single} {batch_versions}")
                except grpc.RpcError as exc:
                    with self._lock:
                        self.failures.append(f"{exc.code()}: {exc.details()}")


def wait_until(check: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_file_changes_reload_under_load_without_a_failed_call(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p")
    args = ["--policies", str(folder), "--listen", "127.0.0.1:0",
            "--policy-debounce-ms", "100"]
    with PdpProcess(args) as server:
        port = server.port
        server.msg("policy loaded")
        with PdpClient(f"127.0.0.1:{port}") as admin, Load(port) as load:
            v1 = admin.policy_info().version
            wait_until(lambda: load.calls > 20)

            (folder / "extra.policy").write_text('allow list on folder:** as folders\n')
            wait_until(lambda: admin.policy_info().version != v1)
            v2 = admin.policy_info().version

            (folder / "broken.policy").write_text(BROKEN_POLICY)
            wait_until(lambda: admin.policy_info().HasField("last_error"))
            info = admin.policy_info()
            assert info.version == v2
            assert info.last_error.issues[0].file == "broken.policy"

            (folder / "broken.policy").unlink()
            wait_until(lambda: not admin.policy_info().HasField("last_error"))
            calls_before = load.calls
            wait_until(lambda: load.calls > calls_before + 20)
        assert load.failures == []
        assert load.versions <= {v1, v2} and v2 in load.versions
        assert server.stop() == 0
    failed = [e for e in server.logs if e["msg"].startswith("policy failed")]
    assert failed and failed[0]["issues"][0]["file"] == "broken.policy"
    assert failed[0]["level"] == "error"


def test_sighup_reloads(tmp_path: Path) -> None:
    folder = write_policies(tmp_path / "p")
    args = ["--policies", str(folder), "--listen", "127.0.0.1:0", "--policy-watch", "false"]
    with PdpProcess(args) as server:
        port = server.port
        server.msg("policy loaded")
        (folder / "extra.policy").write_text('allow list on folder:** as folders\n')
        with PdpClient(f"127.0.0.1:{port}") as client, Load(port) as load:
            assert not client.check("user:a", "list", "folder:x").allowed
            server.send(signal.SIGHUP)
            server.msg("policy loaded", count=2)
            assert client.check("user:a", "list", "folder:x").allowed
        assert load.failures == []
        assert server.wait_log(lambda e: e.get("trigger") == "SIGHUP")
        assert server.stop() == 0
