"""`pdp validate`, `pdp check` and `pdp test`: work on a policy folder, no server."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, Any

from pdp.audit import AuditLog, AuditSettings, directory_source
from pdp.authzen import RequestError, decision_to_json, error_to_json, request_from_json
from pdp.errors import PolicySetError
from pdp.loader import load_policy_dir
from pdp.model import Decision, Request
from pdp.patterns import PatternError, parse_concrete
from pdp.policy import CompiledPolicy
from pdp.service import CallMeta, DecisionService, PolicyHolder
from pdp.testing import run_tests

EXIT_ALLOW, EXIT_ERRORS, EXIT_DENY = 0, 1, 3
CLI = CallMeta("cli")


def register(subparsers: Any) -> None:
    validate = subparsers.add_parser(
        "validate",
        help="compile a policy folder and print a summary or every error",
        description="Compile every *.policy and *.subjects.json file under DIR. Prints a summary "
        "(files, roles, rules, grants, directory subjects, tests, version) or every error with "
        "file:line:column. Exit 1 on errors.",
    )
    validate.add_argument("dir", metavar="DIR", help="the policy folder")
    validate.set_defaults(func=run_validate)

    check = subparsers.add_parser(
        "check",
        help="decide one request, or a file of AuthZEN requests, against a policy folder",
        description="Decide one request given by flags, or with --requests one AuthZEN evaluation "
        "request per line (- for stdin) answered one JSON result per line, in order. "
        "With --audit-file or --audit-redis-url, each decision also gets an audit record. "
        "Exit 0 for ALLOW, 3 for DENY (one request), 1 for policy errors.",
    )
    check.add_argument("dir", metavar="DIR", help="the policy folder")
    check.add_argument("--subject", metavar="TYPE:ID", help="the subject, e.g. user:alice")
    check.add_argument("--action", metavar="NAME", help="the action, e.g. read")
    check.add_argument("--resource", metavar="TYPE:ID", help="the resource, e.g. document:a/b")
    check.add_argument(
        "--attr", metavar="PATH=VALUE", action="append", default=[],
        help="a request attribute, e.g. resource.owner=alice or context.amount=1200 "
        "(VALUE is read as JSON when it parses, else as a string); repeatable",
    )
    check.add_argument("--roles", metavar="A,B", default="", help="roles brought with the request")
    check.add_argument("--json", action="store_true", help="print the AuthZEN JSON result")
    check.add_argument(
        "--requests", metavar="FILE", help="one AuthZEN evaluation request per line; - for stdin"
    )
    check.add_argument("--audit-file", metavar="PATH",
                       help="also append an audit record per decision to this JSON-lines file")
    check.add_argument("--audit-redis-url", metavar="URL",
                       help="also add an audit record per decision to the Redis audit stream")
    check.set_defaults(func=run_check)

    test = subparsers.add_parser(
        "test",
        help="run the test blocks of a policy folder",
        description="Run every `test` block. Prints each test's result and, for a failing "
        "expectation, its file, line, expected and actual decision and the reasons; then "
        "'N passed, M failed'. Exit 1 on any failure or policy error.",
    )
    test.add_argument("dir", metavar="DIR", help="the policy folder")
    test.set_defaults(func=run_test)


def _load(folder: str) -> CompiledPolicy | None:
    try:
        return load_policy_dir(folder)
    except PolicySetError as err:
        for issue in err.errors:
            print(f"{Path(folder, issue.file) if issue.line else issue.file}:{issue.line}:"
                  f"{issue.column}: {issue.message}", file=sys.stderr)
        count = len(err.errors)
        print(f"{count} error{'s' if count != 1 else ''}; the policy set was not loaded", file=sys.stderr)
        return None


# ---- validate ----


def run_validate(args: argparse.Namespace) -> int:
    policy = _load(args.dir)
    if policy is None:
        return EXIT_ERRORS
    s = policy.summary()
    print(f"{args.dir}: {s['files']} files, {s['roles']} roles, {s['rules']} rules, {s['grants']} grants, "
          f"{s['subjects']} subjects in the directory, {s['tests']} tests ({s['expectations']} expectations)")
    print(f"version: {s['version']}")
    return 0


# ---- check ----


def run_check(args: argparse.Namespace) -> int:
    if args.requests is None:
        missing = [f"--{n}" for n in ("subject", "action", "resource") if not getattr(args, n)]
        if missing:
            print(f"pdp check: {', '.join(missing)} required (or --requests FILE)", file=sys.stderr)
            return 2
    policy = _load(args.dir)
    if policy is None:
        return EXIT_ERRORS
    audit = _audit_log(policy, args)
    try:
        # The same decision path as the server's (decision ids, audit), without a cache.
        return _check(DecisionService(PolicyHolder(policy), audit=audit), args)
    finally:
        if audit is not None:
            audit.close()  # writes out every queued record


def _audit_log(policy: CompiledPolicy, args: argparse.Namespace) -> AuditLog | None:
    if not (args.audit_file or args.audit_redis_url):
        return None
    # A thread writer: a one-shot command has no Checks to keep the GIL for, and the
    # writer process would add about 0.3 s to start and stop.
    audit = AuditLog(AuditSettings(file=args.audit_file, redis_url=args.audit_redis_url,
                                   writer="thread"))
    audit.policy_loaded(policy.version, directory_source(args.dir))
    return audit


def _check(service: DecisionService, args: argparse.Namespace) -> int:
    if args.requests is not None:
        stream = sys.stdin if args.requests == "-" else open(args.requests, encoding="utf-8")  # noqa: SIM115
        with stream:
            check_lines(service, stream, sys.stdout)
        return 0
    try:
        request = request_from_flags(args)
    except RequestError as err:
        print(f"pdp check: {err}", file=sys.stderr)
        return 2
    outcome = service.check(request, CLI)
    if args.json:
        print(json.dumps(decision_to_json(outcome.decision, decision_id=outcome.decision_id)))
    else:
        print(describe(request, outcome.decision))
    return EXIT_ALLOW if outcome.decision.allowed else EXIT_DENY


def request_from_flags(args: argparse.Namespace) -> Request:
    try:
        stype, sid = parse_concrete(args.subject)
        rtype, rid = parse_concrete(args.resource)
    except PatternError as err:
        raise RequestError(str(err)) from None
    parts: dict[str, dict[str, Any]] = {"subject": {}, "resource": {}, "action": {}, "context": {}}
    for item in args.attr:
        path, eq, raw = item.partition("=")
        root, dot, rest = path.partition(".")
        if not eq or not dot or root not in parts or not rest:
            raise RequestError(f"--attr {item!r}: write ROOT.NAME=VALUE with ROOT one of "
                               "subject, resource, action, context")
        target = parts[root]
        *parents, last = rest.split(".")
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = _attr_value(raw)
    roles = frozenset(r.strip() for r in args.roles.split(",") if r.strip())
    return Request(stype, sid, args.action, rtype, rid, parts["subject"], parts["resource"],
                   parts["action"], parts["context"], roles)


def _attr_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def describe(request: Request, decision: Decision) -> str:
    lines = [f"{decision.effect.value.upper()}  {request.subject_type}:{request.subject_id} "
             f"{request.action} {request.resource_type}:{request.resource_id}"]
    for reason in decision.reasons:
        where = f" ({reason.file}:{reason.line})" if reason.file else ""
        text = f": {reason.text}" if reason.text else ""
        lines.append(f"  {reason.effect.value} by {reason.rule}{where}{text}")
    lines.append(f"  roles: {', '.join(sorted(decision.roles)) or 'none'}")
    lines.append(f"  policy version: {decision.policy_version}")
    return "\n".join(lines)


def check_lines(service: DecisionService, lines: IO[str], out: IO[str]) -> None:
    """One result per input line, in order; a bad line gets a DENY with its error."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            result = error_to_json(f"line {number}: empty line, expected a JSON request")
        else:
            result = _check_line(service, number, line)
        out.write(json.dumps(result) + "\n")
        out.flush()


