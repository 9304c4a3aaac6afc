"""AuthZEN interop conformance at the engine level: every evaluation and
every batch of the shared Todo and API-gateway decision files, asked of
decide() on the example policy sets (and of `pdp check --requests`), gives
exactly the expected decision.

The data lives outside the repo, in the shared `authzen` folder (CI has it):
`$PDP_SHARED_DIR/authzen` (or `$PDP_SHARED_DIR` itself) when the variable is
set, else `../shared/authzen` beside the repository. A missing file fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pdp.authzen import request_from_json
from pdp.engine import decide
from pdp.loader import load_policy_dir
from pdp.model import Request

ROOT = Path(__file__).resolve().parents[1]
TODO_POLICIES = ROOT / "examples" / "authzen-todo"
GATEWAY_POLICIES = ROOT / "examples" / "authzen-gateway"
TODO_FILE = "todo-decisions-1_0.json"
GATEWAY_FILE = "gateway-decisions.json"
BATCH_KEYS = ("subject", "action", "resource", "context")


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


def to_request(body: Mapping[str, Any]) -> Request:
    """The JSON front ends' own mapping, so the tests take the same path they do."""
    return request_from_json(dict(body))


def expand_batch(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each entry of `evaluations` overrides the top-level defaults key by key."""
    semantic = body.get("options", {}).get("evaluations_semantic", "execute_all")
    assert semantic == "execute_all", f"only execute_all batches are in the data, got {semantic}"
    defaults = {key: body[key] for key in BATCH_KEYS if key in body}
    return [{**defaults, **entry} for entry in body["evaluations"]]


def describe(body: Mapping[str, Any]) -> str:
    return (f"{body['subject']['type']}:{body['subject']['id'][:10]} {body['action']['name']} "
            f"{body['resource']['type']}:{body['resource']['id']}")


TODO = load_cases(TODO_FILE)
GATEWAY = load_cases(GATEWAY_FILE)


@pytest.fixture(scope="module")
def todo_policy() -> Any:
    return load_policy_dir(TODO_POLICIES)


@pytest.fixture(scope="module")
def gateway_policy() -> Any:
    return load_policy_dir(GATEWAY_POLICIES)


def test_the_data_is_complete() -> None:
    assert len(TODO["evaluation"]) == 40
    assert len(TODO["evaluations"]) == 3
    assert len(GATEWAY["evaluation"]) == 25


@pytest.mark.parametrize("case", TODO["evaluation"], ids=lambda c: describe(c["request"]))
def test_todo_evaluation(todo_policy: Any, case: dict[str, Any]) -> None:
    decision = decide(todo_policy, to_request(case["request"]))
    assert decision.allowed is case["expected"], decision.reasons


@pytest.mark.parametrize("case", TODO["evaluations"],
                         ids=lambda c: f"batch-{c['request']['subject']['id'][:10]}")
def test_todo_batch(todo_policy: Any, case: dict[str, Any]) -> None:
    bodies = expand_batch(case["request"])
    got = [{"decision": decide(todo_policy, to_request(b)).allowed} for b in bodies]
    assert got == case["expected"]


@pytest.mark.parametrize("case", GATEWAY["evaluation"], ids=lambda c: describe(c["request"]))
def test_gateway_evaluation(gateway_policy: Any, case: dict[str, Any]) -> None:
    decision = decide(gateway_policy, to_request(case["request"]))
    assert decision.allowed is case["expected"], decision.reasons


def test_batch_entries_override_the_defaults() -> None:
    body = {
        "subject": {"type": "user", "id": "a"},
        "action": {"name": "can_read_todos"},
        "resource": {"type": "todo", "id": "1"},
        "evaluations": [{}, {"action": {"name": "can_delete_todo"}},
                        {"resource": {"type": "todo", "id": "2", "properties": {"ownerID": "x"}}}],
    }
    first, second, third = (to_request(b) for b in expand_batch(body))
    assert (first.action, first.resource_id) == ("can_read_todos", "1")
    assert (second.action, second.resource_id) == ("can_delete_todo", "1")
    assert (third.action, third.resource_id, dict(third.resource_properties)) == (
        "can_read_todos", "2", {"ownerID": "x"})


def all_cases(data: Mapping[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    """Every single evaluation, then every batch entry, with its expected decision."""
    cases = [(c["request"], c["expected"]) for c in data["evaluation"]]
    for batch in data.get("evaluations", []):
        bodies = expand_batch(batch["request"])
        cases += [(b, e["decision"]) for b, e in zip(bodies, batch["expected"], strict=True)]
    return cases


@pytest.mark.parametrize(("folder", "data"), [(TODO_POLICIES, TODO), (GATEWAY_POLICIES, GATEWAY)],
                         ids=["todo", "gateway"])
def test_cli_check_requests_gives_every_expected_decision(
    folder: Path, data: Mapping[str, Any]
) -> None:
    cases = all_cases(data)
    lines = "".join(json.dumps(body) + "\n" for body, _ in cases)
    result = subprocess.run(
        [sys.executable, "-m", "pdp", "check", str(folder), "--requests", "-"],
        input=lines, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(answers) == len(cases), result.stderr
    got = [answer["decision"] for answer in answers]
    assert got == [expected for _, expected in cases]
