"""Tests of the memory tier: contract (``store.base``), SIEVE behaviour, and internal invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from edgecache.store import memory
from edgecache.store.base import Tier
from edgecache.store.entry import ENTRY_OVERHEAD, VARIANT_SEP, Entry
from edgecache.store.memory import MemoryTier

S = VARIANT_SEP


def make(key: str, body: int = 0) -> Entry:
    return Entry(
        zone="z",
        key=key,
        status=200,
        head=b"",
        body=b"x" * body,
        tags=(),
        stored_seq=0,
        request_time=0.0,
        response_time=0.0,
        initial_age=0.0,
        freshness_lifetime=60.0,
    )


def unit(key: str) -> Entry:
    """An entry charged exactly 1000 bytes, so that a budget counts entries."""
    return make(key, 1000 - ENTRY_OVERHEAD - len(key))


def check_internals(tier: MemoryTier) -> None:
    """The ring invariants stated in the memory module's docstring."""
    slots = [e for e in tier._ring if e is not None]
    assert len(slots) == len({id(e) for e in slots}), "an entry object holds two slots"
    stored = set(tier._entries.values())
    assert {e for e in slots if e not in tier._retired} == stored
    assert tier._retired <= set(slots)
    assert not (tier._retired & stored)
    assert tier._retired_bytes == sum(e.size for e in tier._retired) <= tier.budget >> 3
    assert tier.bytes_used == sum(e.size for e in stored) <= tier.budget
    assert 0 <= tier._hand <= len(tier._ring)


def test_is_a_tier() -> None:
    tier: Tier = MemoryTier(10_000)
    assert len(tier) == 0 and tier.bytes_used == 0 and tier.budget == 10_000 and tier.evictions == 0


def test_negative_budget_is_refused() -> None:
    with pytest.raises(ValueError):
        MemoryTier(-1)


def test_get_marks_visited_and_peek_does_not() -> None:
    tier = MemoryTier(10_000)
    e = make("http://h/a")
    tier.put(e)
    assert tier.peek("http://h/a") is e and not e.visited
    assert tier.get("http://h/a") is e and e.visited
    assert tier.get("http://h/missing") is None and tier.peek("http://h/missing") is None


def test_put_replaces_and_resets_visited() -> None:
    tier = MemoryTier(10_000)
    a, b = make("http://h/a", 10), make("http://h/a", 500)
    tier.put(a)
    tier.get(a.key)
    b.visited = True
    tier.put(b)
    assert tier.get(a.key) is b and len(tier) == 1 and tier.bytes_used == b.size
    assert tier.evictions == 0
    tier.put(b)
    assert len(tier) == 1 and tier.bytes_used == b.size


def test_too_large_is_not_stored_and_drops_what_it_replaces() -> None:
    tier = MemoryTier(2000)
    tier.put(make("http://h/a", 10))
    tier.put(make("http://h/a", 5000))
    assert tier.peek("http://h/a") is None and tier.bytes_used == 0 and tier.evictions == 0
    zero = MemoryTier(0)
    zero.put(make("http://h/a"))
    assert len(zero) == 0


def test_delete_returns_entry() -> None:
    tier = MemoryTier(10_000)
    e = make("http://h/a")
    tier.put(e)
    assert tier.delete("http://h/a") is e
    assert tier.delete("http://h/a") is None
    assert len(tier) == 0 and tier.bytes_used == 0


def test_delete_primary_removes_exactly_that_url() -> None:
    tier = MemoryTier(100_000)
    keys = ["http://h/a", f"http://h/a{S}gzip", f"http://h/a{S}m{S}br", "http://h/ab", f"http://h/ab{S}gzip"]
    for k in keys:
        tier.put(make(k))
    assert sorted(tier.variants("http://h/a")) == sorted(keys[:3])
    assert tier.delete_primary("http://h/a") == 3
    assert sorted(e.key for e in tier) == keys[3:]
    assert tier.variants("http://h/a") == [] and tier.delete_primary("http://h/a") == 0


def test_variants_survive_primary_hash_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "hash", lambda _: 0, raising=False)
    tier = MemoryTier(100_000)
    keys = [f"http://h/a{S}gzip", f"http://h/b{S}gzip", f"http://h/b{S}br", f"http://h/c{S}gzip"]
    for k in keys:
        tier.put(make(k))
    assert len(tier._variants) == 1, "every primary in one bucket"
    assert tier.variants("http://h/a") == [keys[0]]
    assert sorted(tier.variants("http://h/b")) == sorted(keys[1:3])
    assert tier.delete_primary("http://h/b") == 2
    assert tier.variants("http://h/a") == [keys[0]] and tier.variants("http://h/c") == [keys[3]]
    tier.delete(keys[0])
    assert tier.variants("http://h/a") == [] and tier.variants("http://h/c") == [keys[3]]
    check_internals(tier)


