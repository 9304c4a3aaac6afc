"""The `pdp` command line: validate, check, test — output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.policy_helpers import write_set

POLICY = """
role viewer {
    allow read on document:**
}
role editor inherits viewer {
    allow delete on document:drafts/** when resource.owner == subject.id as own-drafts
}
deny delete on document:** when resource.locked == true reason "locked" as locked
grant viewer to user:*
grant editor to user:alice

test "drafts" {
    expect allow user:alice delete document:drafts/1 given resource.owner = "alice"
    expect deny user:alice delete document:drafts/1 given resource.owner = "bob"
}
"""


def pdp(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pdp", *args], input=stdin, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_set(tmp_path / "set", {"main.policy": POLICY,
                                        "people.subjects.json": {"user:bob": {"roles": ["editor"]}}})


def test_the_pdp_script_is_installed() -> None:
    script = Path(sys.executable).parent / "pdp"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    for command in ("validate", "check", "test"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["validate", "check", "test"])
def test_each_command_explains_itself(command: str) -> None:
    result = pdp(command, "--help")
    assert result.returncode == 0
    assert "DIR" in result.stdout


def test_validate_prints_a_summary(folder: Path) -> None:
    result = pdp("validate", str(folder))
    assert result.returncode == 0, result.stderr
    assert "2 files, 2 roles, 3 rules, 2 grants, 1 subjects in the directory, 1 tests (2 expectations)" in (
        result.stdout)
    assert "version: " in result.stdout


def test_validate_prints_every_error_and_exits_1(tmp_path: Path) -> None:
    folder = write_set(tmp_path, {"a.policy": "role a inherits b {\n}\n", "c.policy": "allow x\n"})
    result = pdp("validate", str(folder))
    assert result.returncode == 1
    assert f"{folder / 'a.policy'}:1:17: role 'a' inherits undefined role 'b'" not in result.stderr
    assert f"{folder / 'c.policy'}:1:8: unexpected end of line; expected ',' or on" in result.stderr
    assert "1 error; the policy set was not loaded" in result.stderr


def test_validate_reports_semantic_errors_of_all_files(tmp_path: Path) -> None:
    folder = write_set(tmp_path, {"a.policy": "role a inherits b {\n}\n", "c.policy": "grant z to user:*\n"})
    result = pdp("validate", str(folder))
    assert result.returncode == 1
    assert f"{folder / 'a.policy'}:1:17: role 'a' inherits undefined role 'b'" in result.stderr
    assert f"{folder / 'c.policy'}:1:7: grant of undefined role 'z'" in result.stderr
    assert "2 errors" in result.stderr


def test_check_allow(folder: Path) -> None:
    result = pdp("check", str(folder), "--subject", "user:alice", "--action", "delete",
                 "--resource", "document:drafts/1", "--attr", "resource.owner=alice")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ALLOW  user:alice delete document:drafts/1")
    assert "allow by own-drafts (main.policy:6)" in result.stdout
    assert "roles: editor, viewer" in result.stdout


def test_check_deny_with_json_and_typed_attributes(folder: Path) -> None:
    result = pdp("check", str(folder), "--subject", "user:alice", "--action", "delete",
                 "--resource", "document:drafts/1", "--attr", "resource.owner=alice",
                 "--attr", "resource.locked=true", "--json")
    assert result.returncode == 3
    body = json.loads(result.stdout)
    assert body["decision"] is False
    assert body["context"]["reasons"] == [
        {"rule": "locked", "effect": "deny", "text": "locked", "file": "main.policy", "line": 8}]


def test_check_roles_flag(folder: Path) -> None:
    result = pdp("check", str(folder), "--subject", "machine:x", "--action", "read",
                 "--resource", "document:a", "--roles", "viewer")
    assert result.returncode == 0


def test_check_needs_subject_action_resource(folder: Path) -> None:
    result = pdp("check", str(folder), "--subject", "user:a")
    assert result.returncode == 2
    assert "--action, --resource required" in result.stderr


def test_check_rejects_a_bad_subject(folder: Path) -> None:
    result = pdp("check", str(folder), "--subject", "alice", "--action", "read", "--resource", "a:b")
    assert result.returncode == 2
    assert "is not TYPE:ID" in result.stderr


def test_check_requests_answers_every_line_in_order(folder: Path, tmp_path: Path) -> None:
    good = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "delete"},
            "resource": {"type": "document", "id": "drafts/1", "properties": {"owner": "alice"}}}
    lines = [json.dumps(good), "{not json", json.dumps({"subject": {"type": "user"}}),
             json.dumps({**good, "subject": {"type": "user", "id": "carol"}})]
    result = pdp("check", str(folder), "--requests", "-", stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["decision"] for o in out] == [True, False, False, False]
    assert out[0]["context"]["reasons"][0]["rule"] == "own-drafts"
    assert out[0]["context"]["policy_version"]
    assert out[1]["context"]["error"].startswith("line 2: malformed JSON")
    assert out[2]["context"]["error"] == "line 3: subject.id is required and must be a non-empty string"
    assert out[3]["context"]["reasons"][0]["rule"] == "default-deny"
    path = tmp_path / "requests.jsonl"
    path.write_text(lines[0] + "\n")
    assert json.loads(pdp("check", str(folder), "--requests", str(path)).stdout)["decision"] is True


def test_test_command_passes(folder: Path) -> None:
    result = pdp("test", str(folder))
    assert result.returncode == 0
    assert "PASS  drafts" in result.stdout
    assert result.stdout.strip().endswith("1 passed, 0 failed")


def test_test_command_reports_failures(tmp_path: Path) -> None:
    folder = write_set(tmp_path, {"a.policy": POLICY + '\ntest "wrong" {\n'
                                  "    expect allow user:carol delete document:drafts/1\n}\n"})
    result = pdp("test", str(folder))
    assert result.returncode == 1
    assert "FAIL  wrong" in result.stdout
    assert f"{folder / 'a.policy'}:18: expected allow, got deny: user:carol delete document:drafts/1" in (
        result.stdout)
    assert "deny by default-deny" in result.stdout
    assert "missing attributes" not in result.stdout  # only allow rules' missing inputs explain a deny
    assert result.stdout.strip().endswith("1 passed, 1 failed")


def test_commands_on_a_broken_set_exit_1(tmp_path: Path) -> None:
    folder = write_set(tmp_path, {"a.policy": "role {\n"})
    assert pdp("test", str(folder)).returncode == 1
    assert pdp("check", str(folder), "--subject", "a:b", "--action", "x", "--resource", "c:d").returncode == 1


def test_example_policies_pass_their_tests() -> None:
    root = Path(__file__).resolve().parents[1]
    for folder in ("policies", "examples/authzen-todo", "examples/authzen-gateway"):
        result = pdp("test", str(root / folder))
        assert result.returncode == 0, result.stdout + result.stderr


def test_check_writes_audit_records_when_asked(folder: Path, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    result = pdp("check", str(folder), "--subject", "user:alice", "--action", "delete",
                 "--resource", "document:drafts/1", "--attr", "resource.owner=alice",
                 "--json", "--audit-file", str(audit))
    assert result.returncode == 0, result.stderr
    decision_id = json.loads(result.stdout)["context"]["decision_id"]
    (record,) = [json.loads(line) for line in audit.read_text().splitlines()]
    assert record["decision_id"] == decision_id
    assert record["frontend"] == "cli"
    assert record["decision"] == "ALLOW"
    assert record["subject"]["id"] == "alice"


def test_check_requests_audits_every_decided_line(folder: Path, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    good = json.dumps({"subject": {"type": "user", "id": "bob"}, "action": {"name": "read"},
                       "resource": {"type": "document", "id": "x"}})
    result = pdp("check", str(folder), "--requests", "-", "--audit-file", str(audit),
                 stdin=f"{good}\nnot json\n{good}\n")
    assert result.returncode == 0, result.stderr
    ids = [json.loads(line)["context"].get("decision_id") for line in result.stdout.splitlines()]
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["decision_id"] for r in records] == [ids[0], ids[2]]
