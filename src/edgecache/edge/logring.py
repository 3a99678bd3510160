"""The access log's shared-memory ring: binary request records, written by one data-plane process,
read by formatter processes (Varnish's shared-memory log, in miniature).

Theory of operation:
- One ring per writing process: a file ``<pid>-<token>.ring`` in the ring directory, mapped with
  ``mmap``. The directory is on tmpfs (``/dev/shm``) when the machine has one, so the ring's pages
  are never written back to a disk (:func:`ring_directory`). The random token means a process that
  reuses a crashed process's pid never opens that process's ring; the header keeps the writer's
  pid and start time, so a reader tells a live owner from a gone one (:func:`owner_alive`).
- The file is a 256-byte header and a data area of ``capacity`` bytes (a power of two). Positions
  are absolute byte counts that only grow; a position's place in the data area is ``pos & mask``.
- The writer is the C capture (``edge/_logcapture.c``, decision 0017): it packs each request's
  record into a batch buffer in process memory and appends the batch at ``head`` when it holds
  64 records, when a record would not fit in ``MAX_BATCH``, or ``FLUSH_DELAY`` after its first
  record. It writes the payload first, then, after a release fence, the batch's header (its
  commit word: size, sequence number of its first record, record count, payload length and a
  CRC-32C of all of them), then the ring's ``head`` and record count, each with one aligned
  release store. A batch that would cross the end of the area is preceded by a wrap header (size
  0) and starts at the beginning. The writer never reads the readers' state and never waits: it
  simply overwrites.
- One record format, for a fresh hit and any other answer alike (little-endian; :func:`record`
  decodes it): end (monotonic ns, i64), bytes sent (u64), size (u16), kind (0: a fresh hit
  answered at once: cache status HIT, start and head at its end; 1: another answer), request
  form (0: the read its head began; 1: its values), the status digits as sent (3 bytes,
  NUL-padded), the client address's length (u8); for kind 1 its start and response head
  (monotonic ns) and its cache status (u8 length, bytes); the client address; then the request:
  form 0 is the read (u16 length and bytes, at most ``MAX_FIELD``, 4 KiB; the reader parses
  method, target, version, Host, Referer and User-Agent from it with httptools, the parser the
  server used), form 1 is method, target, version, Host, Referer and User-Agent (u16 length and
  bytes each, cut to ``MAX_FIELD``).
- A reader keeps its own position and the sequence number it expects next. A batch is accepted
  only if its header's CRC matches the bytes copied and its sequence number is not older than the
  one expected (a newer one counts the gap as lost; a seqlock whose check is the CRC): a batch
  seen before all its bytes are visible, or one being overwritten while it was copied, fails the
  check. If the writer is more than
  ``capacity - 2 * MAX_BATCH`` ahead, what the reader has not read may already be overwritten, so
  it resumes at the oldest batch still safe to read (the header keeps where the first batch of
  each eighth of the area starts, as Varnish's log keeps segment starts), or at ``head`` when none
  is known, and counts the records it skipped as lost. After copying it reads ``head`` again and
  drops the batches it copied from before that safe line (the writer may have reached them
  meanwhile), keeping the later ones; when none is safe, its next read resumes at the oldest safe
  batch. Every loss is counted exactly.
- Store order: the writer's fences order the payload, the batch header and ``head`` on every
  CPU, but the reader is Python, which copies from an ``mmap`` with plain loads and has no fence:
  on weakly ordered CPUs (ARM, POWER) it may see the new ``head`` or commit word before the
  payload's bytes. The reader therefore never trusts ``head`` alone: a batch whose bytes are not
  all visible yet fails its CRC or shows an older sequence number, and the reader stops there
  and tries again on its next read (if the batch still fails then, the reader resumes at ``head``
  and counts what it skipped as lost).
- The node's own formatter (the one that writes the access-log file) keeps its position, the next
  sequence number, the lost and written counts in the header's reader fields, so a restarted
  formatter resumes where the last one stopped and ``/metrics`` reads the counts from the ring.
  Readers started by hand (``edgecache log tail``) keep theirs in memory only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mmap
import os
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from httptools import HttpParserCallbackError, HttpParserError, HttpRequestParser

from edgecache.edge._logcapture import MAX_BATCH, Capture, checksum, split

MAGIC = b"ECVSL\x00\x00\x04"
"""The file's kind and version (4: packed records, CRC-32C; 3 was marshalled values, CRC-32)."""
HEADER_SIZE = 256
_HEADER = struct.Struct("<8sIIQ")
"""magic, writer pid, reserved, capacity."""
_HEAD = struct.Struct("<QQ")
"""At offset 24: the writer's head (absolute byte position) and the number of records written."""
_READER = struct.Struct("<QQQQ")
"""At offset 40: the node formatter's position, next sequence number, records lost and written."""
_HEAD_AT = 24
_READER_AT = 40
SEGMENTS = 8
_SEGMENTS_AT = 72
"""8 positions: the first batch that started in each eighth of the area, by its absolute eighth
modulo 8, so a lapped reader can resume at the oldest batch not yet overwritten."""
_STARTED_AT = 136
"""The writer's start time (clock ticks after boot, from /proc), which tells it from a later
process with the same pid."""
_POS = struct.Struct("<Q")