def test_vary_lives_while_an_entry_is_under_its_base_key() -> None:
    tier = MemoryTier(100_000)
    base = f"http://h/a{S}mobile"
    tier.set_vary(base, ("accept-encoding",))
    assert tier.vary(base) is None, "nothing stored under the base key yet"
    tier.put(make(f"{base}{S}gzip"))
    tier.put(make(f"{base}{S}br"))
    tier.put(make(f"http://h/a{S}mobilex"))
    tier.set_vary(base, ("accept-encoding",))
    assert tier.vary(base) == ("accept-encoding",)
    tier.delete(f"{base}{S}gzip")
    assert tier.vary(base) == ("accept-encoding",)
    tier.delete(f"{base}{S}br")
    assert tier.vary(base) is None, "an entry under a longer key that merely starts alike does not count"


def test_vary_goes_with_eviction() -> None:
    tier = MemoryTier(2000)
    tier.put(unit(f"http://h/a{S}gzip"))
    tier.set_vary("http://h/a", ("accept-encoding",))
    tier.put(unit("http://h/b"))
    tier.put(unit("http://h/c"))
    assert tier.peek(f"http://h/a{S}gzip") is None and tier.vary("http://h/a") is None


def test_iteration_is_a_snapshot() -> None:
    tier = MemoryTier(100_000)
    for i in range(10):
        tier.put(make(f"http://h/{i}"))
    for e in tier:
        tier.delete(e.key)
    assert len(tier) == 0


def test_visited_entries_survive_unvisited_ones() -> None:
    tier = MemoryTier(100 * 1000)
    for i in range(100):
        tier.put(unit(f"http://h/{i}"))
    hot = [f"http://h/{i}" for i in range(0, 100, 5)]
    for k in hot:
        tier.get(k)
    for i in range(80):
        tier.put(unit(f"http://h/new{i}"))
    assert all(tier.peek(k) is not None for k in hot)
    assert tier.evictions == 80


def test_hot_set_survives_a_scan_of_one_hit_wonders() -> None:
    tier = MemoryTier(100 * 1000)
    hot = [f"http://h/hot{i}" for i in range(20)]
    for k in hot:
        tier.put(unit(k))
    for i in range(5000):
        tier.put(unit(f"http://h/scan{i}"))
        assert tier.get(hot[i % len(hot)]) is not None
    assert all(tier.peek(k) is not None for k in hot)
    check_internals(tier)


def test_deleted_entry_put_again_keeps_one_slot() -> None:
    tier = MemoryTier(1_000_000)
    e = unit("http://h/a")
    for _ in range(1000):
        tier.put(e)
        tier.delete(e.key)
        check_internals(tier)
    tier.put(e)
    assert tier.peek(e.key) is e
    check_internals(tier)


def test_retired_bodies_are_released() -> None:
    tier = MemoryTier(100 * 1000)
    for i in range(100):
        tier.put(unit(f"http://h/{i}"))
    for i in range(100):
        tier.delete(f"http://h/{i}")
    check_internals(tier)
    assert len(tier._ring) <= 100


class SieveModel:
    """SIEVE as the paper states it, on a Python list (oldest first): slow and obviously right."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.queue: list[Entry] = []
        self.hand = 0
        self.used = 0

    def _remove_at(self, i: int) -> None:
        self.used -= self.queue.pop(i).size
        if i < self.hand:
            self.hand -= 1

    def get(self, key: str) -> None:
        for e in self.queue:
            if e.key == key:
                e.visited = True

    def delete(self, key: str) -> None:
        for i, e in enumerate(self.queue):
            if e.key == key:
                self._remove_at(i)
                return

    def put(self, entry: Entry) -> None:
        self.delete(entry.key)
        if entry.size > self.budget:
            return
        while self.used + entry.size > self.budget:
            if self.hand >= len(self.queue):
                self.hand = 0
            e = self.queue[self.hand]
            if e.visited:
                e.visited = False
                self.hand += 1
            else:
                self._remove_at(self.hand)
        self.queue.append(entry)
        self.used += entry.size


ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "put", "get", "get", "delete"]), st.integers(0, 15), st.integers(0, 1500)
    ),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(ops, st.sampled_from([0, 1500, 4000, 9000]))
def test_evicts_exactly_like_sieve(seq: list[tuple[str, int, int]], budget: int) -> None:
    """Fresh objects only: the model cannot express reviving a retired object's slot."""
    tier, model = MemoryTier(budget), SieveModel(budget)
    mirror: dict[Entry, Entry] = {}
    for op, k, body in seq:
        key = f"http://h/{k}"
        if op == "put":
            a, b = make(key, body), make(key, body)
            mirror[a] = b
            tier.put(a)
            model.put(b)
        elif op == "get":
            tier.get(key)
            model.get(key)
        else:
            tier.delete(key)
            model.delete(key)
        assert sorted(e.key for e in tier) == sorted(e.key for e in model.queue)
        assert all(mirror[e].visited == e.visited for e in tier)
        assert tier.bytes_used == model.used
        check_internals(tier)


