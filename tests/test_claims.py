"""The atomic shared words under the fill claims (``cluster/_claims.c``, decision 0028): every
access from Python is bounds-checked, so no index or range can reach memory outside the words a
``SharedWords`` was given; and a compare-and-swap between real processes never loses an update."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import time

import pytest

from edgecache.cluster._claims import SharedWords, siphash


@pytest.fixture
def buf() -> mmap.mmap:
    m = mmap.mmap(-1, 4096)
    m[:] = b"\xaa" * 4096
    return m


def test_the_words_are_the_buffers_bytes_from_the_offset(buf: mmap.mmap) -> None:
    words = SharedWords(buf, 64, 8)
    assert words.count == 8
    assert words.load(0) == 0xAAAAAAAAAAAAAAAA
    words.store(7, 2**64 - 1)
    assert buf[120:128] == b"\xff" * 8
    assert buf[128:136] == b"\xaa" * 8  # the word past the range is untouched
    words.release()


def test_cas_sets_only_from_the_expected_value_and_returns_what_it_found(buf: mmap.mmap) -> None:
    words = SharedWords(buf, 0, 4)
    words.store(1, 0)
    assert words.cas(1, 0, 42) == 0
    assert words.cas(1, 0, 7) == 42  # held: not set
    assert words.load(1) == 42
    assert words.cas(1, 42, 0) == 42
    assert words.load(1) == 0
    words.release()


def test_clear_clears_the_words_under_the_mask_only(buf: mmap.mmap) -> None:
    words = SharedWords(buf, 0, 6)
    for i, value in enumerate((0, 0x1001, 0x2002, 0x3001, 0x4001, 0x5003)):
        words.store(i, value)
    assert words.clear(0xFFF, 1) == 3
    assert [words.load(i) for i in range(6)] == [0, 0, 0x2002, 0, 0, 0x5003]
    words.release()


@pytest.mark.parametrize("index", [-1, 4, 2**40, -(2**40)])
def test_an_index_outside_the_words_is_refused(buf: mmap.mmap, index: int) -> None:
    words = SharedWords(buf, 8, 4)
    before = bytes(buf)
    with pytest.raises(IndexError):
        words.load(index)
    with pytest.raises(IndexError):
        words.store(index, 0)
    with pytest.raises(IndexError):
        words.cas(index, 0xAAAAAAAAAAAAAAAA, 0)
    assert bytes(buf) == before
    words.release()


def test_an_index_past_ssize_t_is_refused(buf: mmap.mmap) -> None:
    words = SharedWords(buf, 0, 4)
    with pytest.raises(OverflowError):
        words.load(2**64)
    with pytest.raises(TypeError):
        words.load("1")  # type: ignore[arg-type]
    words.release()


@pytest.mark.parametrize("value", [-1, 2**64])
def test_a_value_that_is_not_a_64_bit_word_is_refused(buf: mmap.mmap, value: int) -> None:
    words = SharedWords(buf, 0, 4)
    before = bytes(buf)
    with pytest.raises(OverflowError):
        words.store(0, value)
    with pytest.raises(OverflowError):
        words.cas(0, 0xAAAAAAAAAAAAAAAA, value)
    with pytest.raises(OverflowError):
        words.clear(value, 0)
    assert bytes(buf) == before
    words.release()


@pytest.mark.parametrize(
    ("offset", "count"),
    [
        (0, 513),  # one word past the end
        (4096, 1),  # starts at the end
        (8, 512),  # fits only without its offset
        (4, 1),  # not 8-aligned
        (-8, 1),
        (0, -1),
        (2**62, 1),
        (8, 2**60),  # offset + count * 8 would wrap
    ],
)
def test_a_range_outside_the_buffer_is_refused(buf: mmap.mmap, offset: int, count: int) -> None:
    with pytest.raises(ValueError):
        SharedWords(buf, offset, count)
    buf.close()  # nothing kept a view of it


def test_a_read_only_buffer_is_refused() -> None:
    with pytest.raises(BufferError):
        SharedWords(b"\0" * 64, 0, 8)  # type: ignore[arg-type]


def test_a_released_table_refuses_every_call_and_lets_the_mapping_close(buf: mmap.mmap) -> None:
    words = SharedWords(buf, 0, 4)
    with pytest.raises(BufferError):
        buf.close()  # held while the words are in use
    words.release()
    buf.close()
    assert words.count == 0
    for call in (lambda: words.load(0), lambda: words.store(0, 1), lambda: words.cas(0, 0, 1)):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError):
        words.clear(0, 0)


def test_a_table_is_initialised_once(buf: mmap.mmap) -> None:
    words = SharedWords(buf, 0, 4)
    with pytest.raises(ValueError):
        words.__init__(buf, 0, 512)  # type: ignore[misc]
    assert words.count == 4
    words.release()


SIPHASH_2_4_VECTORS = (
    "310e0edd47db6f72",
    "fd67dc93c539f874",
    "5a4fa9d909806c0d",
    "2d7efbd796666785",
    "b7877127e09427cf",
    "8da699cd64557618",
    "cee3fe586e46c9cb",
    "37d1018bf50002ab",
    "6224939a79f5f593",
    "b0e4a90bdf82009e",
    "f3b9dd94c5bb5d7a",
    "a7ad6b22462fb3f4",
    "fbe50e86bc8f1e75",
    "903d84c02756ea14",
    "eef27a8e90ca23f7",
    "e545be4961ca29a1",
)
"""The first 16 of the reference ``vectors_sip64`` (Aumasson and Bernstein's SipHash-2-4, key
00..0f, message 00..n-1 for vector n), as the bytes of the little-endian result."""


def test_siphash_is_siphash_2_4() -> None:
    """The reference vectors for every message length 0-15: no block, one block, and every length
    of the tail after each."""
    k0 = int.from_bytes(bytes(range(8)), "little")
    k1 = int.from_bytes(bytes(range(8, 16)), "little")
    for n, vector in enumerate(SIPHASH_2_4_VECTORS):
        assert siphash(bytes(range(n)), k0, k1) == int.from_bytes(bytes.fromhex(vector), "little"), n
    assert siphash("é/key", 1, 2) == siphash("é/key".encode(), 1, 2)
    with pytest.raises(UnicodeEncodeError):
        siphash("\udc80", 1, 2)
    with pytest.raises(TypeError):
        siphash(42, 1, 2)  # type: ignore[arg-type]


INCREMENTS = 500_000
RACER = """
import mmap, os, sys
from edgecache.cluster._claims import SharedWords
fd, n, me = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cpus = sorted(os.sched_getaffinity(0))
os.sched_setaffinity(0, {cpus[me % len(cpus)]})  # the racers on two cores, when there are two
words = SharedWords(mmap.mmap(fd, 64), 0, 8)
mine, other = 1 + me, 2 - me
words.store(3 + me, 1)  # ready
while words.load(5) == 0:
    pass
