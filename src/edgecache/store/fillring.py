"""The fill ring: a shared-memory ring of encoded disk records, from one data-plane process (the
event loop, which appends) to its fill-writer process (which writes them to LMDB): decision 0020.

Theory of operation:
- One file (on tmpfs when the machine has one), mapped by both processes: a 256-byte header and a
  data area of ``capacity`` bytes (a power of two). Positions are absolute byte counts that only
  grow; a position's place in the data area is ``pos & (capacity - 1)``. Every header word has
  one writer: the appender (``head``, ``appended``), the data-plane process's disk writer thread
  (``urgent``: :meth:`FillRing.want`), its fill-writer supervisor (``closing``), or the fill
  writer (``committed``, ``done``, its counters, ``started``, ``asleep``); ``committed`` and
  ``done`` also the supervisor, only while no fill writer runs (:meth:`FillRing.skip`).
- A record is a 12-byte head (length, CRC-32C of the payload, a flags byte) and the payload,
  padded to 16 bytes: a fill's record as ``encode_entry`` makes it (what LMDB stores; with
  ``RESERVE_FLAG`` it goes to its zone's reserve too), or, with ``VARY_FLAG``, a base key's Vary
  field names (:func:`encode_vary`), written in the same transaction as the fill before them
  (decision 0020's addendum on Vary fills). A record that would cross the end of the area is
  preceded by a wrap mark (length ``_WRAP``) and starts at the beginning.
- The format's version is ``MAGIC``'s last byte: 2 since the check became CRC-32C (1 had zlib's
  CRC-32; ``VARY_FLAG`` did not change it: an older reader meets flags 0 and 1 only). A ring
  lives as long as the process that created it, so the two sides differ only when the package
  is upgraded under a running node and its fill writer restarts: a fill writer refuses a ring
  of another version (:meth:`FillRing.open` raises ``ValueError`` naming both, the child exits,
  its supervisor counts the fills dropped and starts it again, to the same refusal, until the
  node restarts), as version 1's refuses version 2's (``MAGIC`` differs: "not a fill ring"),
  and the C appender refuses to append to one: no side misreads the other's records.
- The appender is ``_fillring.Appender`` (C: it encodes an entry's record straight into the
  ring, decision 0020's addendum); :class:`PyAppender` writes the same bytes in Python, for the
  tests and for the fill writer's side, which never appends. Both sides' CRC-32C is
  ``_fillring``'s (SSE 4.2's instruction, else tables): the extension is needed, as the other
  C extensions of the package are.
- The appender never waits: a record that does not fit in what the fill writer has not yet
  committed is refused (the caller counts it as dropped: a cache may drop a fill). It writes the
  record, then ``head`` (one aligned store). The reader checks each record's CRC before it
  trusts it: on a CPU that reorders stores (ARM, POWER) Python's copies have no fence, so a record
  seen before its bytes fails the check and is read again later.
- The fill writer publishes ``committed`` (the position up to which every record is committed to
  LMDB, or dropped by the store's rules) after the transaction that wrote them: whoever must
  order a change after the fills queued so far waits for ``committed`` to pass the ``head`` it saw
  (``store/disk.py``'s fences), and sets ``urgent`` so the writer does not wait for more fills:
  :meth:`FillRing.want` also writes the wake eventfd, which ends the fill writer's wait for more
  fills (:meth:`FillRing.doze`) at once. After each commit (and each :meth:`FillRing.skip`) the
  fill writer writes a second eventfd (``done_fd``, inherited too), on which such a waiter sleeps
  (:meth:`FillRing.await_commit`) instead of polling ``committed``: a write per commit, hundreds
  of fills each, and no store ordering to get wrong (the waiter reads ``committed`` after it).
  A fill writer started by an older appender, which has no ``done_fd`` (it polls ``committed``),
  is given none (-1) and writes nothing there.
- An idle fill writer sets ``asleep`` and waits on an eventfd (``wake_fd``, inherited): the
  appending process writes to it after a record when the append found ``asleep`` set, so a fill
  after a quiet spell is not left waiting for a poll, and an idle fill writer costs nothing. An
  entry's append (``append_entry``) only reports it: the event loop writes the eventfd at the
  end of its turn, after the answers of that turn went out, so that the woken fill writer does
  not take the CPU from a lone miss's answer (``store/disk.py``'s ``_wake_later``). The writer
  thread writes to it too, with ``urgent``, and the supervisor with ``closing``. Both sides store
  their word and then read the other's; a CPU may reorder that (x86 does), so a wake can be
  missed: the fill writer's wait has a timeout (``edge/fillwriter.py``'s ``IDLE_MAX``).
- Records appended but not committed when the fill writer dies (or hangs, and is killed) are
  skipped and counted by the supervisor before it starts the next one (:meth:`FillRing.skip`);
  the next resumes at ``committed``. A record whose CRC never matches (its bytes were damaged)
  is given up by the fill writer with every record up to ``head`` (:meth:`FillRing.settled`).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import select
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from edgecache.store._fillring import Appender, checked, crc32c
from edgecache.store.disk_layout import encode_entry
from edgecache.store.entry import Entry

MAGIC = b"ECFILL\x00\x02"
HEADER_SIZE = 256
DEFAULT_CAPACITY = 16 << 20
_Q = struct.Struct("<Q")
_REC = struct.Struct("<IIB3x")
_REC_SIZE = 12
SETTLE = 0.005
"""Seconds between the two reads of ``head`` and ``appended`` that must agree (``settled``): far
longer than an append takes between its two stores."""
RESERVE_FLAG = 1
"""Record flag: the fill goes to its zone's reserve too."""
VARY_FLAG = 2
"""Record flag: the payload is a base key's Vary names (:func:`encode_vary`), not a fill."""
_KEY_LEN = struct.Struct("<I")
_WRAP = 0xFFFFFFFF
"""A record head with this length marks the rest of the area unused: the next record is at its start."""
_ALIGN = 16
"""Records start at multiples of this, so a wrap mark (a record head) always fits before the end."""
# Header words (byte offsets), each with a single writer (see the module's rules).
_CAPACITY = 8
_HEAD = 16
_APPENDED = 24
_URGENT = 32
_CLOSING = 40
_COMMITTED = 48
_DONE = 56
_COUNTERS = 64
COUNTERS = (
    "writes",
    "dropped",
    "commits",
    "write_errors",
    "evictions",
    "reserve_evictions",
    "reserve_expired",
)
"""The fill writer's counters, kept in the header so that they outlive a restart and the data-plane
process reports them (the names are ``DiskStats``' fields)."""
_STARTED = _COUNTERS + 8 * len(COUNTERS)
"""The pid of the fill writer that has opened the store and is about to read the ring."""
_ASLEEP = _STARTED + 8
"""After the counters and ``_STARTED`` (the C appender's ``ASLEEP_AT``)."""


