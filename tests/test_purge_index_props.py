"""Property tests: the epoch index agrees with the reference semantics on random caches and purges.

A random script interleaves new entries (stored at the current ledger position, as a fetch started
now would be), purges (random selectors over the same small universe of zones, hosts, paths and
tags, so they often match) and compactions. After every step each entry's ``check`` must equal the
verdict computed from the independent reference ``purge_reference.covers`` (not
``purge.matches``) over all purges newer than the entry (and, after compaction to ``upto``, newer
than ``upto``), and the index's row count must equal the number of live rows the module rules
define.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.httpcache.tags import normalise_tag
from edgecache.purge import (
    EpochIndex,
    Everything,
    Host,
    Ledger,
    Mode,
    Prefix,
    Purge,
    Selector,
    Tag,
    Url,
    Verdict,
)
from purge_reference import covers, typed

ZONES = ("z1", "z2")
HOSTS = ("a.com", "b.com", "a.com:8080", "www.a.com")
SEGMENTS = ("", "a", "ab", "abc", "b", "B")
TAGS = ("blog", "news", "post-1", "x")


def _random_case(s: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(s), max_size=len(s)).map(
        lambda up: "".join(c.upper() if u else c for c, u in zip(s, up, strict=True))
    )


tags_st = st.sampled_from(TAGS).flatmap(_random_case)
path_st = st.lists(st.sampled_from(SEGMENTS), max_size=4).map(lambda segs: "/" + "/".join(segs))
primary_st = st.builds(
    lambda scheme, host, path, query: f"{scheme}://{host}{path}{query}",
    st.sampled_from(("http", "https")),
    st.sampled_from(HOSTS),
    path_st,
    st.sampled_from(("", "?x=1", "?y")),
)
variant_st = st.sampled_from(("", "\x00dt=mobile", "\x00dt=desktop", "\x00dt=mobile\x00cc=ES"))
key_st = st.builds(str.__add__, primary_st, variant_st)

prefix_st = st.builds(
    lambda host, segs, tail: host + ("/" + "/".join(segs) + tail if segs or tail else ""),
    st.sampled_from(HOSTS).flatmap(_random_case),
    st.lists(st.sampled_from(SEGMENTS), max_size=3),
    st.sampled_from(("", "", "/", "a", "?x")),
)
selector_st: st.SearchStrategy[Selector] = st.one_of(
    key_st.map(Url),
    tags_st.map(Tag),
    st.builds(Tag, tags_st, st.sampled_from(HOSTS).flatmap(_random_case)),
    st.sampled_from(HOSTS).flatmap(_random_case).map(Host),
    prefix_st.map(Prefix),
    st.just(Everything()),
)


@dataclass(frozen=True)
class NewEntry:
    zone: str
    key: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class NewPurge:
    zone: str
    mode: Mode
    selectors: tuple[Selector, ...]
    at: float


@dataclass(frozen=True)
class Compact:
    fraction: float


@dataclass(frozen=True)
class Hit:
    """A hit on one of the stored entries (``which``: where in the list): as the proxy does, a
    clean verdict re-stamps it at the index's position, so that its later hits take the
    one-comparison path."""

    which: float


op_st = st.one_of(
    st.builds(Hit, st.floats(0, 1, exclude_max=True)),
    st.builds(
        NewEntry,
        st.sampled_from(ZONES),
        key_st,
        st.lists(tags_st, max_size=3).map(lambda ts: tuple(dict.fromkeys(normalise_tag(t) for t in ts))),
    ),
    st.builds(
        NewPurge,
        st.sampled_from(ZONES),
        st.sampled_from(Mode),
        st.lists(selector_st, min_size=1, max_size=3).map(tuple),
        st.floats(0, 1000),
    ),
    st.builds(Compact, st.floats(0, 1)),
)


@dataclass(frozen=True)
class Stored:
    zone: str
    key: str
    tags: tuple[str, ...]
    seq: int
    """What the index is asked with: the fetch's position, or the position of its last clean hit."""
    fetched: int
    """The ledger position when its origin fetch started: what the reference judges from."""


def reference(entry: Stored, purges: list[Purge], after: int) -> Verdict | None:
    """The verdict from first principles: all purges newer than ``after`` that cover the entry."""
    covering = [
        p
        for p in purges
        if p.seq > after
        and any(covers(*typed(s), p.zone, entry.zone, entry.key, entry.tags) for s in p.selectors)
    ]
    hard = [p for p in covering if p.mode is Mode.DELETE]
    if hard:
        newest = max(hard, key=lambda p: p.seq)
        return Verdict(True, newest.seq, newest.at)
    if covering:
        first = min(covering, key=lambda p: p.seq)
        return Verdict(False, first.seq, first.at)
    return None