done = 0
while done < n or words.load(other) < n:  # until both have done n: neither runs alone
    seen = words.load(0)
    while (found := words.cas(0, seen, seen + 1)) != seen:
        seen = found
    done += 1
    words.store(mine, done)
"""


def test_between_processes_no_compare_and_swap_increment_is_lost() -> None:
    """Two processes add 1 to the same word, each by a compare-and-swap retry loop, at least
    INCREMENTS times each and until both have: the word ends as the sum of their increments only if
    each cas compares and stores as one step (a racer slipping between a load, a compare and a store
    loses increments: such a cas lost 2-64% of them, in each of 8 runs here)."""
    fd = os.memfd_create("claims-test")
    os.ftruncate(fd, 64)
    m = mmap.mmap(fd, 64)
    words = SharedWords(m, 0, 8)
    racers = [
        subprocess.Popen([sys.executable, "-c", RACER, str(fd), str(INCREMENTS), str(me)], pass_fds=(fd,))
        for me in (0, 1)
    ]
    while not (words.load(3) and words.load(4)):
        time.sleep(0.001)
    words.store(5, 1)  # go
    for r in racers:
        assert r.wait(timeout=120) == 0
    assert min(words.load(1), words.load(2)) >= INCREMENTS
    assert words.load(0) == words.load(1) + words.load(2)
    words.release()
    m.close()
    os.close(fd)
