"""The invalidation engine by example: each selector's edge cases, verdicts, the ledger, compaction."""

from __future__ import annotations

import pytest

from edgecache.httpcache.key import KeyOptions, url_key
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
    matches,
)
from purge_reference import covers, typed

Z = "zone-1"
OTHER = "zone-2"
D, SOFT = Mode.DELETE, Mode.INVALIDATE


class Engine:
    """A ledger and an index, fed together as the control plane would."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.index = EpochIndex()

    def purge(self, *selectors: Selector, mode: Mode = D, zone: str = Z, at: float = 0.0) -> Purge:
        p = self.ledger.append(zone, mode, selectors, at)
        self.index.apply(p)
        return p

    def check(self, key: str, tags: tuple[str, ...] = (), stored: int = 0, zone: str = Z) -> Verdict | None:
        v = self.index.check(zone, key, tags, stored)
        # Every verdict must agree with the reference semantics.
        covering = [
            p
            for p in self.ledger.since(stored)
            if any(covers(*typed(s), p.zone, zone, key, tags) for s in p.selectors)
        ]
        assert (v is not None) == bool(covering)
        return v

    def purged(self, key: str, tags: tuple[str, ...] = (), zone: str = Z) -> bool:
        return self.check(key, tags, zone=zone) is not None


# --- selectors ------------------------------------------------------------------------------------


def test_tags_are_case_insensitive() -> None:
    assert Tag(" Blog ") == Tag("blog")
    e = Engine()
    e.purge(Tag("BLOG"))
    assert e.purged("http://a.com/x", ("blog", "news"))
    assert not e.purged("http://a.com/x", ("blogs", "news"))
    assert not e.purged("http://a.com/x")


def test_tag_on_a_host_covers_that_host_only() -> None:
    assert Tag("Blog", " WWW.A.com ") == Tag("blog", "www.a.com")
    e = Engine()
    e.purge(Tag("blog", "www.a.com"))
    assert e.purged("http://www.a.com/x", ("blog",))
    assert e.purged("https://www.a.com/x?q\x00dt=mobile", ("news", "blog"))
    assert not e.purged("http://a.com/x", ("blog",))  # exact host, not a suffix
    assert not e.purged("http://www.a.com.evil/x", ("blog",))
    assert not e.purged("http://www.a.com/x", ("news",))
    e.purge(Tag("blog"))
    assert e.purged("http://a.com/x", ("blog",))  # a tag without a host covers the whole zone


def test_tags_on_hosts_compact_like_other_scopes() -> None:
    e = Engine()
    e.purge(Tag("blog", "a.com"), Tag("blog", "b.com"), mode=SOFT, at=5.0)
    assert e.index.rows == 2
    assert e.check("http://b.com/x", ("blog",)) == Verdict(False, 1, 5.0)
    e.purge(Tag("blog", "a.com"))
    assert e.index.rows == 2  # the hard row replaced a.com's soft row
    assert e.index.compact(2) == 2
    assert e.index.rows == 0
    assert e.index.check(Z, "http://a.com/x", ("blog",), 0) is None


def test_prefix_is_a_string_prefix() -> None:
    e = Engine()
    e.purge(Prefix("example.com/bar"))
    for path in ("/bar", "/bar/", "/bar/baz", "/barbaz", "/bar?x=1", "/barbaz/q?y"):
        assert e.purged("https://example.com" + path), path
    for path in ("/", "/ba", "/Bar", "/foo/bar", "/?bar"):
        assert not e.purged("https://example.com" + path), path


def test_prefix_with_trailing_slash_does_not_cover_the_bare_path() -> None:
    e = Engine()
    e.purge(Prefix("example.com/bar/"))
    assert e.purged("http://example.com/bar/")
    assert e.purged("http://example.com/bar/x/y")
    assert not e.purged("http://example.com/bar")
    assert not e.purged("http://example.com/barbaz/")


def test_prefix_covers_every_query_string_and_variant() -> None:
    e = Engine()
    e.purge(Prefix("example.com/a/b"))
    assert e.purged("http://example.com/a/b?x=1&y=2")
    assert e.purged("http://example.com/a/b?x\x00dt=mobile")
    assert e.purged("http://example.com/a/bc\x00dt=mobile\x00cc=ES")
    assert not e.purged("http://example.com/a?b")


def test_prefix_host_is_exact_and_case_insensitive() -> None:
    assert Prefix("EXAMPLE.com/Path") == Prefix("example.com/Path")
    assert Prefix("example.com") == Prefix("example.com/")
    e = Engine()
    e.purge(Prefix("Example.COM"))
    assert e.purged("http://example.com/")
    assert e.purged("https://example.com/anything/at/all?q")
    assert not e.purged("http://example.community/")
    assert not e.purged("http://www.example.com/")
    assert not e.purged("http://example.com:8080/")


def test_prefix_path_is_case_sensitive() -> None:
    e = Engine()
    e.purge(Prefix("example.com/Foo"))
    assert e.purged("http://example.com/Foo/bar")
    assert not e.purged("http://example.com/foo/bar")


def test_prefix_with_query_matches_nothing() -> None:
    e = Engine()
    e.purge(Prefix("example.com/bar?good=bad"))
    assert not e.purged("http://example.com/bar?good=bad")
    assert not e.purged("http://example.com/bar")


def test_host_is_exact_not_a_suffix() -> None:
    e = Engine()
    e.purge(Host("Example.com"))
    assert e.purged("http://example.com/")
    assert e.purged("https://example.com/a/b?c\x00dt=tablet")
    assert not e.purged("http://www.example.com/")
    assert not e.purged("http://notexample.com/")
    assert not e.purged("http://example.com:8080/")
    e.purge(Host("example.com:8080"))
    assert e.purged("http://example.com:8080/")


def test_url_primary_covers_all_variants() -> None:
    key = url_key("https://Example.com/a?b=1", KeyOptions())
    e = Engine()
    e.purge(Url(key))
    assert e.purged(key)
    assert e.purged(key + "\x00dt=mobile")
    assert e.purged(key + "\x00dt=desktop\x00cc=ES")
    assert not e.purged("https://example.com/a?b=2")
    assert not e.purged("http://example.com/a?b=1")  # other scheme, other URL
    assert not e.purged("https://example.com/a")


def test_url_variant_covers_only_that_variant() -> None:
    e = Engine()
    e.purge(Url("https://example.com/a\x00dt=mobile"))
    assert e.purged("https://example.com/a\x00dt=mobile")
    assert not e.purged("https://example.com/a\x00dt=desktop")
    assert not e.purged("https://example.com/a\x00dt=mobile\x00cc=ES")
    assert not e.purged("https://example.com/a")


def test_everything_covers_the_zone_only() -> None:
    e = Engine()
    e.purge(Everything())
    assert e.purged("http://a.com/")
    assert e.purged("https://b.com/x?y\x00dt=mobile", ("t",))
    assert not e.purged("http://a.com/", zone=OTHER)


def test_zones_are_isolated() -> None:
    e = Engine()
    e.purge(Url("http://a.com/"), Tag("t"), Host("a.com"), Prefix("a.com/"), zone=OTHER)
    assert not e.purged("http://a.com/", ("t",))
    assert e.purged("http://a.com/", ("t",), zone=OTHER)


def test_matches_rejects_other_zone() -> None:
    assert not matches(Everything(), Z, OTHER, "http://a.com/", ())
    assert matches(Everything(), Z, Z, "http://a.com/", ())


# --- verdicts -------------------------------------------------------------------------------------


def test_purge_covers_only_entries_stored_before_it() -> None:
    e = Engine()
    p = e.purge(Tag("t"))
    assert e.check("http://a.com/", ("t",), stored=p.seq - 1) == Verdict(True, p.seq, 0.0)
    # Stored at the purge's seq: the fetch started after the purge was accepted.
    assert e.check("http://a.com/", ("t",), stored=p.seq) is None


def test_soft_purge_is_stale_since_the_first_covering_soft_purge() -> None:
    e = Engine()
    p1 = e.purge(Tag("t"), mode=SOFT, at=100.0)
    e.purge(Host("a.com"), mode=SOFT, at=150.0)
    e.purge(Tag("t"), mode=SOFT, at=200.0)
    assert e.check("http://a.com/", ("t",), stored=0) == Verdict(False, p1.seq, 100.0)
    assert e.check("http://a.com/", ("t",), stored=1) == Verdict(False, 2, 150.0)
    assert e.check("http://a.com/", ("t",), stored=2) == Verdict(False, 3, 200.0)
    assert e.check("http://a.com/", ("t",), stored=3) is None


def test_hard_wins_over_soft() -> None:
    e = Engine()
    e.purge(Tag("t"), mode=SOFT, at=1.0)
    hard = e.purge(Prefix("a.com/x"), at=2.0)
    e.purge(Host("a.com"), mode=SOFT, at=3.0)
    assert e.check("http://a.com/x", ("t",)) == Verdict(True, hard.seq, 2.0)
    assert e.check("http://a.com/y", ("t",)) == Verdict(False, 1, 1.0)
    assert e.check("http://a.com/x", ("t",), stored=hard.seq) == Verdict(False, 3, 3.0)


def test_hard_verdict_reports_the_newest_hard_purge() -> None:
    e = Engine()
    e.purge(Tag("t"), at=1.0)
    e.purge(Url("http://a.com/"), at=2.0)
    assert e.check("http://a.com/", ("t",)) == Verdict(True, 2, 2.0)


def test_hard_purge_supersedes_older_soft_rows_of_its_scope() -> None:
    e = Engine()
    e.purge(Tag("t"), mode=SOFT)
    e.purge(Tag("t"), mode=SOFT)
    assert e.index.rows == 2
    e.purge(Tag("t"))
    assert e.index.rows == 1
    e.purge(Tag("t"), Tag("T"), mode=SOFT)  # the same scope twice in one purge is one row
    assert e.index.rows == 2


def test_nothing_newer_is_the_fast_answer() -> None:
    e = Engine()
    assert e.index.check(Z, "http://a.com/", (), 0) is None
    p = e.purge(Tag("t"))
    assert e.index.check(Z, "http://a.com/", ("t",), p.seq - 1) == Verdict(True, p.seq, 0.0)
    assert e.index.check(OTHER, "http://a.com/", ("t",), 0) is None
    assert e.index.check(Z, "http://a.com/", ("t",), p.seq) is None


def test_apply_rejects_out_of_order_purges() -> None:
    idx = EpochIndex()
    idx.apply(Purge(5, Z, D, (Tag("t"),), 0.0))
    with pytest.raises(ValueError):
        idx.apply(Purge(5, Z, D, (Tag("u"),), 0.0))
    with pytest.raises(ValueError):
        idx.apply(Purge(4, Z, D, (Tag("u"),), 0.0))
    idx.apply(Purge(9, OTHER, D, (Tag("u"),), 0.0))  # gaps are fine
    assert idx.position == 9


def test_apply_rejects_non_selectors() -> None:
    with pytest.raises(TypeError):
        EpochIndex().apply(Purge(1, Z, D, ("http://a.com/",), 0.0))  # type: ignore[arg-type]


# --- compaction -----------------------------------------------------------------------------------


def test_compaction_forgets_old_rows_and_prunes_the_trie() -> None:
    e = Engine()
    e.purge(Prefix("a.com/x/y/z"), Prefix("a.com/x/w"), Tag("t"), Host("a.com"), Url("http://a.com/"))
    e.purge(Prefix("a.com/x/y/q"), Everything(), mode=SOFT, at=5.0)
    assert e.index.rows == 7
    assert e.index.trie_nodes() == 3  # a.com, x, y
    assert e.index.compact(1) == 5
    assert e.index.rows == 2
    assert e.index.trie_nodes() == 3
    # An entry stored at the compaction point keeps its verdict; the older rows are gone.
    assert e.index.check(Z, "http://a.com/x/y/qq", (), 1) == Verdict(False, 2, 5.0)
    assert e.index.check(Z, "http://a.com/x/w", ("t",), 1) == Verdict(False, 2, 5.0)
    assert e.index.compact(2) == 2
    assert e.index.rows == len(e.index) == 0
    assert e.index.trie_nodes() == 0
    assert e.index.check(Z, "http://a.com/x/y/qq", (), 0) is None


def test_compaction_keeps_newer_soft_rows_of_a_scope() -> None:
    e = Engine()
    for at in (1.0, 2.0, 3.0):
        e.purge(Tag("t"), mode=SOFT, at=at)
    assert e.index.compact(2) == 2
    assert e.index.rows == 1
    assert e.index.check(Z, "http://a.com/", ("t",), 2) == Verdict(False, 3, 3.0)
    assert e.index.compact(2) == 0


# --- ledger ---------------------------------------------------------------------------------------


def test_ledger_numbers_purges_in_order() -> None:
    ledger = Ledger()
    assert ledger.position == 0
    p1 = ledger.append(Z, D, [Tag("a")], 1.0)
    p2 = ledger.append(OTHER, Mode("invalidate"), (Everything(),), 2.0)
    assert (p1.seq, p2.seq, ledger.position) == (1, 2, 2)
    assert p2.mode is SOFT
    assert ledger.since(0) == [p1, p2]
    assert ledger.since(1) == [p2]
    assert ledger.forget(1) == 1
    assert len(ledger) == 1
    assert ledger.position == 2


def test_ledger_takes_explicit_seqs_but_never_goes_back() -> None:
    ledger = Ledger(position=10)
    assert ledger.append(Z, D, [Tag("a")], 0.0, seq=12).seq == 12
    assert ledger.restore(Purge(15, Z, SOFT, (Tag("b"),), 0.0)).seq == 15
    for seq in (15, 14):
        with pytest.raises(ValueError):
            ledger.restore(Purge(seq, Z, SOFT, (Tag("b"),), 0.0))
        with pytest.raises(ValueError):
            ledger.append(Z, D, [Tag("a")], 0.0, seq=seq)
    assert ledger.position == 15
    assert ledger.append(Z, D, [Tag("a")], 0.0).seq == 16


def test_ledger_rejects_empty_purges() -> None:
    with pytest.raises(ValueError):
        Ledger().append(Z, D, [], 0.0)
    with pytest.raises(ValueError):
        Ledger(position=-1)