def expected_rows(purges: list[Purge], compacted: int) -> int:
    """Rows per the module rules: per scope, the latest hard row and the soft rows after it."""
    scopes: dict[tuple[str, tuple[str, str]], list[Purge]] = {}
    for p in purges:
        for sel in dict.fromkeys(typed(s) for s in p.selectors):
            scopes.setdefault((p.zone, sel), []).append(p)
    rows = 0
    for ps in scopes.values():
        last_hard = max((p.seq for p in ps if p.mode is Mode.DELETE), default=0)
        rows += last_hard > compacted
        rows += sum(1 for p in ps if p.mode is Mode.INVALIDATE and p.seq > max(last_hard, compacted))
    return rows


@dataclass
class Model:
    ledger: Ledger = field(default_factory=Ledger)
    index: EpochIndex = field(default_factory=EpochIndex)
    purges: list[Purge] = field(default_factory=list)
    entries: list[Stored] = field(default_factory=list)
    compacted: int = 0

    def verify(self) -> None:
        for e in self.entries:
            got = self.index.check(e.zone, e.key, e.tags, e.seq)
            assert got == reference(e, self.purges, max(e.fetched, self.compacted)), (e, got)
        assert self.index.rows == expected_rows(self.purges, self.compacted)


@settings(max_examples=400, deadline=None)
@given(st.lists(op_st, max_size=40))
def test_index_agrees_with_reference(ops: list[NewEntry | NewPurge | Compact | Hit]) -> None:
    """Every verdict matches the purges from first principles, through compactions and through
    hits that re-stamp an entry: a purge accepted after an entry's clean hit still covers it."""
    m = Model()
    for op in ops:
        if isinstance(op, NewEntry):
            position = m.ledger.position
            m.entries.append(Stored(op.zone, op.key, op.tags, position, position))
        elif isinstance(op, Hit):
            if m.entries:
                i = int(op.which * len(m.entries))
                e = m.entries[i]
                if m.index.check(e.zone, e.key, e.tags, e.seq) is None:
                    m.entries[i] = replace(e, seq=m.index.position)
        elif isinstance(op, NewPurge):
            p = m.ledger.append(op.zone, op.mode, op.selectors, op.at)
            m.index.apply(p)
            m.purges.append(p)
        else:
            upto = m.compacted + round(op.fraction * (m.ledger.position - m.compacted))
            before = {id(e): m.index.check(e.zone, e.key, e.tags, e.seq) for e in m.entries}
            rows = m.index.rows
            removed = m.index.compact(upto)
            assert m.index.rows == rows - removed
            m.compacted = upto
            # The reclaimer has removed what hard purges up to `upto` matched (soft-matched entries
            # stay, marked stale); entries stored at or after `upto` keep their exact verdicts.
            m.entries = [
                e
                for e in m.entries
                if e.seq >= upto
                or not any(
                    p.mode is Mode.DELETE
                    and p.seq <= upto
                    and any(covers(*typed(s), p.zone, e.zone, e.key, e.tags) for s in p.selectors)
                    for p in m.purges
                    if p.seq > e.fetched
                )
            ]
            for e in m.entries:
                if e.seq >= upto:
                    assert m.index.check(e.zone, e.key, e.tags, e.seq) == before[id(e)]
        m.verify()
    # Compacting everything leaves nothing behind.
    m.index.compact(m.ledger.position)
    assert m.index.rows == 0
    assert m.index.trie_nodes() == 0
    assert all(m.index.check(z, e.key, e.tags, 0) is None for z in ZONES for e in m.entries)


@settings(max_examples=200, deadline=None)
@given(key_st, st.lists(tags_st, max_size=3), selector_st, st.sampled_from(Mode))
def test_single_selector_matches_reference(key: str, raw_tags: list[str], sel: Selector, mode: Mode) -> None:
    tags = tuple(dict.fromkeys(normalise_tag(t) for t in raw_tags))
    idx = EpochIndex()
    idx.apply(Purge(1, "z1", mode, (sel,), 7.0))
    expected = Verdict(mode is Mode.DELETE, 1, 7.0) if covers(*typed(sel), "z1", "z1", key, tags) else None
    assert idx.check("z1", key, tags, 0) == expected
    assert idx.check("z2", key, tags, 0) is None
    assert idx.check("z1", key, tags, 1) is None
