"""Following the ledger: one applier's position, and how it catches up.

Theory of operation
-------------------
The ledger table (``db/ledger.py``) is the durable record of every accepted purge. An *applier* (a
worker process of a node today; a node of a cluster later) keeps an epoch index and ``applied``,
the seq of the last ledger row it has put in it. A ``Waker`` tells it the newest position it should
have (``target()``) and wakes it when that may have moved (``wait()``). Whenever ``target()`` is
above ``applied``, :meth:`LedgerFollower.check` reads the rows after ``applied`` from the ledger, in
seq order, and applies each; nothing else changes ``applied``.

Rules:
- Rows up to the announced position are applied, never beyond: an applier acknowledges what it
  applied, and the control plane expects acknowledgements only for purges it has announced.
- ``check`` is what the hit path calls: one comparison when the applier is current, so an applier
  that was told it is behind catches up before it answers the request in hand.
- The waker is the only part that differs between appliers: shared memory plus a nudge over the
  supervisor's channel for processes (``SharedWordWaker``), PostgreSQL LISTEN/NOTIFY for nodes.
  After any disconnect a waker reports a target at least as new as the ledger's end, so a missed
  nudge delays an applier but never leaves it behind.
- A row that cannot be replayed (its zone is gone from this node's configuration) is skipped with a
  log line: it can cover nothing this applier stores, and the position still moves past it.
- A purge may also be *delivered* with its announcement (the processes' wake message carries it,
  with the position announced before it): it is applied as it is, without reading its row, when
  the applier is exactly at that earlier position, even before the waker's target shows it (the
  message is its announcement: the control plane registers a purge before it sends it);
  otherwise (a message missed, the applier behind or ahead already) the announcement counts only
  as a wake, and the ledger read decides. The shared word, not the message, says whether an
  applier is behind, so a request never waits for one.
- Rows are applied in seq order; gaps in the numbering (a PostgreSQL sequence skips values on
  rollback) are harmless, because ``applied`` is the last seq read, not a count.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from edgecache.cluster.board import PositionBoard
from edgecache.db.ledger import LedgerRow

log = logging.getLogger(__name__)


class Waker(Protocol):
    """Tells a follower how far the ledger has gone, and wakes it when that may have changed."""

    def target(self) -> int:
        """The newest ledger position this applier has been told of."""
        ...

    async def wait(self) -> None:
        """Return once the target may have moved."""
        ...


class LedgerFollower:
    """Keeps one applier's epoch index up to the position its waker announces."""

    def __init__(
        self,
        *,
        read_after: Callable[[int], list[LedgerRow]],
        apply: Callable[[LedgerRow], None],
        waker: Waker,
        position: int,
        on_applied: Callable[[int], None] | None = None,
    ) -> None:
        """``read_after(seq)`` returns ledger rows after ``seq`` (oldest first, possibly a page);
        ``apply`` puts one in effect; ``position`` is the seq already applied."""
        self._read_after = read_after
        self._apply = apply
        self._waker = waker
        self._on_applied = on_applied
        self.applied = position
        self.caught_up = 0
        """How many times this applier found itself behind and read the ledger."""
        self.delivered = 0
        """How many purges were applied as delivered, without a ledger read."""

    def check(self) -> None:
        """Catch up if the waker announced a newer position (one comparison otherwise)."""
        if self._waker.target() > self.applied:
            self.catch_up()

    def deliver(self, after: int, seq: int, apply: Callable[[], None]) -> bool:
        """Apply the purge announced at ``seq`` (``apply`` puts it in effect) if it is the next one
        for this applier (at ``after``, the position announced before it); returns whether it did.
        When not, nothing is applied: the caller wakes the ledger read instead."""
        if self.applied != after or not after < seq:
            return False
        self.delivered += 1
        try:
            apply()
        except Exception:
            log.exception("cannot apply delivered purge %d; skipped", seq)
        self.applied = seq
        if self._on_applied is not None:
            self._on_applied(seq)
        return True

    def catch_up(self) -> None:
        """Apply every ledger row up to the announced position."""
        self.caught_up += 1
        target = self._waker.target()
        while self.applied < target:
            # Only up to the announced position: a row committed but not announced yet would be
            # acknowledged before the control plane has registered it (the announcement follows).
            rows = [row for row in self._read_after(self.applied) if row.seq <= target]
            if not rows:
                # Announced but not readable here yet (a replica behind its primary); the next
                # check tries again.
                break
            for row in rows:
                try:
                    self._apply(row)
                except Exception:
                    log.exception("cannot apply ledger row %d (zone %s); skipped", row.seq, row.zone_id)
                self.applied = row.seq
        if self._on_applied is not None:
            self._on_applied(self.applied)

    async def run(self) -> None:
        """Catch up whenever the waker wakes (for an applier that is not serving requests)."""
        while True:
            await self._waker.wait()
            try:
                self.check()
            except Exception:
                log.exception("following the ledger failed; retrying on the next wake")


class SharedWordWaker:
    """The processes' waker: the published word of the node's position board, and a nudge from
    the supervisor's channel so an idle process catches up (and reclaims, and acknowledges)."""

    def __init__(self, board: PositionBoard) -> None:
        self._words = board.words
        self._nudged = asyncio.Event()

    def target(self) -> int:
        """The position the control plane published."""
        return int(self._words[0])

    def nudge(self) -> None:
        """The supervisor announced a purge."""
        self._nudged.set()

    async def wait(self) -> None:
        """Until the next nudge."""
        await self._nudged.wait()
        self._nudged.clear()