_BATCH = struct.Struct("<IIQII")
"""A batch's header, written after its payload: CRC-32C of the rest of the header and the payload,
size (0: a wrap marker), sequence number of its first record, records, payload bytes. The payload
is the batch's records, packed one after another (``_RECORD``)."""
ALIGN = 32
"""Batches start at multiples of this, so a wrap marker always fits before the end of the area."""
_RECORD = struct.Struct("<qQHBB3sB")
"""A record's fixed part: end (monotonic ns), bytes sent, its size in bytes, kind (``HIT_KIND``: a
fresh hit answered at once; else another answer), request form (``RAW_FORM``: the read its head
began; else its values), status digits as sent (NUL-padded), client address length. The end is
first so that a fresh hit's record without its first 8 bytes is the same for every repeat."""
_TIMES = struct.Struct("<qqB")
"""After the fixed part of a record that is not a fresh hit's: start and response head (monotonic
ns), cache status length (the status follows)."""
_LEN = struct.Struct("<H")
HIT_KIND = 0
RAW_FORM = 0
HIT = "HIT"
FLUSH_DELAY = 0.05
"""Seconds a smaller batch waits before it is copied anyway."""
DEFAULT_CAPACITY = 16 * 1024 * 1024
SHM = Path("/dev/shm")


def on_tmpfs(shm: Path = SHM) -> bool:
    """Whether rings can live on the machine's tmpfs (``shm``): their pages are never written back
    to a disk (the access log's rings here, the disk tier's fill rings in ``edge/fillwriter.py``)."""
    return shm.is_dir() and os.access(shm, os.W_OK | os.X_OK)


def ring_directory(data_dir: Path, shm: Path = SHM) -> Path:
    """Where a node's rings live: a directory of its own on tmpfs (``shm``) when the machine has
    one, named after the data directory so every process of the node (and ``edgecache log tail``)
    finds it; else ``<data_dir>/accesslog``."""
    if on_tmpfs(shm):
        digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
        return shm / f"edgecache-accesslog-{digest}"
    return data_dir / "accesslog"


def ring_path(directory: Path) -> Path:
    """A new ring file for this process: its pid and a random token, so no two processes (not even
    one that reuses a dead one's pid) ever share a ring."""
    return directory / f"{os.getpid()}-{secrets.token_hex(6)}.ring"