def _wake(fd: int) -> None:
    """Write an eventfd; none (-1: ``done_fd`` given by an older appender) is skipped."""
    if fd >= 0:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_write(fd, 1)


def _sleep_on(fd: int, timeout: float) -> None:
    """Sleep until ``fd`` is readable or ``timeout`` seconds pass, then empty it (an eventfd).
    ``poll``, not ``select``, which refuses a descriptor at or above 1024 (a node with many
    connections open when it starts a fill writer, or when the ring is created)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if poller.poll(max(0.0, timeout) * 1000):
        # Read only when woken (a doze that times out costs no read); another reader may have
        # emptied it meanwhile.
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(fd)


def encode_vary(base_key: str, names: tuple[str, ...]) -> bytes:
    """A ``VARY_FLAG`` record's payload: the key's length, the key (keys hold NULs and may hold lone
    surrogates), then the names NUL-joined, as the store keeps them."""
    key = base_key.encode("utf-8", "surrogatepass")
    return _KEY_LEN.pack(len(key)) + key + "\x00".join(names).encode()


def decode_vary(payload: bytes) -> tuple[str, tuple[str, ...]]:
    """The base key and Vary names of a ``VARY_FLAG`` record's payload."""
    (n,) = _KEY_LEN.unpack_from(payload)
    end = _KEY_LEN.size + n
    if end > len(payload):
        raise struct.error("a Vary record shorter than its key")
    key = payload[_KEY_LEN.size : end].decode("utf-8", "surrogatepass")
    names = payload[end:].decode()
    return key, tuple(names.split("\x00")) if names else ()


