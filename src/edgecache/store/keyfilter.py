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
- A key sets two slots, two bit ranges of the CRC-32 of its stored bytes (``key_bytes``: stable
  across processes, where Python's ``hash`` is not) times a multiplicative constant. Slots are only
  ever set while the node runs: a delete leaves its key "maybe", which costs a disk read, never a
  wrong answer.
- Every LMDB writer of the node sets a key's slots before the commit that stores anything under
  it (``DiskStore._announce``), so a key that may be committed is never answered "absent".
- The filter is trusted (``may_hold`` answers "absent" at all) only once the node's start has
  added every key already on disk and set :data:`_READY`; until then every key is "maybe". The
  writers set slots from the moment they open the store, so whatever they commit after the build's
  snapshot is in the filter too.
- Deletes never clear a slot, so a node whose disk churns would see the "maybe" rate climb until
  every miss reads the disk. The mapping holds two halves: readers use the active one while the
  node's first process rebuilds the other from the keys on disk, then swaps them
  (``begin_rebuild``, ``end_rebuild``). One byte, :data:`_GEN`, says which half is active and
  whether a rebuild runs: its low bit is set while one does (writers then set their keys' slots in
  both halves), the next bit names the active half. A writer announces at one generation and
  commits later: ``DiskStore`` looks at the generation again inside its write transaction and
  announces once more if it moved, and a rebuild waits for the write transaction in progress when
  it began before it reads the disk, so a key committed during the swap is in the new half too.
"""

from __future__ import annotations

import math
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
"""At most 64 MiB of slots (twice that for the two halves), whatever the budgets (shared memory
that no budget counts): past 4 Mi expected keys (8 GiB of budgets at ``RECORD_BYTES``) the false
"maybe" rate rises instead, 4.9% at 8 Mi keys stored, 15% at 16 Mi (computed from the two-slot
formula, not measured); it is never a wrong answer, only a disk read."""
RECORD_BYTES = 2048
"""The mean record size the filter is sized for from the disk's budgets: smaller records fill the
budget with more keys, and only raise the false "maybe" rate (4.9% at twice the keys)."""
_HEADER = 64
_SLOTS_AT = 0
_READY = 8
_GEN = 9
"""The generation byte: bit 0 set while a rebuild runs, bit 1 the active half (module docstring)."""
REBUILD_AT = 0.25
"""Rebuild when a quarter of the active half's slots are set: a never-stored key is then answered
"maybe" ~6% of the time, against ~1.4% when the expected keys are in a fresh filter."""
_SAMPLES = 64
_SAMPLE_BYTES = 4096
_CLEAR_STEP = 1 << 20
_MIX = 0x9E3779B97F4A7C15
"""Knuth's multiplicative constant (2**64 / golden ratio): the CRC times it gives both slots, from
bits 32 and 58 of the product (at most 26 bits each). CRC-32 is linear: the CRCs of URLs that
differ only in a counter (``/obj/000123``) fall in a few patterns in their low bits, and with the
first slot taken from those bits as they are, the false "maybe" rate of such keys strayed from
the fill's square (``bench/key_filter.py``, 200k stored ``/obj/00000123`` keys in 16 Mi slots:
0.32% against the square's 0.06%); from the product it stays at the square (0.04%), which is what
the rebuild's trigger assumes (decision 0020, addendum "rebuild")."""


def expected_keys(budget_bytes: int, stored: int) -> int:
    """The keys to size a node's filter for: ``budget_bytes`` (its disk budget and the budgets of
    the reserves on at its start) worth of ``RECORD_BYTES`` records, or twice the records on disk
    when they are more (a budget lowered since they were stored)."""
    return max(budget_bytes // RECORD_BYTES, 2 * stored)


def expected_fill(keys: int, slots: int) -> float:
    """The share of ``slots`` slots that ``keys`` keys set, two each, on average."""
    return 1 - math.exp(-2 * keys / slots)


def slots_for(expected_keys: int) -> int:
    """The number of slots for ``expected_keys`` keys: a power of two (a mask picks a slot), at most
    ``MAX_SLOTS``."""
    want = min(MAX_SLOTS, max(MIN_SLOTS, SLOTS_PER_KEY * expected_keys))
    return 1 << (want - 1).bit_length()


class KeyFilter:
    """One node's filter of the keys its disk tier may hold, in shared memory."""

    __slots__ = ("_halves", "_map", "_mask", "_trusted", "fd", "slots")

    def __init__(self, fd: int) -> None:
        """Map an existing filter (a worker or a fill writer does this with the descriptor its
        parent passed it)."""
        self.fd = fd
        size = os.fstat(fd).st_size
        self._map = mmap.mmap(fd, size)
        self.slots = int.from_bytes(self._map[_SLOTS_AT : _SLOTS_AT + 8], "little")
        self._mask = self.slots - 1
        whole = memoryview(self._map)
        self._halves = (
            whole[_HEADER : _HEADER + self.slots],
            whole[_HEADER + self.slots : _HEADER + 2 * self.slots],
        )
        whole.release()
        self._trusted = False
        """Set once ``_READY`` was seen: it is never cleared while the node runs."""

    @classmethod
    def create(cls, expected_keys: int) -> KeyFilter:
        """A new empty, untrusted filter sized for ``expected_keys``; its descriptor is close-on-exec
        (a child that maps it is given it with ``pass_fds``)."""
        slots = slots_for(expected_keys)
        fd = os.memfd_create("edgecache-disk-keys")
        os.ftruncate(fd, _HEADER + 2 * slots)
        os.pwrite(fd, slots.to_bytes(8, "little"), _SLOTS_AT)
        return cls(fd)

    @property
    def generation(self) -> int:
        """The generation byte now: a writer that announced at one value looks again inside its
        write transaction, and announces once more if it moved."""
        return self._map[_GEN]

    def add(self, kb: bytes | memoryview) -> None:
        """Note that a key (its stored bytes) may be on disk from now on: before its commit."""
        self.add_all((kb,))

    def add_all(self, kbs: Iterable[bytes | memoryview]) -> int:
        """Note that each key of ``kbs`` may be on disk from now on (a batch's, before its commit),
        in one call; the generation they were added at. The one place a key's slots are set
        (``may_hold`` reads the same two): in the active half, and in the other one too while a
        rebuild runs."""
        gen = self._map[_GEN]
        mask, crc32 = self._mask, zlib.crc32
        active = self._halves[(gen >> 1) & 1]
        if gen & 1:
            other = self._halves[((gen >> 1) & 1) ^ 1]
            for kb in kbs:
                h = crc32(kb) * _MIX
                a, b = (h >> 32) & mask, (h >> 58) & mask
                active[a] = active[b] = other[a] = other[b] = 1
        else:
            for kb in kbs:
                h = crc32(kb) * _MIX
                active[(h >> 32) & mask] = 1
                active[(h >> 58) & mask] = 1
        return gen

    def may_hold(self, kb: bytes) -> bool:
        """False only when no record of the key (its stored bytes) can be on disk."""
        m = self._map
        if not self._trusted:
            if not m[_READY]:
                return True
            self._trusted = True
        gen = m[_GEN]
        h = zlib.crc32(kb) * _MIX
        mask, slots = self._mask, self._halves[(gen >> 1) & 1]
        if slots[(h >> 32) & mask] and slots[(h >> 58) & mask]:
            return True
        # A swap between reading the generation and the slots: the half read may lack a key that a
        # writer announced in the new half only and has committed since.
        return m[_GEN] != gen

    @property
    def ready(self) -> bool:
        """Whether the keys on disk at the node's start are all in (the filter is trusted)."""
        return bool(self._map[_READY])

    def set_ready(self) -> None:
        """Trust the filter from now on, in every process (the start's build is done)."""
        self._map[_READY] = 1

    def fill(self) -> float:
        """The share of the active half's slots that are set, sampled at ``_SAMPLES`` evenly spaced
        places (4 KiB each): the "maybe" rate of a never-stored key is about its square."""
        slots = self._halves[(self._map[_GEN] >> 1) & 1]
        width = min(_SAMPLE_BYTES, self.slots)
        step = max(width, self.slots // _SAMPLES)
        starts = range(0, self.slots - width + 1, step)
        ones = sum(slots[at : at + width].tobytes().count(1) for at in starts)
        return ones / (width * len(starts))

    def begin_rebuild(self) -> None:
        """Clear the inactive half and have writers set their keys in both halves from now on. Only
        one process of a node (the one that built the filter at the start) rebuilds it."""
        gen = self._map[_GEN]
        if gen & 1:
            raise RuntimeError("a rebuild of the key filter is already running")
        other = self._halves[((gen >> 1) & 1) ^ 1]
        zeros = bytes(min(_CLEAR_STEP, self.slots))
        for at in range(0, self.slots, len(zeros)):
            other[at : at + len(zeros)] = zeros
        self._map[_GEN] = (gen + 1) & 0xFF

    def end_rebuild(self) -> None:
        """Make the rebuilt half the active one: every key on disk is in it (``begin_rebuild``'s
        caller added them)."""
        gen = self._map[_GEN]
        if not gen & 1:
            raise RuntimeError("no rebuild of the key filter is running")
        self._map[_GEN] = (gen + 1) & 0xFF

    def abandon_rebuild(self) -> None:
        """Give up a rebuild: the active half stays, writers set it alone again. The generation
        moves on (to the next value naming the same half), so a writer that announced during the
        rebuild still sees a change."""
        gen = self._map[_GEN]
        if not gen & 1:
            raise RuntimeError("no rebuild of the key filter is running")
        self._map[_GEN] = (gen + 3) & 0xFF

    def close(self) -> None:
        """Unmap the filter and close this process's descriptor."""
        for half in self._halves:
            half.release()
        self._map.close()
        os.close(self.fd)