def process_started(pid: int) -> int:
    """When process ``pid`` started, in clock ticks after boot (0 if unknown: no /proc, or gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0
    # Field 22; the command name before it (in parentheses) may hold spaces.
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def owner_alive(pid: int, started: int) -> bool:
    """Whether the process that wrote a ring (``pid``, started at ``started``) still runs."""
    if started:
        return process_started(pid) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RingWriter:
    """The writing side of one ring: the file and its mapping; the records are packed and copied
    by the C capture (:attr:`capture`, decision 0017). Every 64 records, or ``FLUSH_DELAY``
    after the first of a smaller batch, the batch is copied into the ring (Varnish's workers
    buffer their log records the same way before they reach shared memory)."""

    __slots__ = ("_armed", "_loop", "_mm", "add", "capacity", "capture", "hit", "path")

    def __init__(self, path: Path, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity & (capacity - 1) or capacity < 4 * MAX_BATCH:
            raise ValueError(f"ring capacity must be a power of two of at least {4 * MAX_BATCH} bytes")
        self.path = path
        self.capacity = capacity
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_suffix(".new")
        # Request lines and client addresses: readable by the node's user only.
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "r+b") as f:
            # Every page allocated now: a full tmpfs fails here, at start, rather than with a
            # SIGBUS on the event loop when a later write touches a page it cannot have.
            try:
                os.posix_fallocate(f.fileno(), 0, HEADER_SIZE + capacity)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise OSError(
                    exc.errno,
                    f"cannot allocate the {capacity >> 20} MiB access-log ring in {path.parent} "
                    "(lower [logging] access_log_ring_mib, or give the filesystem more room)",
                ) from exc
            f.write(_HEADER.pack(MAGIC, os.getpid(), 0, capacity))
            f.seek(_STARTED_AT)
            f.write(_POS.pack(process_started(os.getpid())))
        # Readers only open complete files: the header is in place before the name appears.
        tmp.replace(path)
        with path.open("r+b") as f:
            self._mm = mmap.mmap(f.fileno(), HEADER_SIZE + capacity)
        self._armed = False
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            # Written from a plain script: a batch waits for the next full one, flush() or close().
            self._loop = None
        self.capture = Capture(self._mm, capacity, self._batch_started if self._loop else None)
        self.hit = self.capture.hit
        """What ``Connection.respond`` calls for a fresh hit: ``hit(req, data)``."""
        self.add = self.capture.add
        """Any other answer: ``add(req, end, start, head_at, cache, sent, status)``."""

    def _batch_started(self) -> None:
        # The capture's batch has its first record: it is copied within FLUSH_DELAY.
        if not self._armed and self._loop is not None:
            self._armed = True
            self._loop.call_later(FLUSH_DELAY, self._timer)

    def _timer(self) -> None:
        self._armed = False
        self.flush()

    def flush(self) -> None:
        """Copy the batch gathered so far into the ring (never blocks; overwrites what readers have
        not read)."""
        self.capture.flush()

    def close(self, unlink: bool = False) -> None:
        """Copy what is pending, unmap the ring; ``unlink`` also removes its file."""
        self.capture.flush()
        self.capture.release()
        self._mm.close()
        if unlink:
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class Record:
    """One request as the ring holds it (strings decoded as they were received: latin-1)."""

    start: float
    head_at: float
    end: float
    sent: int
    status: str
    cache: str
    client_ip: str
    method: str
    target: str
    version: str
    host: str
    referer: str
    user_agent: str


@dataclass(frozen=True, slots=True)
class RingCounts:
    """What a ring's header says: records written by its process, and the node formatter's
    account of them."""

    written: int
    lost: int
    logged: int


def _position(mm: mmap.mmap) -> tuple[int, int]:
    """The writer's ``head`` and sequence number. Two loads, the number first: the writer stores
    ``head`` first, so a reader can see the new head with the old number (harmless: the batch
    before it counts as skipped) but never the new number with the old head, which would make the
    last batch look already read."""
    (seq,) = _POS.unpack_from(mm, _HEAD_AT + 8)
    (head,) = _POS.unpack_from(mm, _HEAD_AT)
    return head, seq


def read_counts(path: Path) -> RingCounts:
    """The counters in a ring file's header (without mapping the data area)."""
    with path.open("rb") as f:
        header = f.read(HEADER_SIZE)
    _, seq = _HEAD.unpack_from(header, _HEAD_AT)
    _, _, lost, logged = _READER.unpack_from(header, _READER_AT)
    return RingCounts(written=seq, lost=lost, logged=logged)