class PyAppender:
    """The appending side of a ring in Python: what ``_fillring.Appender`` does in C, byte for byte
    (the tests hold them to the same records), for the fill writer's side, which never appends."""

    def __init__(self, mm: mmap.mmap) -> None:
        self._mm = mm
        self._capacity: int = _Q.unpack_from(mm, _CAPACITY)[0]
        self._mask = self._capacity - 1
        self.head: int = _Q.unpack_from(mm, _HEAD)[0]
        """The position after the last record appended."""
        self.appended: int = _Q.unpack_from(mm, _APPENDED)[0]
        """Records appended so far."""

    def append(self, payload: bytes, flags: int) -> int:
        """Add one record with its flags (a byte): 1 when added, 2 when added and the fill writer
        sleeps (the caller wakes it), 0 when the ring has no room for it (nothing written)."""
        if not 0 <= flags <= 0xFF:
            raise ValueError("a record's flags are one byte")
        size = len(payload)
        need = (_REC_SIZE + size + _ALIGN - 1) & ~(_ALIGN - 1)
        head = self.head
        mm = self._mm
        at = head & self._mask
        room = self._capacity - at
        wrap = room if need > room else 0
        if head + wrap + need - _Q.unpack_from(mm, _COMMITTED)[0] > self._capacity:
            return 0
        if wrap:
            _REC.pack_into(mm, HEADER_SIZE + at, _WRAP, 0, 0)
            head += wrap
            at = 0
        start = HEADER_SIZE + at
        _REC.pack_into(mm, start, size, crc32c(payload), flags)
        mm[start + _REC_SIZE : start + _REC_SIZE + size] = payload
        self.head = head = head + need
        self.appended += 1
        _Q.pack_into(mm, _APPENDED, self.appended)
        # Last: the reader trusts nothing past ``head``.
        _Q.pack_into(mm, _HEAD, head)
        return 2 if _Q.unpack_from(mm, _ASLEEP)[0] else 1

    def append_entry(self, entry: Entry, reserve: bool, max_record: int) -> int:
        """Add an entry's record (``encode_entry``'s, with no reserve expiry): 1 when added, 2 when
        added and the fill writer sleeps (the caller wakes it: not done here), 0 when the ring has
        no room for it, -1 when it is larger than ``max_record`` (nothing written)."""
        record = encode_entry(entry, 0.0)
        if len(record) > max_record:
            return -1
        return self.append(record, RESERVE_FLAG if reserve else 0)

    def release(self) -> None:
        """Nothing to let go of (the C appender's buffer export)."""


@dataclass(slots=True)
class Batch:
    """What the fill writer read: the records (payload, flags) and the position after them."""

    records: list[tuple[bytes, int]]
    end: int


