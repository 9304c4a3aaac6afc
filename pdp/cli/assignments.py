"""`pdp grant`, `pdp revoke` and `pdp subjects ...`: dynamic role assignments in Redis."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import redis

from pdp import redisio
from pdp.assignments import Assignment, AssignmentError, AssignmentStore, parse_subject
from pdp.bundles import BundleError, BundleStore
from pdp.cli.publish import CLI_TIMEOUT_S, add_redis_url
from pdp.errors import PolicySetError
from pdp.loader import compile_sources, load_policy_dir
from pdp.policy import CompiledPolicy


class CommandError(Exception):
    """Printed as `pdp COMMAND: message`, exit 1."""


def register(subparsers: Any) -> None:
    grant = subparsers.add_parser(
        "grant", help="assign a role to a subject, on every replica within a second",
        description="Assign ROLE to SUBJECT (TYPE:ID) in Redis. The role must be defined by the "
        "current policy: the current published bundle, or --policies DIR.",
    )
    grant.add_argument("role", metavar="ROLE")
    grant.add_argument("subject", metavar="SUBJECT", help="TYPE:ID, e.g. user:alice")
    grant.add_argument("--policies", metavar="DIR",
                       help="check the role against this folder instead of the current bundle")
    add_redis_url(grant)
    grant.set_defaults(func=run_grant)

    revoke = subparsers.add_parser(
        "revoke", help="remove a role assigned with pdp grant",
        description="Remove ROLE from SUBJECT's assigned roles (roles from policy files stay).",
    )
    revoke.add_argument("role", metavar="ROLE")
    revoke.add_argument("subject", metavar="SUBJECT", help="TYPE:ID")
    add_redis_url(revoke)
    revoke.set_defaults(func=run_revoke)

    subjects = subparsers.add_parser(
        "subjects", help="list and edit the dynamic subject directory in Redis",
        description="Subjects with assigned roles or directory properties in Redis.",
    )
    actions = subjects.add_subparsers(dest="action", metavar="ACTION", required=True)
    _action(actions, "list", "every subject with its roles and properties", run_list)
    _action(actions, "show", "one subject's roles and properties", run_show, "subject")
    _action(actions, "set-property", "set a property (VALUE is read as JSON when it parses)",
            run_set_property, "subject", "name", "value")
    _action(actions, "unset-property", "remove a property", run_unset_property, "subject", "name")
    _action(actions, "delete", "remove every assigned role and property of a subject",
            run_delete, "subject")


def _action(actions: Any, name: str, help: str, func: Callable[[argparse.Namespace], int],
            *positionals: str) -> None:
    parser = actions.add_parser(name, help=help, description=help)
    for positional in positionals:
        parser.add_argument(positional, metavar=positional.upper())
    add_redis_url(parser)
    parser.set_defaults(func=lambda args: _run(f"subjects {name}", func, args))


def _run(command: str, func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return func(args)
    except (CommandError, AssignmentError, BundleError, redisio.RedisUrlError) as exc:
        print(f"pdp {command}: {exc}", file=sys.stderr)
    except redis.RedisError as exc:
        print(f"pdp {command}: cannot reach Redis: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1


def _client(args: argparse.Namespace) -> Any:
    return redisio.connect(args.redis_url, timeout_s=CLI_TIMEOUT_S)


def describe(subject: str, assignment: Assignment) -> str:
    roles = ", ".join(sorted(assignment.roles)) or "-"
    return f"{subject}  roles: {roles}  properties: {json.dumps(dict(assignment.properties), sort_keys=True)}"


# ---- grant / revoke ----


def current_policy(client: Any, policies: str | None) -> CompiledPolicy:
    """The policy grants are checked against: --policies DIR, else the current bundle."""
    try:
        if policies is not None:
            return load_policy_dir(policies)
        bundles = BundleStore(client)
        version = bundles.current_version()
        if version is None:
            raise CommandError("no policy bundle is current in Redis (pdp publish), "
                               "so no role can be checked; give --policies DIR")
        return compile_sources(list(bundles.load(version).sources), source_dir=f"bundle {version}")
    except PolicySetError as exc:
        raise CommandError(f"the policy to check roles against does not compile:\n{exc}") from None


def run_grant(args: argparse.Namespace) -> int:
    return _run("grant", _grant, args)


def _grant(args: argparse.Namespace) -> int:
    parse_subject(args.subject)
    client = _client(args)
    policy = current_policy(client, args.policies)
    if args.role not in policy.roles:
        defined = ", ".join(sorted(policy.roles)) or "none"
        raise CommandError(
            f"role {args.role!r} is not defined by the current policy (version {policy.version[:12]}; "
            f"defined roles: {defined}); nothing granted"
        )
    assignment = AssignmentStore(client).grant(args.subject, args.role)
    print(f"granted {args.role} to {args.subject}; {describe(args.subject, assignment)}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    return _run("revoke", _revoke, args)


def _revoke(args: argparse.Namespace) -> int:
    store = AssignmentStore(_client(args))
    if args.role not in store.get(args.subject).roles:
        print(f"{args.subject} has no assigned role {args.role!r}; nothing to revoke")
        return 0
    assignment = store.revoke(args.subject, args.role)
    print(f"revoked {args.role} from {args.subject}; {describe(args.subject, assignment)}")
    return 0


# ---- subjects ----


def run_list(args: argparse.Namespace) -> int:
    rev, records = AssignmentStore(_client(args)).read_all()
    for subject in sorted(records):
        print(describe(subject, records[subject]))
    print(f"{len(records)} subject(s), revision {rev}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    parse_subject(args.subject)
    print(describe(args.subject, AssignmentStore(_client(args)).get(args.subject)))
    return 0


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def run_set_property(args: argparse.Namespace) -> int:
    assignment = AssignmentStore(_client(args)).set_property(args.subject, args.name, parse_value(args.value))
    print(describe(args.subject, assignment))
    return 0


def run_unset_property(args: argparse.Namespace) -> int:
    assignment = AssignmentStore(_client(args)).unset_property(args.subject, args.name)
    print(describe(args.subject, assignment))
    return 0


def run_delete(args: argparse.Namespace) -> int:
    AssignmentStore(_client(args)).delete(args.subject)
    print(f"{args.subject}: every assigned role and property removed")
    return 0