class RingReader:
    """One reader of one ring. ``keep`` makes it the ring's node formatter: it starts where the
    last one stopped and records its position and counts in the ring's header."""

    def __init__(self, path: Path, *, keep: bool = False, from_start: bool = False) -> None:
        self.path = path
        self.keep = keep
        with path.open("r+b" if keep else "rb") as f:
            magic, self.pid, _, self.capacity = _HEADER.unpack(f.read(_HEADER.size))
            if magic != MAGIC:
                raise ValueError(f"{path} is not an access-log ring")
            access = mmap.ACCESS_WRITE if keep else mmap.ACCESS_READ
            self._mm = mmap.mmap(f.fileno(), HEADER_SIZE + self.capacity, access=access)
        self.started: int = _POS.unpack_from(self._mm, _STARTED_AT)[0]
        """The writer's start time (see :func:`owner_alive`)."""
        self._mask = self.capacity - 1
        self._stuck = -1
        """A position whose batch failed its check on the last read (not yet visible, or torn)."""
        self.pos: int
        self.next_seq: int
        self.lost: int
        self.logged: int
        head, seq = _position(self._mm)
        if keep:
            self.pos, self.next_seq, self.lost, self.logged = _READER.unpack_from(self._mm, _READER_AT)
        elif from_start:
            self.pos, self.next_seq, self.lost, self.logged = 0, 0, 0, 0
        else:
            self.pos, self.next_seq, self.lost, self.logged = head, seq, 0, 0

    def owner_alive(self) -> bool:
        """Whether the process that writes this ring still runs."""
        return owner_alive(self.pid, self.started)

    def read(self) -> list[bytes]:
        """Every record written since the last call, packed (:func:`record` decodes one); fewer,
        with ``lost`` counting the rest, when the writer lapped this reader."""
        mm = self._mm
        head, seq = _position(mm)
        start = self.pos
        if head - start > self.capacity - 2 * MAX_BATCH:
            start = self._oldest_safe(head)
            if start == head:
                self._skip_to(head, seq)
                return []
        records: list[bytes] = []
        pos, expect = start, self.next_seq
        lost = 0
        # Per batch copied: its position and where its records begin in `records`.
        marks: list[tuple[int, int]] = []
        while pos < head:
            batch = self._batch(pos, expect)
            if batch is None:
                if self._stuck == pos:
                    # Failed twice, a read apart: not a batch still becoming visible. Resume at head.
                    self._stuck = -1
                    self._skip_to(head, seq)
                    return []
                self._stuck = pos
                break
            size, first, got = batch
            lost += first - expect
            if size == 0:
                pos += self.capacity - (pos & self._mask)
                continue
            marks.append((pos, len(records)))
            pos += size
            expect = first + len(got)
            records += got
        now, now_seq = _position(mm)
        safe = now + 2 * MAX_BATCH - self.capacity
        if safe > start:
            # The writer came close enough to have overwritten the batches copied from before
            # `safe` while they were copied: those are dropped (counted lost), the later ones kept.
            kept = next((at for p, at in marks if p >= safe), None)
            if kept is None:
                # Nothing copied is safe: the next read resumes at the oldest batch that is (and
                # counts what it skipped from that batch's sequence number), not at the head, so
                # that the batches written meanwhile are still read.
                resume = self._oldest_safe(now)
                if resume == now:
                    self._skip_to(now, now_seq)
                else:
                    self.pos = resume
                return []
            records = records[kept:]
            lost = expect - self.next_seq - len(records)
        self.lost += lost
        self.pos, self.next_seq = pos, expect
        return records

    def _batch(self, pos: int, expect: int) -> tuple[int, int, list[bytes]] | None:
        """The batch at ``pos``, if it is whole and not older than ``expect``: its size (0 for a
        wrap marker), first sequence number and records."""
        at = HEADER_SIZE + (pos & self._mask)
        header = self._mm[at : at + _BATCH.size]
        crc, size, first, n, length = _BATCH.unpack(header)
        if first < expect or length > MAX_BATCH or (size and size < _BATCH.size + length):
            return None
        payload = self._mm[at + _BATCH.size : at + _BATCH.size + length]
        if checksum(payload, checksum(header[4:])) != crc:
            return None
        if size == 0:
            return 0, first, []
        records = split(payload, n)
        if records is None:
            return None
        return size, first, records

    def _oldest_safe(self, head: int) -> int:
        """The oldest batch the writer cannot be overwriting now (or ``head`` if none is known)."""
        safe = head + 2 * MAX_BATCH - self.capacity
        starts = [_POS.unpack_from(self._mm, _SEGMENTS_AT + 8 * i)[0] for i in range(SEGMENTS)]
        return min((p for p in starts if safe <= p <= head), default=head)

    def _skip_to(self, head: int, seq: int) -> None:
        self.lost += seq - self.next_seq
        self.pos, self.next_seq = head, seq

    def commit(self, logged: int) -> None:
        """Count ``logged`` records as written out; the node formatter saves its state in the ring."""
        self.logged += logged
        if self.keep:
            _READER.pack_into(self._mm, _READER_AT, self.pos, self.next_seq, self.lost, self.logged)

    def drained(self) -> bool:
        """Whether this reader has read everything written so far."""
        head: int = _HEAD.unpack_from(self._mm, _HEAD_AT)[0]
        return self.pos >= head

    def close(self) -> None:
        """Unmap the ring."""
        self._mm.close()


