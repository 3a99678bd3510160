"""The epoch index: is a stored entry still valid, given every purge accepted since it was fetched?

Rules of this module:
- Sequence numbers come from the ledger (``edgecache.purge.ledger``). An entry's ``stored_seq`` is the
  ledger position when its origin fetch started, i.e. the seq of the last purge accepted before the
  fetch began. A purge with seq S therefore covers entries with ``stored_seq < S`` and never one with
  ``stored_seq >= S`` (that entry was fetched after the purge was accepted).
- Per zone, the index keeps one *scope* per thing a selector can name: everything, each host, each
  tag, each (host, tag) pair of a host-scoped tag, each URL key (primary or full variant key), each
  prefix. A scope holds the latest hard seq
  (with its time) and the soft (seq, at) pairs newer than that hard seq. Each of those is one *row*.
  A hard purge of a scope drops its older soft rows: any entry they cover is covered by the hard one.
- Soft rows are kept as a list, not just the latest, because staleness counts from the *first* soft
  purge that covered the entry: an entry stored at 3 and soft-purged by tag at 5 (t=100) and again at
  8 (t=200) has been stale since t=100. The list is sorted by seq (purges are applied in seq order),
  so finding the first soft row after ``stored_seq`` is a bisect.
- Prefixes live in a trie per (zone, host): one node per full path segment, and at each node a dict
  of the *partial* last segments of the prefixes ending there. An entry path's segment ``s`` at that
  depth is covered by every partial ``p`` with ``s.startswith(p)``; the node keeps, per first
  character, the distinct lengths of its partials, so the test is a few dict look-ups of ``s[:len]``
  (at most ``len(s)``, usually none) rather than a scan of the siblings. This gives string-prefix
  semantics (``/bar`` covers ``/barbaz``) at segment-walk cost. The path is read from the key as
  ``key.py`` builds it (``scheme://host/path``, always with a "/" after the host).
- ``apply`` costs O(selectors + prefix lengths), amortised (a hard purge frees the soft rows it
  supersedes, each of which was paid for when added). ``check`` costs O(tags + path depth) dict
  look-ups plus a bisect per covering scope, whatever the cache size or number of purges, and returns
  at once when the zone has nothing newer than ``stored_seq`` (the common case on a hit).
- Verdict: ``hard`` when any covering hard purge is newer than ``stored_seq`` (``seq``/``at`` are the
  newest such purge's); otherwise, when some covering soft purge is newer, the oldest such one
  (``seq``/``at`` of the first purge that made the entry stale); otherwise None.
- A None verdict holds for every purge applied so far: after ``check`` returned None, a caller may
  treat the entry as if stored at ``position`` (checked up to there), which keeps later checks on
  the fast path, even while old rules are outstanding, until the next purge.
- ``compact(upto)`` forgets every row with seq <= upto. Such a row only covers entries with
  ``stored_seq < upto``; the reclaimer calls it once those entries have been dealt with (deleted or
  marked stale) and no fetch that started before ``upto`` is in flight. Verdicts of entries with
  ``stored_seq >= upto`` are unchanged; older entries see only the purges after ``upto``. Compaction
  walks the purges being forgotten (kept in seq order), so it costs O(their selectors), not O(index).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from typing import NamedTuple

from edgecache.purge.selectors import Everything, Host, Mode, Prefix, Purge, Tag, Url

_NUL = "\x00"


class Verdict(NamedTuple):
    """A purge newer than the entry covers it.

    A named tuple rather than a frozen dataclass: it is built on the hit path, and a frozen
    dataclass's ``__init__`` costs several times more.
    """

    hard: bool
    """True: the entry must be treated as deleted. False: it is stale since ``at``."""
    seq: int
    at: float


class _Scope:
    """The rows of one thing a selector names (a tag, a host, ...)."""

    __slots__ = ("hard_at", "hard_seq", "soft_ats", "soft_seqs", "top")

    def __init__(self) -> None:
        self.hard_seq = 0  # 0: no hard row (sequence numbers start at 1)
        self.hard_at = 0.0
        # Created on the first soft purge only: most scopes are purged once, and two empty lists
        # per scope would double the memory of a hard-only index.
        self.soft_seqs: list[int] | None = None
        self.soft_ats: list[float] | None = None
        self.top = 0  # the newest seq of any row here, to skip the scope with one comparison

    def add(self, seq: int, at: float, hard: bool) -> int:
        """Record a purge; returns the change in the number of rows."""
        self.top = seq
        if hard:
            delta = 0 if self.hard_seq else 1
            if self.soft_seqs:
                delta -= len(self.soft_seqs)
            self.hard_seq, self.hard_at = seq, at
            self.soft_seqs = self.soft_ats = None
            return delta
        if self.soft_seqs is None or self.soft_ats is None:
            self.soft_seqs, self.soft_ats = [seq], [at]
            return 1
        if self.soft_seqs[-1] == seq:  # the same selector twice in one purge
            return 0
        self.soft_seqs.append(seq)
        self.soft_ats.append(at)
        return 1

    def drop(self, upto: int) -> int:
        """Forget rows with seq <= upto; returns how many went."""
        removed = 0
        if 0 < self.hard_seq <= upto:
            self.hard_seq = 0
            removed = 1
        if self.soft_seqs is not None and self.soft_ats is not None:
            n = bisect_right(self.soft_seqs, upto)
            if n:
                removed += n
                if n == len(self.soft_seqs):
                    self.soft_seqs = self.soft_ats = None
                else:
                    del self.soft_seqs[:n]
                    del self.soft_ats[:n]
        return removed

    @property
    def empty(self) -> bool:
        return self.hard_seq == 0 and self.soft_seqs is None


class _Node:
    """A prefix-trie node: children by full segment, scopes by partial last segment."""

    __slots__ = ("children", "empty", "len_count", "lens", "partials")

    def __init__(self) -> None:
        # Until first written, the dicts are shared read-only empties: most nodes are leaves or pure
        # path steps, and four private empty dicts would triple the memory of such a node.
        self.children: dict[str, _Node] = _NO_CHILDREN
        self.partials: dict[str, _Scope] = _NO_PARTIALS
        self.empty: _Scope | None = None  # the "" partial (a prefix ending in "/"): covers any segment
        # First character of a partial -> sorted distinct lengths of the partials starting with it. A
        # segment is tested only against the lengths of its own first character: siblings that share
        # no first letter with it (the usual case) cost one look-up in all.
        self.lens: dict[str, tuple[int, ...]] = _NO_LENS
        # How many partials have each (first character, length), so adding or removing one costs
        # O(distinct lengths), not O(partials): a node may hold a million sibling prefixes.
        self.len_count: dict[tuple[str, int], int] = _NO_COUNTS

    def child(self, seg: str) -> _Node:
        """The child for a full segment, created if missing."""
        node = self.children.get(seg)
        if node is None:
            if self.children is _NO_CHILDREN:
                self.children = {}
            node = self.children[seg] = _Node()
        return node

    def remove_child(self, seg: str) -> None:
        del self.children[seg]
        if not self.children:
            self.children = _NO_CHILDREN

    def add_partial(self, partial: str) -> _Scope:
        if self.partials is _NO_PARTIALS:
            self.partials, self.lens, self.len_count = {}, {}, {}
        scope = self.partials[partial] = _Scope()
        if not partial:
            self.empty = scope
            return scope
        slot = (partial[0], len(partial))
        count = self.len_count.get(slot, 0)
        self.len_count[slot] = count + 1
        if not count:
            self.lens[partial[0]] = tuple(sorted((*self.lens.get(partial[0], ()), len(partial))))
        return scope

    def remove_partial(self, partial: str) -> None:
        del self.partials[partial]
        if not partial:
            self.empty = None
        else:
            c, n = partial[0], len(partial)
            count = self.len_count[(c, n)] - 1
            if count:
                self.len_count[(c, n)] = count
            else:
                del self.len_count[(c, n)]
                rest = tuple(x for x in self.lens[c] if x != n)
                if rest:
                    self.lens[c] = rest
                else:
                    del self.lens[c]
        if not self.partials:
            self.partials, self.lens, self.len_count = _NO_PARTIALS, _NO_LENS, _NO_COUNTS


_NO_CHILDREN: dict[str, _Node] = {}
_NO_PARTIALS: dict[str, _Scope] = {}
_NO_LENS: dict[str, tuple[int, ...]] = {}
_NO_COUNTS: dict[tuple[str, int], int] = {}


class _Zone:
    __slots__ = ("everything", "host_tags", "hosts", "last_seq", "rows", "tags", "trie", "urls")

    def __init__(self) -> None:
        self.last_seq = 0  # newest purge applied to this zone
        self.rows = 0
        self.everything: _Scope | None = None
        self.hosts: dict[str, _Scope] = {}
        self.tags: dict[str, _Scope] = {}
        self.host_tags: dict[str, dict[str, _Scope]] = {}  # host -> tag -> scope (Tag with a host)
        self.urls: dict[str, _Scope] = {}
        self.trie: dict[str, _Node] = {}  # host -> root node (host is matched exactly)


def _split_prefix(prefix: str) -> tuple[str, list[str], str]:
    """``host/a/b/par`` -> ("host", ["a", "b"], "par"): host, full segments, partial last segment."""
    host, _, path = prefix.partition("/")
    segs = path.split("/")
    return host, segs[:-1], segs[-1]


class EpochIndex:
    """Latest purge epochs per zone and scope; answers :meth:`check` on every cache hit."""

    __slots__ = ("_log", "_rows", "_zones", "position")

    def __init__(self, position: int = 0) -> None:
        """``position``: the ledger position to start from (a restarted node numbers on from it)."""
        self._zones: dict[str, _Zone] = {}
        self._rows = 0
        self.position = position
        """Seq of the last purge applied (0 when none); read-only outside this class. A plain slot, not
        a property: every cache hit compares against it, and a property read is a Python call."""
        # Applied purges in seq order, so compaction visits exactly the scopes it can shrink.
        self._log: deque[Purge] = deque()

    @property
    def rows(self) -> int:
        """Live epoch rows (a scope's hard epoch, or one soft epoch), for metrics and benchmarks."""
        return self._rows

    def __len__(self) -> int:
        return self._rows

    # --- apply --------------------------------------------------------------------------------------

    def apply(self, purge: Purge) -> None:
        """Record a purge; O(len(selectors) + prefix lengths), independent of entries and history.

        Purges must be applied in seq order (ValueError otherwise): rows are kept sorted by seq.
        """
        seq = purge.seq
        if seq <= self.position:
            raise ValueError(f"purge seq {seq} is not after index position {self.position}")
        z = self._zones.get(purge.zone)
        if z is None:
            z = self._zones[purge.zone] = _Zone()
        hard = purge.mode is Mode.DELETE
        delta = 0
        for sel in purge.selectors:
            delta += _scope_for(z, sel).add(seq, purge.at, hard)
        z.rows += delta
        self._rows += delta
        z.last_seq = seq
        self.position = seq
        self._log.append(purge)

    # --- check (the hit path) ---------------------------------------------------------------------

    def check(self, zone: str, key: str, tags: tuple[str, ...], stored_seq: int) -> Verdict | None:
        """The newest-purge verdict for an entry, or None when no purge after ``stored_seq`` covers it.

        ``key`` is the entry's full cache key, ``tags`` its normalised tags, ``stored_seq`` the ledger
        position when its origin fetch started.
        """
        z = self._zones.get(zone)
        if z is None or z.last_seq <= stored_seq:
            return None
        return _check_zone(z, key, tags, stored_seq)

    # --- compact ----------------------------------------------------------------------------------

    def compact(self, upto_seq: int, max_purges: int | None = None) -> int:
        """Forget every row with seq <= ``upto_seq``; returns how many rows went.

        With ``max_purges``, only the rows of that many of the oldest purges (and any row of a later
        one with seq <= ``upto_seq`` that shares their scopes): call again while ``compactable``, so
        that a long backlog is forgotten in slices.

        Call only once every entry those purges matched has been removed or marked stale and no origin
        fetch that started before ``upto_seq`` is still in flight (see the module rules).
        """
        removed = 0
        log = self._log
        left = len(log) if max_purges is None else max_purges
        while log and log[0].seq <= upto_seq and left > 0:
            left -= 1
            purge = log.popleft()
            z = self._zones.get(purge.zone)
            if z is None:
                continue  # an earlier popped purge already emptied the zone
            n = 0
            for sel in purge.selectors:
                n += _drop(z, sel, upto_seq)
            z.rows -= n
            removed += n
            if z.rows == 0:
                # Every row of the zone had seq <= upto: restore the instant "nothing newer" answer.
                del self._zones[purge.zone]
        self._rows -= removed
        return removed

    def compactable(self, upto_seq: int) -> bool:
        """Whether some purge with seq <= ``upto_seq`` still has its rows here."""
        return bool(self._log) and self._log[0].seq <= upto_seq

    def trie_nodes(self) -> int:
        """Number of prefix-trie nodes (for metrics and tests; walks the tries)."""
        count = 0
        stack = [node for z in self._zones.values() for node in z.trie.values()]
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(node.children.values())
        return count


def _scope_for(z: _Zone, sel: object) -> _Scope:
    """The scope a selector names, created if missing."""
    match sel:
        case Tag(tag=t, host=None):
            table, name = z.tags, t
        case Tag(tag=t, host=str(h)):
            table, name = z.host_tags.setdefault(h, {}), t
        case Url(key=k):
            table, name = z.urls, k
        case Host(host=h):
            table, name = z.hosts, h
        case Prefix(prefix=p):
            host, full, partial = _split_prefix(p)
            node = z.trie.get(host)
            if node is None:
                node = z.trie[host] = _Node()
            for seg in full:
                node = node.child(seg)
            scope = node.partials.get(partial)
            return node.add_partial(partial) if scope is None else scope
        case Everything():
            if z.everything is None:
                z.everything = _Scope()
            return z.everything
        case _:
            raise TypeError(f"not a selector: {sel!r}")
    scope = table.get(name)
    if scope is None:
        scope = table[name] = _Scope()
    return scope


def _drop(z: _Zone, sel: object, upto: int) -> int:
    """Forget a selector's rows with seq <= upto, removing its scope (and trie nodes) once empty."""
    match sel:
        case Tag(tag=t, host=None):
            table, name = z.tags, t
        case Tag(tag=t, host=str(h)):
            by_tag = z.host_tags.get(h)
            if by_tag is None:
                return 0
            n = _drop_named(by_tag, t, upto)
            if not by_tag:
                del z.host_tags[h]
            return n
        case Url(key=k):
            table, name = z.urls, k
        case Host(host=h):
            table, name = z.hosts, h
        case Prefix(prefix=p):
            return _drop_prefix(z, p, upto)
        case Everything():
            if z.everything is None:
                return 0
            n = z.everything.drop(upto)
            if z.everything.empty:
                z.everything = None
            return n
        case _:
            raise TypeError(f"not a selector: {sel!r}")
    return _drop_named(table, name, upto)


def _drop_named(table: dict[str, _Scope], name: str, upto: int) -> int:
    scope = table.get(name)
    if scope is None:
        return 0
    n = scope.drop(upto)
    if scope.empty:
        del table[name]
    return n


def _drop_prefix(z: _Zone, prefix: str, upto: int) -> int:
    host, full, partial = _split_prefix(prefix)
    node = z.trie.get(host)
    if node is None:
        return 0
    path = [node]
    for seg in full:
        child = node.children.get(seg)
        if child is None:
            return 0
        node = child
        path.append(node)
    scope = node.partials.get(partial)
    if scope is None:
        return 0
    n = scope.drop(upto)
    if scope.empty:
        node.remove_partial(partial)
        # Prune nodes left with neither partials nor children, deepest first.
        for depth in range(len(path) - 1, -1, -1):
            nd = path[depth]
            if nd.partials or nd.children:
                break
            if depth == 0:
                del z.trie[host]
            else:
                path[depth - 1].remove_child(full[depth - 1])
    return n


def _check_zone(z: _Zone, key: str, tags: tuple[str, ...], stored: int) -> Verdict | None:
    """The slow path of :meth:`EpochIndex.check`: something in the zone is newer than ``stored``."""
    found: list[_Scope] = []
    s = z.everything
    if s is not None and s.top > stored:
        found.append(s)
    nul = key.find(_NUL)
    primary = key if nul < 0 else key[:nul]
    if z.urls:
        s = z.urls.get(key)
        if s is not None and s.top > stored:
            found.append(s)
        if nul >= 0:
            s = z.urls.get(primary)
            if s is not None and s.top > stored:
                found.append(s)
    if z.tags:
        zt = z.tags
        for t in tags:
            s = zt.get(t)
            if s is not None and s.top > stored:
                found.append(s)
    if z.hosts or z.trie or z.host_tags:
        # "scheme://host/p1/p2?query": cut the query, then one split gives ["scheme:", "", host, p1, p2]
        # (the fewest string operations; a "/" inside the query or a variant part is cut off first).
        q = primary.find("?")
        parts = (primary if q < 0 else primary[:q]).split("/")
        host = parts[2]
        by_tag = z.host_tags.get(host) if tags and z.host_tags else None
        if by_tag is not None:
            for t in tags:
                s = by_tag.get(t)
                if s is not None and s.top > stored:
                    found.append(s)
        if z.hosts:
            s = z.hosts.get(host)
            if s is not None and s.top > stored:
                found.append(s)
        node = z.trie.get(host)
        if node is not None:
            for seg in parts[3:]:
                if node.partials:
                    s = node.empty
                    if s is not None and s.top > stored:
                        found.append(s)
                    lens = node.lens.get(seg[:1])
                    if lens is not None:
                        partials = node.partials
                        n = len(seg)
                        for length in lens:
                            if length > n:
                                break
                            s = partials.get(seg[:length])
                            if s is not None and s.top > stored:
                                found.append(s)
                nxt = node.children.get(seg)
                if nxt is None:
                    break
                node = nxt
    if not found:
        return None
    return _verdict(found, stored)


def _verdict(found: list[_Scope], stored: int) -> Verdict | None:
    hard_seq = 0
    hard_at = 0.0
    soft_seq = 0
    soft_at = 0.0
    for s in found:
        if s.hard_seq > stored and s.hard_seq > hard_seq:
            hard_seq, hard_at = s.hard_seq, s.hard_at
        seqs = s.soft_seqs
        if seqs is not None and s.soft_ats is not None and seqs[-1] > stored:
            i = bisect_right(seqs, stored)  # the first soft row of this scope newer than the entry
            if soft_seq == 0 or seqs[i] < soft_seq:
                soft_seq, soft_at = seqs[i], s.soft_ats[i]
    if hard_seq:
        return Verdict(True, hard_seq, hard_at)
    if soft_seq:
        return Verdict(False, soft_seq, soft_at)
    return None
