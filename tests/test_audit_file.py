"""Audit records written to the JSON-lines file sink, read back field by field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from audit_support import (
    COOKIE,
    EMAIL,
    TOKEN,
    alice_reads,
    audited_service,
    bob_reads,
    expected_record,
    git_policy_dir,
    meta,
    parse_time,
    read_records,
)

from pdp.audit import AuditConfigError, AuditLog, AuditSettings, directory_source
from pdp.audit.record import rfc3339
from pdp.loader import load_policy_dir


def test_every_field_of_allow_and_deny_records(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    commit = git_policy_dir(folder)
    log_file = tmp_path / "audit" / "audit.jsonl"
    audit = AuditLog(AuditSettings(file=str(log_file)))
    service = audited_service(folder, audit)
    version = load_policy_dir(folder).version
    before = datetime.now(UTC)
    allowed = service.check(alice_reads(), meta())
    denied = service.check(bob_reads(), meta(request_id=None))
    audit.close()

    first, second = read_records(log_file)
    for record, outcome, request_id in ((first, allowed, "req-1"), (second, denied, None)):
        at = parse_time(record.pop("time"))
        assert before - timedelta(seconds=1) <= at <= datetime.now(UTC)
        assert record == expected_record(outcome, version, folder, commit, request_id)
    assert first["reasons"] == [{"rule": "viewer-read", "effect": "allow",
                                 "text": "viewers read documents", "file": "a.policy", "line": 2}]
    assert second["reasons"][0]["effect"] == "deny"


def test_no_attributes_and_no_token_by_default(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    git_policy_dir(folder)
    log_file = tmp_path / "audit.jsonl"
    audit = AuditLog(AuditSettings(file=str(log_file)))
    audited_service(folder, audit).check(alice_reads(), meta())
    audit.close()

    text = log_file.read_text()
    for secret in (TOKEN, EMAIL, COOKIE, "finance", "10.0.0.1", "ticket 7"):
        assert secret not in text
    (record,) = read_records(log_file)
    assert "context" not in record and "attributes" not in record["subject"]


@pytest.mark.parametrize("mode", ["remove", "hash"])
def test_attributes_when_configured_without_tokens_or_sensitive_values(
    tmp_path: Path, mode: str
) -> None:
    folder = tmp_path / "policies"
    git_policy_dir(folder)
    log_file = tmp_path / "audit.jsonl"
    settings = AuditSettings(
        file=str(log_file), attributes=True, sensitive_mode=mode, hash_key="k1",
        sensitive=("subject.email", "context.headers.x-trace", "resource.owner"),
    )
    audit = AuditLog(settings)
    audited_service(folder, audit).check(alice_reads(), meta())
    audit.close()

    text = log_file.read_text()
    for secret in (TOKEN, EMAIL, COOKIE, "s3cr3t", "trace-7f3a9c"):
        assert secret not in text
    (record,) = read_records(log_file)
    subject, resource = record["subject"]["attributes"], record["resource"]["attributes"]
    if mode == "remove":
        assert subject == {"department": "finance"}
        assert resource == {"labels": ["a", "b"]}
        assert record["context"]["headers"] == {}
    else:
        assert subject["email"].startswith("sha256:") and len(subject["email"]) == 39
        assert set(subject) == {"email", "department"}
        assert resource["owner"].startswith("sha256:")
        assert record["context"]["headers"]["x-trace"].startswith("sha256:")
    assert record["context"]["ip"] == "10.0.0.1"
    assert record["context"]["note"] == "forwarded [redacted]"
    assert record["action"]["attributes"] == {"reason": "ticket 7"}


def test_hash_is_stable_and_keyed(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    git_policy_dir(folder)

    def email_hash(key: str, name: str) -> str:
        path = tmp_path / name
        audit = AuditLog(AuditSettings(file=str(path), attributes=True, sensitive_mode="hash",
                                       sensitive=("subject.email",), hash_key=key))
        audited_service(folder, audit).check(alice_reads(), meta())
        audit.close()
        return str(read_records(path)[0]["subject"]["attributes"]["email"])

    assert email_hash("k1", "a.jsonl") == email_hash("k1", "b.jsonl")
    assert email_hash("k1", "c.jsonl") != email_hash("k2", "d.jsonl")


def test_sensitive_ids_are_hashed_in_the_record(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    git_policy_dir(folder)
    log_file = tmp_path / "audit.jsonl"
    audit = AuditLog(AuditSettings(file=str(log_file), sensitive=("resource.id",),
                                   sensitive_mode="hash"))
    audited_service(folder, audit).check(alice_reads(), meta())
    audit.close()
    (record,) = read_records(log_file)
    assert record["resource"]["type"] == "document"
    assert record["resource"]["id"].startswith("sha256:")
    assert record["subject"]["id"] == "alice"


def test_sampling_keeps_every_deny_and_one_allow_in_n(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    git_policy_dir(folder)
    log_file = tmp_path / "audit.jsonl"
    audit = AuditLog(AuditSettings(file=str(log_file), sample_allow=4))
    service = audited_service(folder, audit)
    for _ in range(10):
        service.check(alice_reads(), meta())
        service.check(bob_reads(), meta())
    audit.close()

    decisions = [r["decision"] for r in read_records(log_file)]
    assert decisions.count("DENY") == 10
    assert decisions.count("ALLOW") == 3  # the 1st, 5th and 9th
    assert audit.status()["sampled_out"] == {"ALLOW": 7, "DENY": 0}


def test_policy_outside_git_names_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "a.policy").write_text("role viewer {\n    allow read on document:**\n}\n")
    source = directory_source(folder)
    assert source.to_dict() == {"kind": "dir", "path": str(folder.resolve())}


def test_records_are_one_json_object_per_line(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    git_policy_dir(folder)
    log_file = tmp_path / "audit.jsonl"
    audit = AuditLog(AuditSettings(file=str(log_file), batch_size=7))
    service = audited_service(folder, audit)
    outcomes = [service.check(alice_reads(), meta(request_id=f"r{i}")) for i in range(50)]
    audit.close()
    lines = log_file.read_text().splitlines()
    assert len(lines) == 50
    assert [json.loads(line)["decision_id"] for line in lines] == [
        o.decision_id for o in outcomes
    ]


@pytest.mark.parametrize("bad", [
    {"when_full": "wait"}, {"sensitive_mode": "mask"}, {"queue_size": 0}, {"sample_allow": -1},
])
def test_unusable_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(AuditConfigError):
        AuditLog(AuditSettings(**bad))  # type: ignore[arg-type]


def test_sensitive_paths_must_name_a_request_part() -> None:
    with pytest.raises(AuditConfigError, match="must start with one of"):
        AuditLog(AuditSettings(stdout=True, sensitive=("email",)))


def test_time_is_rfc3339_utc_with_microseconds() -> None:
    assert rfc3339(0.5) == "1970-01-01T00:00:00.500000Z"
    assert rfc3339(1_795_000_000.000123) == "2026-11-18T11:06:40.000123Z"
