"""Fill locks: one process of a node fetches a new object from the origin, the others wait for it
in the shared disk tier (request coalescing across worker processes, decision 0022).

Theory of operation:
- A key's lock is a POSIX record lock (``fcntl``) on one byte of the position board's ``memfd``,
  at an offset given by a 62-bit hash of the key: the kernel keeps the table. Such a lock belongs
  to its process, so it conflicts between the workers (within one, the proxy's in-flight table
  coalesces) and is released when its process exits, ``kill -9`` included: no lock outlives its
  fetcher. Taking or testing it is one non-blocking system call, made on a miss only.
- Before it releases a lock, the fetcher writes the fill's outcome in the board's fill table (slot
  ``hash % FILL_SLOTS``, one aligned 8-byte word: the hash with its two low bits replaced by the
  outcome). A waiter that then finds the lock free reads it: ``STORED`` means the entry is on its
  way to the disk tier (whose group commit delays it by milliseconds), anything else (not
  storable, failed, a fetcher that died, or another key's outcome in the slot) means fetch now.
- The waiting itself (polling the disk tier, the timeout) is the proxy's: ``edge/proxy.py``.
"""

from __future__ import annotations

import fcntl
import hashlib
from enum import Enum

from edgecache.cluster.board import FILL_SLOTS, PositionBoard
from edgecache.config import Config

_HASH_MASK = (1 << 62) - 4
"""62 bits of the key's hash, the two low ones cleared: a lock's offset, and an outcome's tag."""
_STORED = 1
_NOT_STORED = 2


class Fill(Enum):
    """What a waiter learns from a key's lock."""

    HELD = "held"
    """Another process is fetching it."""
    STORED = "stored"
    """The fetch ended and stored the object: it is, or will shortly be, in the disk tier."""
    GONE = "gone"
    """Nobody is fetching it and no stored fill is announced: fetch it."""


class FillLocks:
    """The fill locks of one node, on its position board."""

    __slots__ = ("_fd", "_words")

    def __init__(self, board: PositionBoard) -> None:
        self._fd = board.fd
        self._words = board.fill_words

    @staticmethod
    def token(key: str) -> int:
        """The key's lock offset (never 0, so that 0 can mean "no lock")."""
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        return (int.from_bytes(digest, "little") & _HASH_MASK) | 4

    def take(self, token: int) -> bool:
        """Lock ``token`` for this process, unless another process holds it."""
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, token)
        except OSError:
            return False
        return True

    def release(self, token: int, *, stored: bool) -> None:
        """Announce the fill's outcome, then unlock ``token``."""
        self._words[token % FILL_SLOTS] = token | (_STORED if stored else _NOT_STORED)
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, token)

    def probe(self, token: int) -> Fill:
        """Whether another process still fetches ``token``'s key, and if not, what it announced."""
        if not self.take(token):
            return Fill.HELD
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, token)
        if self._words[token % FILL_SLOTS] == token | _STORED:
            return Fill.STORED
        return Fill.GONE


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