def _check_line(service: DecisionService, number: int, line: str) -> dict[str, Any]:
    try:
        request = request_from_json(json.loads(line))
    except json.JSONDecodeError as err:
        return error_to_json(f"line {number}: malformed JSON: {err.msg} at column {err.colno}")
    except RequestError as err:
        return error_to_json(f"line {number}: {err}")
    outcome = service.check(request, CLI)
    return decision_to_json(outcome.decision, decision_id=outcome.decision_id)


# ---- test ----


def run_test(args: argparse.Namespace) -> int:
    policy = _load(args.dir)
    if policy is None:
        return EXIT_ERRORS
    results = run_tests(policy)
    for result in results:
        print(f"{'PASS' if result.passed else 'FAIL'}  {result.test.name}  "
              f"({result.test.file}:{result.test.line}, {len(result.cases)} expectations)")
        for case in (c for c in result.cases if not c.passed):
            print(_failure(args.dir, case.case, case.decision))
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return EXIT_ERRORS if failed else 0


def _failure(folder: str, case: Any, decision: Decision) -> str:
    expected = "allow" if case.expect_allow else "deny"
    actual = decision.effect.value
    lines = [f"    {Path(folder, case.file)}:{case.line}: expected {expected}, got {actual}: "
             f"{case.subject} {case.action} {case.resource}"]
    for reason in decision.reasons:
        where = f" ({reason.file}:{reason.line})" if reason.file else ""
        text = f": {reason.text}" if reason.text else ""
        lines.append(f"      {reason.effect.value} by {reason.rule}{where}{text}")
    return "\n".join(lines)
