"""Fill locks: one process of a node fetches a new object from the origin, the others wait for it
in the shared disk tier (request coalescing across worker processes, decision 0021).

Theory of operation (decision 0028; 0021 for why and when):
- A key's lock is a *claim*: a word of the board's claim table (``CLAIM_SLOTS`` words in shared
  memory, at ``(token >> HOLDER_BITS) % CLAIM_SLOTS``) set by compare-and-swap from 0 to the key's
  token with the holder's worker slot + 1 in its low ``HOLDER_BITS``, and set back to 0 by the same
  holder on release. No system call: taking, releasing and testing a claim are one atomic
  instruction each (``_claims.c``).
- A key's token is its SipHash-2-4 (``_claims.siphash``, in C) under the node's random key (on the
  board, the same in every worker): a client cannot choose URLs whose tokens collide with another
  URL's to make its misses wait or go unclaimed.
- No claim outlives its fetcher: only the holder clears its claim, and when a worker dies
  (``kill -9`` included) the supervisor, once it has reaped it and before it starts the slot's next
  worker, clears every claim that names the slot (``PositionBoard.clear_claims``). A claim of the
  slot found later is therefore its live worker's.
- Two keys whose tokens choose the same word: the second finds a claim that is not its key's and
  fetches without one (as a miss past ``FILL_WAIT_KEYS`` does): never a wait for another key's fill,
  at worst the fetch a process without fill locks makes. The claim is then not recorded, so its
  release cannot clear the other key's claim (a compare-and-swap from this key's claim finds another
  value).
- A process counts the claims it holds itself (``_held``): a second fetch of the same key here (a
  body found too large, which leaves the in-flight table) takes it again without touching the word,
  and neither the first one's release nor a poller's probe drops it while another fetch here still
  holds it.
- Before it releases a claim, the fetcher stores the fill's outcome in the board's fill table (slot
  ``(token >> HOLDER_BITS) % FILL_SLOTS``, one aligned 8-byte word, a release store, so a reader
  that sees the claim gone sees the outcome): a stored fill writes 40 bits of the token and the time
  in milliseconds (24 bits, wrapping every 4.6 hours), any other outcome a zero. A process that then
  finds the key unclaimed reads it: a stored fill less than ``STORED_RECENTLY`` old is on its way to
  the disk tier (whose group commit makes it visible milliseconds later), so the process waits for
  it there rather than fetching it again; anything else (not storable, failed, a fetcher that died,
  an older fill, another key's outcome in the slot) means fetch now.
- The waiting itself (polling the disk tier, the timeout) is the proxy's: ``edge/proxy.py``.
"""

from __future__ import annotations

import time
from enum import Enum

from edgecache.cluster._claims import siphash
from edgecache.cluster.board import CLAIM_SLOTS, FILL_SLOTS, HOLDER_BITS, PositionBoard
from edgecache.config import Config

_TOKEN_MASK = (1 << 64) - (1 << HOLDER_BITS)
"""A token is 64 bits of the key's hash with the holder's bits cleared."""
_TAG_SHIFT = 24
"""A stored fill's record keeps the token's top 40 bits (none of those the slot is chosen by)..."""
_MS_BITS = 24
"""...above the time it was stored, in milliseconds modulo 2**24."""
_MS_MASK = (1 << _MS_BITS) - 1
STORED_RECENTLY = 0.5
"""Seconds after a fill was stored during which a process waits for it in the disk tier instead of
fetching it: the disk tier's group commit makes an entry visible within milliseconds (a median of
4-30 ms in ``bench/disk_visibility.py``, but a commit's fsync on a busy disk has taken up to 0.5 s);
past this, an entry that never showed up (removed meanwhile, say) is fetched again."""


def _slot(token: int) -> int:
    # The token's low bits are the holder's in a claim: the slot comes from above them.
    return (token >> HOLDER_BITS) % FILL_SLOTS


def _claim_slot(token: int) -> int:
    return (token >> HOLDER_BITS) % CLAIM_SLOTS


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

    __slots__ = ("_claims", "_fills", "_held", "_holder", "_k0", "_k1", "_purged_at")

    def __init__(self, board: PositionBoard, slot: int) -> None:
        """The claims of worker ``slot`` live in ``board``'s claim table, their outcomes in its
        fill table."""
        if not 0 <= slot < board.slots:
            raise ValueError(f"worker slot {slot} is not one of the board's {board.slots}")
        self._claims = board.claims
        self._fills = board.fills
        self._k0, self._k1 = board.token_key
        self._holder = slot + 1
        self._held: dict[int, int] = {}
        """Tokens this process holds, or fetches without a claim (the word was another key's) →
        how many of its fetches hold each."""
        self._purged_at = -STORED_RECENTLY
        """When this process last saw a purge applied (monotonic seconds): see :meth:`purged`."""

    def purged(self) -> None:
        """A purge was applied in this process: a fill announced as stored before now may be one it
        covers, which the purge's removal takes out of the disk tier, so it is not waited for."""
        self._purged_at = time.monotonic()

    def token(self, key: str) -> int:
        """The key's token: its SipHash under the node's key, the holder's bits clear (never 0, so
        that 0 can mean "no lock")."""
        return siphash(key, self._k0, self._k1) & _TOKEN_MASK or 1 << HOLDER_BITS

    def take(self, token: int) -> bool:
        """Claim ``token``'s key for this process, unless another process holds its claim. True
        also when its word holds another key's claim: the fetch goes ahead without one."""
        held = self._held.get(token)
        if held is None:
            other = self._claims.cas(_claim_slot(token), 0, token | self._holder)
            if other and other & _TOKEN_MASK == token:
                return False
            held = 0
        self._held[token] = held + 1
        return True

    def unlock(self, token: int) -> None:
        """Release ``token``'s claim without announcing anything (this process did not fetch)."""
        held = self._held.pop(token) - 1
        if held:
            self._held[token] = held
        else:
            # From this process's claim only: a word that held another key's claim when this one
            # was taken is left as it is.
            self._claims.cas(_claim_slot(token), token | self._holder, 0)

    def release(self, token: int, *, stored: bool) -> None:
        """Announce the fill's outcome, then release ``token``'s claim (after the outcome's store:
        whoever sees the claim gone sees the outcome)."""
        self._fills.store(_slot(token), (token >> _TAG_SHIFT) << _MS_BITS | _now_ms() if stored else 0)
        self.unlock(token)

    def stored_recently(self, token: int) -> bool:
        """Whether the last fill of ``token``'s key was stored less than ``STORED_RECENTLY`` ago,
        and after the last purge this process saw (:meth:`purged`)."""
        word = self._fills.load(_slot(token))
        if word >> _MS_BITS != token >> _TAG_SHIFT:
            return False
        since_purge = (time.monotonic() - self._purged_at) * 1000
        return (_now_ms() - word) & _MS_MASK < min(STORED_RECENTLY * 1000, since_purge)

    def probe(self, token: int) -> Fill:
        """Whether another process still fetches ``token``'s key, and if not, what it announced
        (held here: a fetch of this process took it since, and answers the waiters)."""
        if token in self._held or self._claims.load(_claim_slot(token)) & _TOKEN_MASK == token:
            return Fill.HELD
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
