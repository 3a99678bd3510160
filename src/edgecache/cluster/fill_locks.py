"""Fill locks: one process of a node fetches a new object from the origin, the others wait for it
in the shared disk tier (request coalescing across worker processes, decision 0021).

Theory of operation:
- A key's lock is a POSIX record lock (``fcntl``) on one byte of the position board's ``memfd``,
  at an offset given by a 62-bit hash of the key: the kernel keeps the table. Such a lock belongs
  to its process, so it conflicts between the workers (within one, the proxy's in-flight table
  coalesces) and is released when its process exits, ``kill -9`` included: no lock outlives its
  fetcher. Taking or testing it is one non-blocking system call, made on a miss only.
- A process counts the locks it holds itself (``_held``): a POSIX lock is the process's, so a
  second fetch of the same key here (a body found too large, which leaves the in-flight table)
  takes it again without a system call, and neither the first one's release nor a poller's probe
  drops it while another fetch here still holds it.
- Before it releases a lock, the fetcher writes the fill's outcome in the board's fill table (slot
  ``(hash >> 3) % FILL_SLOTS``, one aligned 8-byte word, so a reader sees it whole): a stored fill writes
  40 bits of the hash and the time in milliseconds (24 bits, wrapping every 4.6 hours), any other
  outcome a zero. A process that then finds the lock free reads it: a stored fill less than
  ``STORED_RECENTLY`` old is on its way to the disk tier (whose group commit makes it visible
  milliseconds later), so the process waits for it there rather than fetching it again; anything
  else (not storable, failed, a fetcher that died, an older fill, another key's outcome in the
  slot) means fetch now.
- The waiting itself (polling the disk tier, the timeout) is the proxy's: ``edge/proxy.py``.
"""

from __future__ import annotations

import fcntl
import hashlib
import time
from enum import Enum

from edgecache.cluster.board import FILL_SLOTS, PositionBoard
from edgecache.config import Config

_HASH_MASK = (1 << 62) - 4
"""62 bits of the key's hash, the two low ones cleared: a lock's offset."""
_TAG_SHIFT = 22
"""A stored fill's record keeps the hash's top 40 bits (none of those the slot is chosen by)..."""
_MS_BITS = 24
"""...above the time it was stored, in milliseconds modulo 2**24."""
_MS_MASK = (1 << _MS_BITS) - 1
STORED_RECENTLY = 0.5
"""Seconds after a fill was stored during which a process waits for it in the disk tier instead of
fetching it: the disk tier's group commit makes an entry visible within milliseconds (a median of
4-30 ms in ``bench/disk_visibility.py``, but a commit's fsync on a busy disk has taken up to 0.5 s);
past this, an entry that never showed up (removed meanwhile, say) is fetched again."""


def _slot(token: int) -> int:
    # The token's three low bits are fixed (``_HASH_MASK``, ``| 4``): the slot comes from above them.
    return (token >> 3) % FILL_SLOTS


def _now_ms() -> int:
    # CLOCK_MONOTONIC is the machine's: every process of the node reads the same clock.
    return int(time.monotonic() * 1000) & _MS_MASK


class Fill(Enum):
    """What a waiter learns from a key's lock."""

    HELD = "held"
    """Another process is fetching it."""
    STORED = "stored"
    """The fetch ended and stored the object just now: it is, or shortly will be, in the disk tier."""
    GONE = "gone"
    """Nobody is fetching it and no recent stored fill is announced: fetch it."""


class FillLocks:
    """The fill locks of one node, on its position board."""

    __slots__ = ("_fd", "_held", "_purged_at", "_words")

    def __init__(self, board: PositionBoard) -> None:
        """The locks live on ``board``'s file, their outcomes in its fill table."""
        self._fd = board.fd
        self._words = board.fill_words
        self._held: dict[int, int] = {}
        """Tokens this process holds → how many of its fetches hold each."""
        self._purged_at = -STORED_RECENTLY
        """When this process last saw a purge applied (monotonic seconds): see :meth:`purged`."""

    def purged(self) -> None:
        """A purge was applied in this process: a fill announced as stored before now may be one it
        covers, which the purge's removal takes out of the disk tier, so it is not waited for."""
        self._purged_at = time.monotonic()

    @staticmethod
    def token(key: str) -> int:
        """The key's lock offset (never 0, so that 0 can mean "no lock")."""
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        return (int.from_bytes(digest, "little") & _HASH_MASK) | 4

    def take(self, token: int) -> bool:
        """Lock ``token`` for this process, unless another process holds it."""
        held = self._held.get(token)
        if held is None:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, token)
            except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: held elsewhere
                return False
            held = 0
        self._held[token] = held + 1
        return True

    def unlock(self, token: int) -> None:
        """Unlock ``token`` without announcing anything (this process did not fetch)."""
        held = self._held.pop(token) - 1
        if held:
            self._held[token] = held
        else:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, token)

    def release(self, token: int, *, stored: bool) -> None:
        """Announce the fill's outcome, then unlock ``token``."""
        self._words[_slot(token)] = (token >> _TAG_SHIFT) << _MS_BITS | _now_ms() if stored else 0
        self.unlock(token)

    def stored_recently(self, token: int) -> bool:
        """Whether the last fill of ``token``'s key was stored less than ``STORED_RECENTLY`` ago,
        and after the last purge this process saw (:meth:`purged`)."""
        word = int(self._words[_slot(token)])
        if word >> _MS_BITS != token >> _TAG_SHIFT:
            return False
        since_purge = (time.monotonic() - self._purged_at) * 1000
        return (_now_ms() - word) & _MS_MASK < min(STORED_RECENTLY * 1000, since_purge)

    def probe(self, token: int) -> Fill:
        """Whether another process still fetches ``token``'s key, and if not, what it announced
        (held here: a fetch of this process took it since, and answers the waiters)."""
        if token in self._held or not self.take(token):
            return Fill.HELD
        self.unlock(token)
        return Fill.STORED if self.stored_recently(token) else Fill.GONE


def shares_fills(config: Config) -> bool:
    """Whether a worker of this node coalesces fills with the others: there must be others, a
    disk tier they share, where every fill is written (``second_fill`` would leave the waiters
    waiting for a first fill that never reaches the disk), and a wait allowed."""
    return (
        config.runtime.workers > 1
        and config.storage.disk.enabled
        and config.storage.disk.admission == "every_fill"
        and config.runtime.fill_lock_timeout > 0
    )
