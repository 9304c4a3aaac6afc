"""`pdp audit tail`: read audit records from a file or a Redis Stream, one readable line each."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from fnmatch import fnmatchcase
from typing import Any

import redis

from pdp.audit.follow import file_lines, stream_lines
from pdp.audit.settings import DEFAULT_STREAM


def register(subparsers: Any) -> None:
    audit = subparsers.add_parser("audit", help="read the audit log")
    commands = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    tail = commands.add_parser(
        "tail",
        help="print audit records from a file or a Redis Stream, optionally following",
        description="Print the matching records among the last N (all with -n all) from FILE or from a Redis "
        "Stream (--redis URL), one readable line each, then with -f follow new ones (across file "
        "rotation). Filters: --subject/--resource as TYPE:ID, ID or a glob such as 'user:*'; "
        "--decision allow|deny.",
    )
    tail.add_argument("file", nargs="?", metavar="FILE", help="a JSON-lines audit file")
    tail.add_argument("--redis", metavar="URL", help="read the Redis Stream at this URL instead")
    tail.add_argument("--stream", default=DEFAULT_STREAM,
                      help="the stream key (default: %(default)s)")
    tail.add_argument("-n", "--lines", default="10", metavar="N",
                      help="how many records to show first, or 'all' (default: 10)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    tail.add_argument("--subject", metavar="TYPE:ID", help="only this subject")
    tail.add_argument("--resource", metavar="TYPE:ID", help="only this resource")
    tail.add_argument("--decision", type=str.upper, choices=("ALLOW", "DENY"),
                      help="only ALLOW or only DENY")
    tail.add_argument("--json", action="store_true", help="print the records as JSON lines")
    tail.set_defaults(func=run_tail)


def _entity_matches(entity: Any, wanted: str | None) -> bool:
    if wanted is None:
        return True
    if not isinstance(entity, dict):
        return False
    full = f"{entity.get('type')}:{entity.get('id')}"
    if any(c in wanted for c in "*?["):
        return fnmatchcase(full, wanted)
    return wanted in (full, entity.get("id"))


def matches(record: dict[str, Any], args: argparse.Namespace) -> bool:
    return (
        _entity_matches(record.get("subject"), args.subject)
        and _entity_matches(record.get("resource"), args.resource)
        and (args.decision is None or record.get("decision") == args.decision)
    )


def _name(entity: Any) -> str:
    if not isinstance(entity, dict):
        return "?"
    return f"{entity.get('type', '?')}:{entity.get('id', '[removed]')}"


def format_record(record: dict[str, Any]) -> str:
    """`TIME DECISION subject action resource  [rule] text  (frontend, policy, latency, ids)`."""
    reasons = record.get("reasons") or []
    why = "; ".join(f"[{r.get('rule')}] {r.get('text')}" for r in reasons if isinstance(r, dict))
    policy = record.get("policy") or {}
    version = str(policy.get("version") or "")[:12]
    source = policy.get("source") or {}
    if source.get("commit"):
        version += f"@{str(source['commit'])[:10]}"
    details = [str(record.get("frontend")), f"policy {version}", f"{record.get('latency_us')}us"]
    if record.get("cached"):
        details.append("cached")
    if record.get("caller"):
        details.append(f"caller {record['caller']}")
    if record.get("request_id"):
        details.append(f"request {record['request_id']}")
    details.append(f"id {record.get('decision_id')}")
    action = (record.get("action") or {}).get("name")
    return (
        f"{record.get('time')} {record.get('decision', '?'):<5} {_name(record.get('subject'))} "
        f"{action} {_name(record.get('resource'))}  {why}  ({', '.join(details)})"
    )


def _source(args: argparse.Namespace) -> Iterator[str]:
    last = None if args.lines == "all" else int(args.lines)
    if args.redis:
        return stream_lines(args.redis, args.stream, last, args.follow)
    return file_lines(args.file, last, args.follow)


def run_tail(args: argparse.Namespace) -> int:
    if bool(args.file) == bool(args.redis):
        print("pdp audit tail: give either FILE or --redis URL", file=sys.stderr)
        return 2
    if args.lines != "all" and not args.lines.isdigit():
        print("pdp audit tail: -n takes a number or 'all'", file=sys.stderr)
        return 2
    try:
        return _print(args)
    except (OSError, redis.RedisError) as exc:
        print(f"pdp audit tail: {exc}", file=sys.stderr)
        return 1


def _print(args: argparse.Namespace) -> int:
    for line in _source(args):
        try:
            record = json.loads(line)
        except ValueError:
            print(f"pdp audit tail: skipped a line that is not JSON: {line[:80]!r}",
                  file=sys.stderr)
            continue
        if isinstance(record, dict) and matches(record, args):
            print(line if args.json else format_record(record), flush=args.follow)
    return 0