PRIMARIES = ["http://h/a", "http://h/b", "http://g/a"]
SUFFIXES = ["", f"{S}gzip", f"{S}br", f"{S}m", f"{S}m{S}gzip", f"{S}m{S}br", f"{S}d{S}gzip"]
BASES = ["", f"{S}m", f"{S}d"]


class TierMachine(RuleBasedStateMachine):
    """Any sequence of operations keeps the contract of ``store.base``."""

    def __init__(self) -> None:
        super().__init__()
        self.tier = MemoryTier(0)
        self.model: dict[str, Entry] = {}
        self.vary: dict[str, tuple[str, ...]] = {}
        self.pool: list[Entry] = []
        self.evicted = 0

    @initialize(budget=st.sampled_from([0, 700, 3000, 8000, 40000]))
    def start(self, budget: int) -> None:
        self.tier = MemoryTier(budget)

    def _settle(self) -> None:
        """Whatever the model holds and the tier does not was evicted."""
        gone = [k for k in self.model if self.tier.peek(k) is None]
        for k in gone:
            del self.model[k]
        self.evicted += len(gone)
        for base in [b for b in self.vary if not any(k == b or k.startswith(b + S) for k in self.model)]:
            del self.vary[base]

    @rule(p=st.sampled_from(PRIMARIES), s=st.sampled_from(SUFFIXES), body=st.integers(0, 3000))
    def put(self, p: str, s: str, body: int) -> None:
        e = make(p + s, body)
        self.pool.append(e)
        self._put(e)

    @precondition(lambda self: self.pool)
    @rule(data=st.data())
    def put_again(self, data: st.DataObject) -> None:
        self._put(data.draw(st.sampled_from(self.pool)))

    def _put(self, e: Entry) -> None:
        self.tier.put(e)
        if e.size <= self.tier.budget:
            self.model[e.key] = e
        else:
            self.model.pop(e.key, None)
        self._settle()
        assert e.size > self.tier.budget or self.tier.peek(e.key) is e

    @rule(p=st.sampled_from(PRIMARIES), s=st.sampled_from(SUFFIXES))
    def get(self, p: str, s: str) -> None:
        assert self.tier.get(p + s) is self.model.get(p + s)

    @rule(p=st.sampled_from(PRIMARIES), s=st.sampled_from(SUFFIXES))
    def delete(self, p: str, s: str) -> None:
        assert self.tier.delete(p + s) is self.model.pop(p + s, None)
        self._settle()

    @rule(p=st.sampled_from(PRIMARIES))
    def delete_primary(self, p: str) -> None:
        mine = [k for k in self.model if k.split(S, 1)[0] == p]
        assert self.tier.delete_primary(p) == len(mine)
        for k in mine:
            del self.model[k]
        self._settle()

    @rule(p=st.sampled_from(PRIMARIES), b=st.sampled_from(BASES), names=st.sampled_from([(), ("accept",)]))
    def set_vary(self, p: str, b: str, names: tuple[str, ...]) -> None:
        self.tier.set_vary(p + b, names)
        if any(k == p + b or k.startswith(p + b + S) for k in self.model):
            self.vary[p + b] = names

    @invariant()
    def stored_is_model(self) -> None:
        assert {e.key: e for e in self.tier} == self.model
        assert self.tier.evictions == self.evicted
        assert self.tier.bytes_used <= self.tier.budget
        check_internals(self.tier)

    @invariant()
    def variants_match(self) -> None:
        for p in PRIMARIES:
            assert sorted(self.tier.variants(p)) == sorted(k for k in self.model if k.split(S, 1)[0] == p)

    @invariant()
    def vary_matches(self) -> None:
        for p in PRIMARIES:
            for b in BASES + SUFFIXES:
                assert self.tier.vary(p + b) == self.vary.get(p + b)


TierMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
test_tier_machine = TierMachine.TestCase
