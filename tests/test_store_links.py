"""The memory tier's index bookkeeping in C (``store/_links.c``): its failures and its references,
which the state machine of tests/test_store_memory.py, a run of ordinary operations, does not reach."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from edgecache.store._links import Links
from edgecache.store.entry import VARIANT_SEP
from edgecache.store.memory import MemoryTier
from test_store_memory import make


def indexes(tier: MemoryTier) -> object:
    """A copy of everything a put or a removal changes."""
    tags = {
        zone: {tag: keys if isinstance(keys, str) else set(keys) for tag, keys in by_tag.items()}
        for zone, by_tag in tier._tags.items()
    }
    return (
        dict(tier._entries),
        list(tier._keys),
        {zone: dict(ranges) for zone, ranges in tier._zones.items()},
        dict(tier._zones_of_range),
        dict(tier._with_variants),
        tags,
        tier.bytes_used,
    )


def test_a_lost_variant_count_is_a_key_error_and_stores_nothing() -> None:
    tier = MemoryTier(1 << 20)
    key = "http://h/a" + VARIANT_SEP + "gzip"
    tier.put(make(key))
    del tier._with_variants["http://h/a"]
    with pytest.raises(KeyError, match="http://h/a"):
        tier.delete(key)
    assert tier._with_variants == {}
    # Once the count was stored as -1 and the next put of the key failed half-linked.
    tier.put(make(key))
    assert tier._with_variants == {"http://h/a": 1}


def test_a_count_that_would_go_below_zero_is_an_error() -> None:
    tier = MemoryTier(1 << 20)
    key = "http://h/a" + VARIANT_SEP + "gzip"
    tier.put(make(key))
    tier._with_variants["http://h/a"] = 0
    with pytest.raises(ValueError, match="below zero"):
        tier.delete(key)
    assert tier._with_variants == {"http://h/a": 0}


class _Tag(str):
    """A tag whose hash is Python code: it could change the tier while the C updates a dict."""

    def __hash__(self) -> int:
        return str.__hash__(self)


@pytest.mark.parametrize("field", ["key", "zone", "tag"])
def test_a_field_not_exactly_a_str_changes_nothing(field: str) -> None:
    tier = MemoryTier(1 << 20)
    tier.put(make("http://h/b", tags=("t",)))
    before = indexes(tier)
    entry = make(
        _Tag("http://h/a") if field == "key" else "http://h/a",
        zone=_Tag("z") if field == "zone" else "z",
        tags=("t", _Tag("u")) if field == "tag" else ("t",),
    )
    with pytest.raises(TypeError, match="a str"):
        tier.put(entry)
    assert indexes(tier) == before
    with pytest.raises(TypeError):
        tier._links.unlink(entry)
    assert indexes(tier) == before


def test_the_tier_dropping_a_tag_dict_during_a_put_does_not_crash() -> None:
    # _TagShards is called mid-put; here it drops the zone's tag dict that the C is filling, whose
    # key table (many tags: not on a free list) the debug allocator then overwrites.
    script = textwrap.dedent(
        """
        from edgecache.store import memory
        from edgecache.store.entry import Entry

        def make(key, tags):
            return Entry(zone="z", key=key, status=200, head=b"", body=b"", tags=tags, stored_seq=0,
                         response_time=0.0, initial_age=0.0, freshness_lifetime=60.0)

        class Shards(memory._TagShards):
            def __init__(self, keys):
                super().__init__(keys)
                tier._tags.clear()

        memory._TagShards = Shards
        memory._TAG_SHARD_AT = 2
        tier = memory.MemoryTier(1 << 30)
        tier.put(make("http://h/0", tuple(f"t{i}" for i in range(100))))
        tier.put(make("http://h/1", ("t0",)))
        tier.put(make("http://h/2", ("t0",) + tuple(f"u{i}" for i in range(100))))
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONMALLOC": "debug", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr[-2000:]


def test_an_uninitialised_links_is_refused() -> None:
    links = Links.__new__(Links)
    with pytest.raises(RuntimeError, match="__init__"):
        links.link(make("http://h/a"))
    with pytest.raises(RuntimeError, match="__init__"):
        links.unlink(make("http://h/a"))


def test_puts_and_removals_leak_nothing() -> None:
    tier = MemoryTier(1 << 30)
    entries = [
        make(f"http://h{i % 7}/{i}" + (VARIANT_SEP + "gzip" if i % 3 else ""), tags=(f"t{i % 5}",))
        for i in range(200)
    ]

    def rounds(n: int) -> None:
        for _ in range(n):
            for entry in entries:
                tier.put(entry)
            for entry in entries:
                tier.delete(entry.key)

    rounds(2)  # the ring, the free lists and the interned strings at their steady size
    before = sys.getallocatedblocks()
    rounds(50)
    # A string leaked a put is 10,000 blocks here; without a leak the count moves by a few.
    assert sys.getallocatedblocks() - before < 100
