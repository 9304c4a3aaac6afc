"""`pdp revoke-token`: put a token id on the shared (Redis) revocation list."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

import redis

from pdp.identity.revocation import RedisRevocationList

REDIS_URL_ENV = "PDP_IDENTITY_REVOCATION_REDIS_URL"


def parse_until(text: str) -> float:
    """Unix seconds, or an ISO 8601 time (UTC when no offset is given)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither unix seconds nor an ISO 8601 time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def register(subparsers: Any) -> None:
    cmd = subparsers.add_parser(
        "revoke-token",
        help="refuse tokens with this jti until they expire",
        description="Add a token's jti to the Redis revocation list that every replica reads; "
        "the entry expires at --until (the token's exp), after which the token is invalid anyway.",
    )
    cmd.add_argument("jti", help="the token's jti claim")
    cmd.add_argument(
        "--until", required=True, type=parse_until,
        help="the token's exp: unix seconds or ISO 8601, e.g. 2026-11-25T18:00:00Z",
    )
    default_url = os.environ.get(REDIS_URL_ENV)
    cmd.add_argument(
        "--redis-url", required=default_url is None, default=default_url,
        help=f"e.g. redis://127.0.0.1:6379/0 (default ${REDIS_URL_ENV}, as `pdp serve` reads it)",
    )
    cmd.add_argument("--prefix", default="pdp:revoked:", help="key prefix (default %(default)s)")
    cmd.set_defaults(func=revoke_token)


def revoke_token(args: argparse.Namespace) -> int:
    if args.until <= time.time():
        print(f"jti {args.jti!r} not stored: --until is in the past (the token has expired)")
        return 0
    revocations = RedisRevocationList(args.redis_url, args.prefix, timeout=5.0)
    try:
        revocations.revoke(args.jti, args.until)
    except redis.RedisError as exc:
        print(f"error: cannot write to Redis: {exc}", file=sys.stderr)
        return 1
    finally:
        revocations.close()
    until = datetime.fromtimestamp(args.until, UTC).isoformat(timespec="seconds")
    print(f"revoked jti {args.jti!r} until {until}")
    return 0