class FillRing:
    """One fill ring, mapped (created by the appending process, opened by the fill writer)."""

    def __init__(
        self,
        path: Path,
        mm: mmap.mmap,
        wake_fd: int,
        done_fd: int,
        appender: type[Appender | PyAppender],
    ) -> None:
        self.path = path
        self._mm = mm
        self.wake_fd = wake_fd
        """The eventfd that wakes an idle fill writer."""
        self.done_fd = done_fd
        """The eventfd the fill writer writes after each commit (:meth:`await_commit`); -1 in a fill
        writer whose appender has none (an older version's: it polls ``committed``)."""
        self.capacity: int = _Q.unpack_from(mm, _CAPACITY)[0]
        self._mask = self.capacity - 1
        self.appender = appender(mm)
        """Appends the records (:meth:`append`, :meth:`append_entry`, :attr:`head` ask it); the
        event loop's fill path calls it directly (``DiskStore.put``), without a Python frame more."""
        self.max_record = self.capacity // 8
        """Payloads larger than this are not put in the ring (the caller writes them otherwise)."""

    @classmethod
    def create(
        cls, path: Path, capacity: int = DEFAULT_CAPACITY, appender: type[Appender | PyAppender] = Appender
    ) -> FillRing:
        """A new, empty ring at ``path`` (readable by this user only: it holds cached responses),
        appended to by ``appender`` (the C one unless a test asks for the Python one)."""
        if capacity & (capacity - 1) or capacity < 1 << 16:
            raise ValueError("fill ring capacity must be a power of two of at least 64 KiB")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # Every page allocated now: a full tmpfs fails here (OSError, the file removed), not
            # with a SIGBUS on the loop.
            os.posix_fallocate(fd, 0, HEADER_SIZE + capacity)
            mm = mmap.mmap(fd, HEADER_SIZE + capacity)
        except OSError:
            path.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        mm[:8] = MAGIC
        _Q.pack_into(mm, _CAPACITY, capacity)
        flags = os.EFD_NONBLOCK | os.EFD_CLOEXEC
        return cls(path, mm, os.eventfd(0, flags), os.eventfd(0, flags), appender)

    @classmethod
    def open(cls, path: Path, wake_fd: int, done_fd: int) -> FillRing:
        """Map an existing ring (the fill writer's side), woken through ``wake_fd``, telling of its
        commits through ``done_fd``."""
        fd = os.open(path, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        magic = mm[:8]
        if magic != MAGIC:
            mm.close()
            if magic[:-1] != MAGIC[:-1]:
                raise ValueError(f"{path} is not a fill ring")
            raise ValueError(
                f"{path} is a fill ring of format version {magic[-1]}, where this fill writer reads "
                f"version {MAGIC[-1]} (the package changed under a running node: restart the node)"
            )
        # The fill writer's side never appends: the Python appender holds no export of the map.
        return cls(path, mm, wake_fd, done_fd, PyAppender)

    def close(self, *, unlink: bool = False) -> None:
        """Unmap the ring (and remove its file)."""
        self.appender.release()
        self._mm.close()
        for fd in (self.wake_fd, self.done_fd):
            if fd >= 0:
                os.close(fd)
        if unlink:
            self.path.unlink(missing_ok=True)

    # -- the appender ------------------------------------------------------------------------------

    def append(self, payload: bytes, flags: int) -> int:
        """Add one record with its flags (``RESERVE_FLAG``, ``VARY_FLAG``): 1 when added, 2 when
        added and the fill writer sleeps (wake it: :meth:`wake_if_asleep`), 0 when the ring has no
        room for it (nothing written)."""
        return self.appender.append(payload, flags)

    def append_vary(self, base_key: str, names: tuple[str, ...]) -> int:
        """Add a base key's Vary names (a ``VARY_FLAG`` record), to be written in the transaction of
        the fill appended before them, or a later one: as :meth:`append`."""
        return self.appender.append(encode_vary(base_key, names), VARY_FLAG)

    def append_entry(self, entry: Entry, reserve: bool) -> int:
        """Add the record of a whole entry (``Entry``, not a large object's ``ChunkedEntry``):
        1 when added, 2 when added and the fill writer sleeps (wake it: :meth:`wake_if_asleep`,
        left to the caller so that the event loop's answers go out first), 0 when the
        ring has no room for it, -1 when it is larger than ``max_record`` (nothing written: the
        caller writes it otherwise)."""
        return self.appender.append_entry(entry, reserve, self.max_record)

    def wake(self) -> None:
        """Wake the fill writer if it waits for records."""
        _wake(self.wake_fd)

    def wake_if_asleep(self) -> None:
        """Wake the fill writer if it sleeps for lack of records (after an append that returned 2;
        a fill writer that woke on its own since is left alone)."""
        if _Q.unpack_from(self._mm, _ASLEEP)[0]:
            _wake(self.wake_fd)

    @property
    def head(self) -> int:
        """The position after the last record appended."""
        return self.appender.head

    def want(self, position: int) -> None:
        """Ask the fill writer to commit up to ``position`` without waiting for more fills."""
        if position > _Q.unpack_from(self._mm, _URGENT)[0]:
            _Q.pack_into(self._mm, _URGENT, position)
            self.wake()

    def await_commit(self, position: int, timeout: float) -> bool:
        """Sleep until ``committed`` reaches ``position`` (True) or ``timeout`` seconds pass
        (False); woken by each commit (``done_fd``). One thread at a time (the disk writer's)."""
        deadline = time.monotonic() + timeout
        while self.committed < position:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _sleep_on(self.done_fd, left)
        return True

    def pending(self) -> int:
        """Records appended and not yet committed (nor skipped)."""
        return self.appender.appended - int(_Q.unpack_from(self._mm, _DONE)[0])

    def skip(self) -> int:
        """Give up the records appended and not committed (their fill writer died): the next one
        starts after them. Returns how many. Only while no fill writer runs."""
        mm = self._mm
        appended = self.appender.appended
        lost = appended - int(_Q.unpack_from(mm, _DONE)[0])
        _Q.pack_into(mm, _DONE, appended)
        _Q.pack_into(mm, _COMMITTED, self.appender.head)
        _wake(self.done_fd)
        return lost

    def close_writer(self) -> None:
        """Tell the fill writer to commit what is left and exit."""
        _Q.pack_into(self._mm, _CLOSING, 1)
        self.wake()

    # -- either side -------------------------------------------------------------------------------

    @property
    def started(self) -> int:
        """The pid of the last fill writer that was ready to commit (:meth:`mark_started`), 0
        before the first."""
        return int(_Q.unpack_from(self._mm, _STARTED)[0])

    @property
    def committed(self) -> int:
        """The position up to which every record is committed (or dropped by the store's rules)."""
        return int(_Q.unpack_from(self._mm, _COMMITTED)[0])

    def counters(self) -> dict[str, int]:
        """The fill writer's counters (``COUNTERS``)."""
        mm = self._mm
        return {name: _Q.unpack_from(mm, _COUNTERS + 8 * i)[0] for i, name in enumerate(COUNTERS)}

    # -- the fill writer ---------------------------------------------------------------------------

    def mark_started(self) -> None:
        """This fill writer has opened the store: from now on a record is committed within a
        group commit (``FillWriterProcess.start`` waits for this)."""
        _Q.pack_into(self._mm, _STARTED, os.getpid())

    def doze(self, timeout: float) -> None:
        """Sleep ``timeout`` seconds while more fills gather, unless :meth:`want` (or
        :meth:`close_writer`) wakes the fill writer first. An append does not: it writes the
        eventfd only to a fill writer that sleeps for lack of records (:meth:`wait`)."""
        _sleep_on(self.wake_fd, timeout)

    def wait(self, position: int, timeout: float) -> None:
        """Sleep until a record is appended after ``position`` (or ``timeout`` seconds pass)."""
        mm = self._mm
        _Q.pack_into(mm, _ASLEEP, 1)
        try:
            idle = _Q.unpack_from(mm, _HEAD)[0] == position and not self.closing
            _sleep_on(self.wake_fd, timeout if idle else 0.0)
        finally:
            _Q.pack_into(mm, _ASLEEP, 0)

    @property
    def closing(self) -> bool:
        """Whether the appender asked the fill writer to finish."""
        return bool(_Q.unpack_from(self._mm, _CLOSING)[0])

    def urgent(self, position: int) -> bool:
        """Whether the appender waits for a commit past ``position``."""
        return int(_Q.unpack_from(self._mm, _URGENT)[0]) > position

    def available(self, position: int) -> int:
        """Bytes appended after ``position``."""
        return int(_Q.unpack_from(self._mm, _HEAD)[0]) - position

    def read(self, position: int, max_records: int, max_bytes: int) -> Batch:
        """The records after ``position`` (at most ``max_records``, and ``max_bytes`` of payload
        unless the first alone is more), stopping at one whose bytes are not all visible yet."""
        mm = self._mm
        head = _Q.unpack_from(mm, _HEAD)[0]
        records: list[tuple[bytes, int]] = []
        append, unpack, check, mask = records.append, _REC.unpack_from, checked, self._mask
        size_sum = 0
        pos = position
        left = max_records
        while pos < head and left:
            at = pos & mask
            start = HEADER_SIZE + at
            size, crc, flags = unpack(mm, start)
            if size == _WRAP:
                pos += self.capacity - at
                continue
            if records and size_sum + size > max_bytes:
                break
            payload = check(mm, start + _REC_SIZE, size, crc)
            if payload is None:
                break
            append((payload, flags))
            size_sum += size
            left -= 1
            pos += (_REC_SIZE + size + _ALIGN - 1) & ~(_ALIGN - 1)
        return Batch(records, pos)

    def settled(self) -> tuple[Batch, int] | None:
        """Every record appended so far, given up unread (one of them cannot be read: its CRC
        never matches): an empty batch ending at ``head``, to commit with :meth:`commit`, and how
        many records it skips. None while an append may be under way (the appender stores
        ``appended``, then ``head``): both are read twice, ``SETTLE`` seconds apart, and must agree."""
        mm = self._mm
        first = _Q.unpack_from(mm, _HEAD)[0], _Q.unpack_from(mm, _APPENDED)[0]
        time.sleep(SETTLE)
        head, appended = _Q.unpack_from(mm, _HEAD)[0], _Q.unpack_from(mm, _APPENDED)[0]
        if (head, appended) != first:
            return None
        return Batch([], head), appended - int(_Q.unpack_from(mm, _DONE)[0])

    def commit(self, batch: Batch, counters: dict[str, int], skipped: int = 0) -> None:
        """Publish that ``batch`` is committed (and the ``skipped`` records before its end given
        up), with the fill writer's counters."""
        mm = self._mm
        for i, name in enumerate(COUNTERS):
            _Q.pack_into(mm, _COUNTERS + 8 * i, counters[name])
        _Q.pack_into(mm, _DONE, _Q.unpack_from(mm, _DONE)[0] + len(batch.records) + skipped)
        # Last: whoever waits for ``committed`` finds the counters already there.
        _Q.pack_into(mm, _COMMITTED, batch.end)
        _wake(self.done_fd)