def record(rec: bytes) -> Record:
    """One record from its packed bytes (as :meth:`RingReader.read` gives them)."""
    end_ns, sent, _, kind, form, status, ip_len = _RECORD.unpack_from(rec)
    at = _RECORD.size
    end = end_ns / 1e9
    if kind == HIT_KIND:
        start = head_at = end
        cache = HIT
    else:
        start_ns, head_ns, cache_len = _TIMES.unpack_from(rec, at)
        start, head_at = start_ns / 1e9, head_ns / 1e9
        at += _TIMES.size
        cache = rec[at : at + cache_len].decode("latin-1")
        at += cache_len
    ip = rec[at : at + ip_len].decode("latin-1")
    at += ip_len
    values = []
    for _ in range(1 if form == RAW_FORM else 6):
        (n,) = _LEN.unpack_from(rec, at)
        values.append(rec[at + 2 : at + 2 + n])
        at += 2 + n
    if form == RAW_FORM:
        method, target, version, fields = _parse_head(values[0])
        host = referer = agent = b""
        # The last of repeated Referer or User-Agent fields, as the capture keeps them (not joined,
        # as Request.headers would).
        for key, value in fields:
            if key == "host":
                host = value
            elif key == "referer":
                referer = value
            elif key == "user-agent":
                agent = value
    else:
        method, target, version = (v.decode("latin-1") for v in values[:3])
        host, referer, agent = values[3:]
    return Record(
        start,
        head_at,
        end,
        sent,
        status.rstrip(b"\x00").decode("latin-1"),
        cache,
        ip,
        method,
        target,
        version,
        host.rstrip(b" \t").decode("latin-1"),
        referer.rstrip(b" \t").decode("latin-1"),
        agent.rstrip(b" \t").decode("latin-1"),
    )


class _Head:
    """httptools callbacks that keep the first request head of a read."""

    def __init__(self) -> None:
        self.parser = HttpRequestParser(self)
        self.url = b""
        self.fields: list[tuple[str, bytes]] = []
        self.method = ""
        self.version = ""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.decode("latin-1").lower(), value))

    def on_headers_complete(self) -> None:
        self.method = self.parser.get_method().decode("latin-1")
        self.version = self.parser.get_http_version()
        raise _HeadEnd


class _HeadEnd(Exception):
    """Raised once the first head of a read is parsed: what follows is not this request's."""


def _parse_head(raw: bytes) -> tuple[str, str, str, list[tuple[str, bytes]]]:
    """Method, target, version and raw fields of the request a read began with (the server parsed
    the same bytes with the same parser and accepted them)."""
    head = _Head()
    with contextlib.suppress(HttpParserCallbackError, HttpParserError):
        head.parser.feed_data(raw)
    return head.method, head.url.decode("latin-1"), head.version, head.fields


def ring_files(directory: Path) -> Iterator[Path]:
    """The ring files in a ring directory (one per data-plane process, live or gone)."""
    if directory.is_dir():
        yield from sorted(directory.glob("*.ring"))


def remove_stale(directory: Path) -> None:
    """Remove the rings of processes that are gone, unread (what a node whose access log is off
    does with what an earlier run left: on tmpfs each ring holds its memory until removed)."""
    for path in ring_files(directory):
        try:
            with path.open("rb") as f:
                header = f.read(HEADER_SIZE)
        except FileNotFoundError:
            continue
        magic, pid, _, _ = _HEADER.unpack_from(header)
        # Any version's ring: the pid and start time are where they always were.
        if magic[:5] == MAGIC[:5] and not owner_alive(pid, _POS.unpack_from(header, _STARTED_AT)[0]):
            path.unlink(missing_ok=True)
    remove_if_empty(directory)


def remove_if_empty(directory: Path) -> None:
    """Remove a ring directory (and the zones file in it) once no ring is left in it."""
    if directory.is_dir() and not any(directory.glob("*.ring")):
        for path in directory.glob("*.json"):
            path.unlink(missing_ok=True)
        # A process of the node may have made a new ring meanwhile: then the directory stays.
        with contextlib.suppress(OSError):
            directory.rmdir()
