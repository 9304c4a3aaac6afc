"""The server's audit and metrics wiring: policy sources, status, hook and shutdown."""

from __future__ import annotations

from pathlib import Path

import pytest
from audit_support import alice_reads, git_policy_dir, meta, read_records

from pdp import metrics
from pdp.audit import AuditSettings
from pdp.loader import load_policy_dir
from pdp.observability import Observability, parse_listen
from pdp.service import DecisionService, PolicyHolder


def test_policy_source_is_the_git_commit_or_the_bundle_publisher(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    commit = git_policy_dir(folder)
    policy = load_policy_dir(folder)
    observed = Observability()
    assert observed.source_of(policy).to_dict() == {
        "kind": "git", "path": str(folder.resolve()), "commit": commit, "dirty": False}
    (folder / "a.policy").write_text((folder / "a.policy").read_text() + "# edited\n")
    assert observed.source_of(policy).dirty is True

    observed.publisher = lambda version: ("ops@ci", 1_795_000_000.0)
    assert observed.source_of(policy).to_dict() == {
        "kind": "bundle", "published_by": "ops@ci", "published_at": "2026-11-18T11:06:40+00:00"}


def test_records_name_the_source_and_close_drains(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    commit = git_policy_dir(folder)
    log_file = tmp_path / "audit.jsonl"
    observed = Observability.start(AuditSettings(file=str(log_file)), "127.0.0.1:0")
    assert observed.metrics_server is not None and observed.metrics_server.port > 0
    assert isinstance(observed.recorder, metrics.DecisionMetrics)
    policy = load_policy_dir(folder)
    observed.policy_loaded(policy)
    service = DecisionService(PolicyHolder(policy), audit=observed.recorder)
    service.check(alice_reads(), meta())
    status = observed.status()
    assert status["enabled"] is True and status["healthy"] is True
    observed.close()
    (record,) = read_records(log_file)
    assert record["policy"]["source"]["commit"] == commit


def test_nothing_is_started_unless_asked() -> None:
    observed = Observability.start(AuditSettings(), None)
    assert observed.audit is None and observed.metrics_server is None
    assert observed.recorder is None
    assert observed.status() == {"enabled": False, "healthy": True}
    observed.close()


@pytest.mark.parametrize(("text", "parsed"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)), ("[::1]:9464", ("::1", 9464)),
])
def test_parse_listen(text: str, parsed: tuple[str, int]) -> None:
    assert parse_listen(text) == parsed


@pytest.mark.parametrize("bad", ["9464", "host:", ":9464", "host:port"])
def test_parse_listen_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen(bad)


def test_a_reload_that_keeps_the_version_asks_nobody(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    git_policy_dir(folder)
    policy = load_policy_dir(folder)
    asked: list[str] = []

    def publisher(version: str) -> tuple[str, float] | None:
        asked.append(version)
        return None

    observed = Observability(publisher=publisher)
    observed.policy_loaded(policy)
    observed.policy_loaded(policy)  # e.g. the bundle follower's periodic resync
    assert asked == [policy.version]
