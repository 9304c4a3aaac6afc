"""Level 1 of the decision cache: correct across policy versions and attribute changes."""

from __future__ import annotations

import threading
from pathlib import Path

from prometheus_client import REGISTRY

from pdp.cache import LocalCache, TieredCache
from pdp.engine import decide
from pdp.model import Decision, Request
from pdp.policy import CompiledPolicy
from pdp.service import CallMeta, DecisionService, PolicyHolder
from tests.policy_helpers import load

POLICY = """
role editor {
    allow edit on document:drafts/** when resource.owner == subject.id
        reason "editors edit their own drafts" as own-drafts
}
grant editor to user:*
"""

STRICTER = POLICY.replace("grant editor to user:*", "grant editor to user:alice")
META = CallMeta("test")


def edit(owner: str, subject: str = "alice", **extra: str) -> Request:
    return Request("user", subject, "edit", "document", "drafts/1",
                   resource_properties={"owner": owner, **extra})


def service_for(policy: CompiledPolicy, size: int = 100) -> tuple[DecisionService, TieredCache]:
    cache = TieredCache(size)
    return DecisionService(PolicyHolder(policy), cache=cache), cache


def test_a_repeated_request_is_answered_from_level_1(tmp_path: Path) -> None:
    service, cache = service_for(load(tmp_path, {"p.policy": POLICY}))
    try:
        first, second = service.check(edit("alice"), META), service.check(edit("alice"), META)
        assert (first.cached, second.cached) == (False, True)
        assert first.decision == second.decision and second.decision.allowed
        assert (cache.counts.l1_hits, cache.counts.l1_misses) == (1, 1)
    finally:
        cache.close()


def test_attributes_no_rule_reads_share_an_entry(tmp_path: Path) -> None:
    service, cache = service_for(load(tmp_path, {"p.policy": POLICY}))
    try:
        service.check(edit("alice", colour="red"), META)
        again = service.check(edit("alice", colour="blue"), META)
        assert again.cached and again.decision.allowed
    finally:
        cache.close()


def test_a_changed_attribute_that_a_rule_reads_is_never_served_the_old_decision(
    tmp_path: Path,
) -> None:
    service, cache = service_for(load(tmp_path, {"p.policy": POLICY}))
    try:
        assert service.check(edit("alice"), META).decision.allowed
        changed = service.check(edit("bob"), META)
        assert not changed.cached and not changed.decision.allowed
        assert service.check(edit("bob"), META).cached
    finally:
        cache.close()


def test_a_new_policy_version_is_never_served_a_decision_of_the_old_one(tmp_path: Path) -> None:
    old = load(tmp_path / "old", {"p.policy": POLICY})
    new = load(tmp_path / "new", {"p.policy": STRICTER})
    holder = PolicyHolder(old)
    cache = TieredCache(100)
    service = DecisionService(holder, cache=cache)
    try:
        assert service.check(edit("carol", subject="carol"), META).decision.allowed
        holder.swap(new)
        after = service.check(edit("carol", subject="carol"), META)
        assert not after.cached and not after.decision.allowed
        assert after.decision.policy_version == new.version
        assert len(cache.l1 or ()) == 1  # the old version's entries were let go
    finally:
        cache.close()


def test_every_cached_answer_equals_a_fresh_decision(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": POLICY})
    service, cache = service_for(policy, size=8)
    requests = [edit(owner, subject) for owner in ("alice", "bob", "carol")
                for subject in ("alice", "bob", "carol", "dan")]
    try:
        for _ in range(3):
            for request in requests:
                assert service.check(request, META).decision == decide(policy, request)
        assert cache.l1 is not None and len(cache.l1) == 8
    finally:
        cache.close()


def test_the_lru_keeps_the_recently_used_entries() -> None:
    lru = LocalCache(2)
    d = Decision(True, (), "v")
    lru.put("a", d)
    lru.put("b", d)
    assert lru.get("a") is d
    lru.put("c", d)
    assert lru.get("b") is None and lru.get("a") is d and lru.get("c") is d


def test_concurrent_checks_agree_with_the_engine(tmp_path: Path) -> None:
    policy = load(tmp_path, {"p.policy": POLICY})
    service, cache = service_for(policy, size=16)
    requests = [edit(f"u{i % 40}", f"u{i % 7}") for i in range(200)]
    wrong: list[Request] = []

    def work() -> None:
        for request in requests:
            if service.check(request, META).decision != decide(policy, request):
                wrong.append(request)

    threads = [threading.Thread(target=work) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wrong == []
    finally:
        cache.close()


def test_lookups_are_counted_in_prometheus(tmp_path: Path) -> None:
    def lookups(result: str) -> float:
        value = REGISTRY.get_sample_value("pdp_cache_lookups_total", {"level": "l1", "result": result})
        return value or 0.0

    service, cache = service_for(load(tmp_path, {"p.policy": POLICY}))
    hits, misses = lookups("hit"), lookups("miss")
    for _ in range(3):
        service.check(edit("alice"), META)
    cache.close()  # folds the counts in (else at the next tick)
    assert lookups("hit") - hits >= 2 and lookups("miss") - misses >= 1
