"""`pdp publish` and `pdp bundles list`: policy bundles in Redis for every replica."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from pdp import redisio
from pdp.assignments import AssignmentStore
from pdp.bundles import Bundle, BundleError, BundleStore, default_publisher, make_bundle
from pdp.errors import PolicySetError
from pdp.loader import compile_sources, read_sources
from pdp.policy import CompiledPolicy
from pdp.testing import run_tests

CLI_TIMEOUT_S = 5.0


def add_redis_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", required=True, metavar="URL",
                        help="e.g. redis://127.0.0.1:6379/0 (see pdp serve --help for the forms)")


def register(subparsers: Any) -> None:
    publish = subparsers.add_parser(
        "publish",
        help="publish a policy folder to every replica through Redis, or roll back",
        description="Compile DIR and run its test blocks; if all pass, store the set in Redis under "
        "its version, make it current and announce it to every `pdp serve --policy-source redis`. "
        "With --rollback VERSION, make an earlier stored version current again.",
    )
    publish.add_argument("dir", metavar="DIR", nargs="?", help="the policy folder")
    publish.add_argument("--rollback", metavar="VERSION",
                         help="make this stored version (or a unique prefix of it) current")
    publish.add_argument("--force", action="store_true", help="publish even if tests fail")
    publish.add_argument("--by", metavar="NAME", help="who publishes (default user@host)")
    add_redis_url(publish)
    publish.set_defaults(func=run_publish)

    bundles = subparsers.add_parser(
        "bundles", help="list the policy bundles stored in Redis",
        description="Manage the policy bundles stored in Redis by `pdp publish`.",
    )
    actions = bundles.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every stored version, oldest first; * marks current")
    add_redis_url(listing)
    listing.set_defaults(func=run_list)
    show = actions.add_parser("show", help="one stored version: who published it, when, its files",
                              description="Load a stored version (verified against its hash) and "
                              "print its metadata and files; --files-to DIR writes the files out.")
    show.add_argument("version", metavar="VERSION", help="a stored version or a unique prefix")
    show.add_argument("--files-to", metavar="DIR", help="write the bundle's files under DIR")
    add_redis_url(show)
    show.set_defaults(func=run_show)


def _store(url: str) -> BundleStore:
    return BundleStore(redisio.connect(url, timeout_s=CLI_TIMEOUT_S))


def _fail(message: str, code: int = 1) -> int:
    print(f"pdp publish: {message}", file=sys.stderr)
    return code


def run_publish(args: argparse.Namespace) -> int:
    if (args.dir is None) == (args.rollback is None):
        return _fail("give either DIR or --rollback VERSION", 2)
    try:
        store = _store(args.redis_url)
        if args.rollback is not None:
            return _rollback(store, args.rollback)
        prepared = _prepare(args.dir, args.by or default_publisher(), args.force)
        if prepared is None:
            return 1
        bundle, policy = prepared
        store.publish(bundle)
        warn_undefined_roles(store, policy)
    except redisio.RedisUrlError as exc:
        return _fail(str(exc), 2)
    except BundleError as exc:
        return _fail(str(exc))
    except redis.RedisError as exc:
        return _fail(f"cannot reach Redis: {type(exc).__name__}: {exc}")
    info = bundle.info
    print(f"published {info.version} ({info.files} files) by {info.published_by}; now current")
    return 0


def _rollback(store: BundleStore, prefix: str) -> int:
    version = store.resolve(prefix)
    bundle = store.load(version)  # never make a corrupt bundle current
    store.make_current(version)
    print(f"rolled back: {version} is current")
    try:
        warn_undefined_roles(store, compile_sources(list(bundle.sources)))
    except PolicySetError:
        print("warning: this version does not compile with this pdp", file=sys.stderr)
    return 0


def warn_undefined_roles(store: BundleStore, policy: CompiledPolicy) -> None:
    """Assigned roles (`pdp grant`) the new current version does not define: they stay
    assigned but match no rule, which is worth a word to whoever publishes."""
    _rev, records = AssignmentStore(store.redis).read_all()
    holders: dict[str, list[str]] = {}
    for subject, assignment in sorted(records.items()):
        for role in sorted(assignment.roles - policy.roles.keys()):
            holders.setdefault(role, []).append(subject)
    for role, subjects in holders.items():
        print(f"warning: role {role!r} is assigned to {len(subjects)} subject(s) (e.g. {subjects[0]}) "
              "but not defined by this version; it grants nothing until defined again", file=sys.stderr)


def _prepare(folder: str, published_by: str, force: bool) -> tuple[Bundle, CompiledPolicy] | None:
    """The bundle of a folder that compiles and whose tests pass (or `force`); None otherwise."""
    try:
        sources = read_sources(folder)
        policy = compile_sources(sources, source_dir=folder)
    except PolicySetError as err:
        for issue in err.errors:
            print(f"{issue.file}:{issue.line}:{issue.column}: {issue.message}", file=sys.stderr)
        _fail(f"{folder} does not compile; nothing published")
        return None
    failed = [r.test.name for r in run_tests(policy) if not r.passed]
    if failed and not force:
        _fail(f"{len(failed)} test(s) fail ({', '.join(failed)}); nothing published "
              "(run `pdp test DIR` for details, or --force)")
        return None
    if failed:
        print(f"warning: publishing with {len(failed)} failing test(s): {', '.join(failed)}",
              file=sys.stderr)
    return make_bundle(sources, published_by), policy


def run_list(args: argparse.Namespace) -> int:
    try:
        store = _store(args.redis_url)
        current = store.current_version()
        infos = store.list()
    except redis.RedisError as exc:
        print(f"pdp bundles: cannot reach Redis: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for info in infos:
        at = datetime.fromtimestamp(info.published_at, UTC).isoformat(timespec="seconds")
        mark = "*" if info.version == current else " "
        print(f"{mark} {info.version}  {at}  {info.published_by}  {info.files} files")
    if not infos:
        print("no bundles stored")
    return 0


def run_show(args: argparse.Namespace) -> int:
    try:
        store = _store(args.redis_url)
        bundle = store.load(store.resolve(args.version))
        current = store.current_version()
    except BundleError as exc:
        print(f"pdp bundles: {exc}", file=sys.stderr)
        return 1
    except redis.RedisError as exc:
        print(f"pdp bundles: cannot reach Redis: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    info = bundle.info
    at = datetime.fromtimestamp(info.published_at, UTC).isoformat(timespec="seconds")
    print(f"version: {info.version}{'  (current)' if info.version == current else ''}")
    print(f"published by {info.published_by} at {at}; verified against its hash")
    for source in bundle.sources:
        print(f"  {source.path}  {len(source.content)} bytes")
        relative = Path(source.path)
        if relative.is_absolute() or ".." in relative.parts:
            print(f"pdp bundles: {source.path!r} leaves the folder; not written", file=sys.stderr)
            return 1
        if args.files_to:
            target = Path(args.files_to, relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.content)
    return 0
