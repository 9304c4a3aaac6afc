"""A policy with a mistake is rejected whole, with every error a security
engineer needs to fix it: file, line, column, and what is wrong in plain words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pdp.errors import PolicyIssue, PolicySetError
from tests.policy_helpers import load


def errors_of(tmp_path: Path, files: dict[str, Any]) -> list[PolicyIssue]:
    with pytest.raises(PolicySetError) as caught:
        load(tmp_path, files)
    return caught.value.errors


def only_error(tmp_path: Path, files: dict[str, Any]) -> PolicyIssue:
    (issue,) = errors_of(tmp_path, files)
    return issue


SYNTAX = [
    ("allow read document:x\n", 1, 12, "unexpected 'document:x'; expected ',' or on"),
    ("role viewer {\n    allow read on\n}\n", 2, 18, "unexpected end of line; expected a TYPE:ID pattern"),
    ("role 1x {\n}\n", 1, 6, "expected a name"),
    ("allow read on a:b when resource.x ==\n", 1, 37, "unexpected end of line"),
    ('allow read on a:b reason "no end\n', 1, 26, "a string ends on the line it starts"),
    ('test "t" {\n  expect maybe user:a read x:y\n}\n', 2, 10, "expected allow or deny"),
    ("grant viewer user:alice\n", 1, 14, "expected ',' or to"),
    ("role r {\n  allow read on a:b\n", 2, 20, "unexpected end of file"),
]


@pytest.mark.parametrize(("text", "line", "column", "words"), SYNTAX)
def test_syntax_errors_say_where_and_what_was_expected(
    tmp_path: Path, text: str, line: int, column: int, words: str
) -> None:
    issue = only_error(tmp_path, {"bad.policy": text})
    assert (issue.file, issue.line, issue.column) == ("bad.policy", line, column)
    assert words in issue.message
    for raw in ("_NL", "$END", "LBRACE", "PATTERN", "__ANON"):
        assert raw not in issue.message


def test_undefined_inherited_role(tmp_path: Path) -> None:
    issue = only_error(tmp_path, {"r.policy": "role editor inherits viewr {\n}\n"})
    assert (issue.line, issue.column) == (1, 22)
    assert "'editor' inherits undefined role 'viewr'" in issue.message


def test_inheritance_cycle_names_the_whole_cycle(tmp_path: Path) -> None:
    issue = only_error(tmp_path, {"r.policy": "role a inherits b {\n}\nrole b inherits c {\n}\n"
                                              "role c inherits a {\n}\nrole d inherits a {\n}\n"})
    assert issue.message == "inheritance cycle: a -> b -> c -> a"
    assert issue.line == 1


def test_self_inheritance_is_a_cycle(tmp_path: Path) -> None:
    assert only_error(tmp_path, {"r.policy": "role a inherits a {\n}\n"}).message == (
        "inheritance cycle: a -> a")


def test_duplicate_role_points_at_both(tmp_path: Path) -> None:
    issue = only_error(tmp_path, {"a.policy": "role viewer {\n}\n", "b.policy": "\nrole viewer {\n}\n"})
    assert (issue.file, issue.line) == ("b.policy", 2)
    assert "defined twice (first at a.policy:1:6)" in issue.message


def test_duplicate_rule_name(tmp_path: Path) -> None:
    issue = only_error(tmp_path, {"a.policy": "allow read on a:b as r1\nallow read on a:c as r1\n"})
    assert (issue.line, issue.column) == (2, 22)
    assert "rule name 'r1' is used twice" in issue.message


def test_grant_of_undefined_role(tmp_path: Path) -> None:
    issue = only_error(tmp_path, {"a.policy": "role viewer {\n}\ngrant viewer, editor to user:*\n"})
    assert (issue.line, issue.column) == (3, 15)
    assert "grant of undefined role 'editor'" in issue.message


def test_directory_role_that_is_not_defined(tmp_path: Path) -> None:
    issue = only_error(tmp_path, {"a.policy": "role viewer {\n}\n",
                                  "d.subjects.json": {"user:a": {"roles": ["viewer"]},
                                                      "user:b": {"roles": ["ghost"]}}})
    assert issue.file == "d.subjects.json"
    assert issue.line == 7  # where "user:b" is written
    assert "undefined role 'ghost'" in issue.message


@pytest.mark.parametrize(("condition", "words"), [
    ("lower(subject.id) == \"a\"", "unknown function 'lower'"),
    ("startswith(subject.id)", "startswith() takes 2 arguments, got 1"),
    ("cidr(context.ip, context.net)", "cidr(): the second argument must be a \"string\""),
    ('cidr(context.ip, "10.0.0.0/33")', "is not a network"),
    ('matches(resource.id, "a***")', "bad pattern"),
    ("user.name == \"x\"", "unknown attribute 'user.name'"),
    ("subject == \"x\"", "'subject' alone is not a value"),
])
def test_condition_errors(tmp_path: Path, condition: str, words: str) -> None:
    issue = only_error(tmp_path, {"a.policy": f"allow read on a:b when {condition}\n"})
    assert issue.line == 1
    assert issue.column >= 24
    assert words in issue.message


@pytest.mark.parametrize(("pattern", "words"), [
    ("document", "has no ':'"),
    ("doc*:x", "is not a name or '*'"),
    ("document:", "empty ID"),
    ("document:a/***", "ambiguous"),
])
def test_bad_patterns(tmp_path: Path, pattern: str, words: str) -> None:
    issue = only_error(tmp_path, {"a.policy": f"allow read on {pattern}\n"})
    assert (issue.line, issue.column) == (1, 15)
    assert issue.message.startswith("bad pattern")
    assert words in issue.message


def test_bad_grant_subject_pattern(tmp_path: Path) -> None:
    issue = only_error(tmp_path, {"a.policy": "role r {\n}\ngrant r to alice\n"})
    assert (issue.line, issue.column) == (3, 12)
    assert "bad pattern" in issue.message


@pytest.mark.parametrize(("text", "line", "words"), [
    ('{\n  "user:a": {"roles": ["r"],}\n}\n', 2, "malformed JSON"),
    ('["user:a"]', 1, "JSON object of TYPE:ID keys"),
    ('{"user:a": ["r"]}', 1, "must be an object"),
    ('{"user:a": {"roles": "r"}}', 1, "\"roles\" must be a list"),
    ('{"user:a": {"props": {}}}', 1, "unknown field"),
    ('{"alice": {"roles": []}}', 1, "is not TYPE:ID"),
    ('{"user:*": {"roles": []}}', 1, "concrete"),
])
def test_malformed_directory(tmp_path: Path, text: str, line: int, words: str) -> None:
    issue = only_error(tmp_path, {"a.policy": "role r {\n}\n", "d.subjects.json": text})
    assert (issue.file, issue.line) == ("d.subjects.json", line)
    assert words in issue.message


def test_test_blocks_name_concrete_subjects(tmp_path: Path) -> None:
    issue = only_error(tmp_path, {"a.policy": 'test "t" {\n  expect allow user:* read a:b\n}\n'})
    assert issue.line == 2
    assert "concrete" in issue.message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "a.policy"
    path.write_bytes(b"allow read on a:b\nallow read on \xff:x\n")
    with pytest.raises(PolicySetError) as caught:
        load(tmp_path, {})
    (issue,) = caught.value.errors
    assert (issue.line, issue.column, issue.message) == (2, 15, "not UTF-8 text")


def test_every_error_of_the_set_in_one_run(tmp_path: Path) -> None:
    issues = errors_of(tmp_path, {
        "a.policy": "role a inherits ghost {\n}\nallow read on nocolon\n",
        "b.policy": "role a {\n}\nallow read on x:y when nope(1, 2)\n",
        "c.policy": "grant phantom to user:*\n",
        "d.subjects.json": "{oops",
    })
    found = {(i.file, i.line) for i in issues}
    assert found == {("a.policy", 1), ("a.policy", 3), ("b.policy", 1), ("b.policy", 3),
                     ("c.policy", 1), ("d.subjects.json", 1)}


def test_syntax_errors_in_several_files_are_all_reported(tmp_path: Path) -> None:
    issues = errors_of(tmp_path, {"a.policy": "allow read\n", "b.policy": "role {\n}\n",
                                  "c.policy": "allow read on bad\n"})
    assert [(i.file, i.line) for i in issues] == [("a.policy", 1), ("b.policy", 1), ("c.policy", 1)]


def test_a_broken_file_does_not_make_its_roles_look_undefined(tmp_path: Path) -> None:
    issues = errors_of(tmp_path, {"roles.policy": "role viewer {\n allow read on\n}\n",
                                  "grants.policy": "grant viewer to user:*\n"})
    assert [i.file for i in issues] == ["roles.policy"]


def test_errors_render_as_file_line_column_message(tmp_path: Path) -> None:
    with pytest.raises(PolicySetError) as caught:
        load(tmp_path, {"a.policy": "role r inherits q {\n}\n"})
    assert str(caught.value) == "a.policy:1:17: role 'r' inherits undefined role 'q'"


def test_a_subject_listed_twice_in_one_file(tmp_path: Path) -> None:
    text = '{\n  "user:a": {"roles": []},\n  "user:a": {"roles": ["r"]}\n}\n'
    issue = only_error(tmp_path, {"a.policy": "role r {\n}\n", "d.subjects.json": text})
    assert (issue.file, issue.line, issue.column) == ("d.subjects.json", 3, 3)
    assert "user:a is listed twice" in issue.message


def test_a_subject_listed_in_two_files(tmp_path: Path) -> None:
    issue = only_error(tmp_path, {"a.policy": "role r {\n}\n",
                                  "a.subjects.json": {"user:a": {"roles": ["r"]}},
                                  "b.subjects.json": {"user:a": {"roles": []}}})
    assert issue.file == "b.subjects.json"
    assert "listed twice (first at a.subjects.json:2)" in issue.message
