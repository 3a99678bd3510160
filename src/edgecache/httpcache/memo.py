"""Bounded memos: a parse result remembered per input, for inputs that repeat (field values an
origin sends on every response).

A memo is a plain dict owned by its caller, which decides which inputs are short enough to keep.
When it holds ``limit`` entries it is emptied before the next one is added, so a stream of distinct
inputs (an origin, a client) cannot grow it; the results it holds must be immutable, since every
caller that parses the same input shares them.

Used by ``cachecontrol`` (its Cache-Control and CDN-Cache-Control memos) and ``tags``; public so
that a parser outside ``httpcache`` can keep a memo the same way.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(memo: dict[K, V], key: K, value: V, limit: int) -> None:
    """Keep ``value`` under ``key`` in ``memo``, emptying ``memo`` first when it holds ``limit`` entries."""
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
