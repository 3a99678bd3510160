from collections.abc import Callable
from typing import TypeVar

from edgecache.store.entry import Entry

_T = TypeVar("_T")

class Links:
    """The memory tier's index bookkeeping of a put and a removal, over the tier's containers."""

    def __init__(
        self,
        entries: dict[str, Entry],
        keys: object,
        zones: dict[str, dict[str, int]],
        zones_of_range: dict[str, int],
        with_variants: dict[str, int],
        tags: dict[str, dict[str, _T]],
        shards: Callable[[set[str]], object],
        shard_at: int,
        host_start: int,
        variant_sep: str,
        /,
    ) -> None: ...
    def link(self, entry: Entry, /) -> None:
        """Add ``entry`` to the entries' dict and every index (it is not stored yet)."""
    def unlink(self, entry: Entry, /) -> None:
        """Remove ``entry`` from the entries' dict and every index (it is stored)."""
