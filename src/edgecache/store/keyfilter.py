"""The disk tier's negative filter: "this key cannot be on disk", so that a memory miss of a key
the node has never stored skips the disk read (decision 0020, addendum ``missfilter``).

Theory of operation:
- A Bloom filter of one byte per slot in an anonymous shared mapping (a ``memfd``) that every
  process of a node maps: the process that opens the node's disk tier first creates it,
  close-on-exec, and passes the descriptor explicitly to each child that maps it (a worker
  process: the supervisor's ``pass_fds``; a fill-writer child: ``--keys-fd``, with ``pass_fds``).
  A ``memfd`` lives exactly as long as the processes that hold it, so a node that starts always
  starts a new one (nothing a crashed run left can be trusted by mistake) and two nodes on one
  machine never meet.
- A slot is a byte, not a bit: setting it is a single byte store, which never undoes a store of
  another process to a neighbouring slot. Setting a bit would be a read-modify-write of its byte,
  which loses a concurrent writer's bit unless it is atomic, and Python has no atomic OR on a
  mapping. Eight times the memory buys that, without a C extension.
- A key sets two slots, chosen by the CRC-32 of its stored bytes (``key_bytes``: stable
  across processes, where Python's ``hash`` is not) and a multiplicative mix of it. Slots are only
  ever set while the node runs: a delete leaves its key "maybe", which costs a disk read, never a
  wrong answer.
- Every LMDB writer of the node sets a key's slots before the commit that stores anything under
  it (``DiskStore._announce``), so a key that may be committed is never answered "absent".
- The filter is trusted (``may_hold`` answers "absent" at all) only once the node's start has
  added every key already on disk and set :data:`_READY`; until then every key is "maybe". The
  writers set slots from the moment they open the store, so whatever they commit after the build's
  snapshot is in the filter too.
"""

from __future__ import annotations

import mmap
import os
import zlib
from collections.abc import Iterable

SLOTS_PER_KEY = 16
"""Slots sized per expected key, before rounding up to a power of two: at 16 to 32 slots per key,
a key's two slots answer "maybe" for a never-seen key 0.4-1.4% of the time when the expected number is
stored (``bench/key_filter.py`` measures it), up to ``MAX_SLOTS``."""
MIN_SLOTS = 1 << 20
"""At least 1 MiB of slots: a small budget's filter then stays near-empty for what little it costs."""
MAX_SLOTS = 1 << 26
"""At most 64 MiB of slots, whatever the budgets (shared memory that no budget counts): past 4 Mi
expected keys (8 GiB of budgets at ``RECORD_BYTES``) the false "maybe" rate rises instead, 4.9% at
8 Mi keys stored, 15% at 16 Mi (computed from the two-slot formula, not measured); it is never a
wrong answer, only a disk read."""
RECORD_BYTES = 2048
"""The mean record size the filter is sized for from the disk's budgets: smaller records fill the
budget with more keys, and only raise the false "maybe" rate (4.9% at twice the keys)."""
_HEADER = 64
_SLOTS_AT = 0
_READY = 8
_MIX = 0x9E3779B97F4A7C15
"""Knuth's multiplicative constant (2**64 / golden ratio): the second slot from the CRC's bits."""


def expected_keys(budget_bytes: int, stored: int) -> int:
    """The keys to size a node's filter for: ``budget_bytes`` (its disk budget and the budgets of
    the reserves on at its start) worth of ``RECORD_BYTES`` records, or twice the records on disk
    when they are more (a budget lowered since they were stored)."""
    return max(budget_bytes // RECORD_BYTES, 2 * stored)


def slots_for(expected_keys: int) -> int:
    """The number of slots for ``expected_keys`` keys: a power of two (a mask picks a slot), at most
    ``MAX_SLOTS``."""
    want = min(MAX_SLOTS, max(MIN_SLOTS, SLOTS_PER_KEY * expected_keys))
    return 1 << (want - 1).bit_length()


class KeyFilter:
    """One node's filter of the keys its disk tier may hold, in shared memory."""

    __slots__ = ("_map", "_mask", "_slots", "_trusted", "fd", "slots")

    def __init__(self, fd: int) -> None:
        """Map an existing filter (a worker or a fill writer does this with the descriptor its
        parent passed it)."""
        self.fd = fd
        size = os.fstat(fd).st_size
        self._map = mmap.mmap(fd, size)
        self.slots = int.from_bytes(self._map[_SLOTS_AT : _SLOTS_AT + 8], "little")
        self._mask = self.slots - 1
        self._slots = memoryview(self._map)[_HEADER : _HEADER + self.slots]
        self._trusted = False
        """Set once ``_READY`` was seen: it is never cleared while the node runs."""

    @classmethod
    def create(cls, expected_keys: int) -> KeyFilter:
        """A new empty, untrusted filter sized for ``expected_keys``; its descriptor is close-on-exec
        (a child that maps it is given it with ``pass_fds``)."""
        slots = slots_for(expected_keys)
        fd = os.memfd_create("edgecache-disk-keys")
        os.ftruncate(fd, _HEADER + slots)
        os.pwrite(fd, slots.to_bytes(8, "little"), _SLOTS_AT)
        return cls(fd)

    def add(self, kb: bytes | memoryview) -> None:
        """Note that a key (its stored bytes) may be on disk from now on: before its commit."""
        self.add_all((kb,))

    def add_all(self, kbs: Iterable[bytes | memoryview]) -> None:
        """Note that each key of ``kbs`` may be on disk from now on (a batch's, before its commit),
        in one call. The one place a key's slots are set (``may_hold`` reads the same two)."""
        mask, slots, crc32 = self._mask, self._slots, zlib.crc32
        for kb in kbs:
            h = crc32(kb)
            slots[h & mask] = 1
            slots[((h * _MIX) >> 32) & mask] = 1

    def may_hold(self, kb: bytes) -> bool:
        """False only when no record of the key (its stored bytes) can be on disk."""
        if not self._trusted:
            if not self._map[_READY]:
                return True
            self._trusted = True
        h = zlib.crc32(kb)
        mask, slots = self._mask, self._slots
        return bool(slots[h & mask]) and bool(slots[((h * _MIX) >> 32) & mask])

    @property
    def ready(self) -> bool:
        """Whether the keys on disk at the node's start are all in (the filter is trusted)."""
        return bool(self._map[_READY])

    def set_ready(self) -> None:
        """Trust the filter from now on, in every process (the start's build is done)."""
        self._map[_READY] = 1

    def close(self) -> None:
        """Unmap the filter and close this process's descriptor."""
        self._slots.release()
        self._map.close()
        os.close(self.fd)
