"""One data-plane process of a node: ``python -m edgecache.cluster.worker`` (started by the supervisor).

It builds the same ``Node`` a single-process node runs and starts only its data plane: its memory
tier is its own L1. Purges reach it through the ledger (``follower.py``): before each request it
compares the published position with the one it has applied, and catches up first when behind. Its
reclaimer's acknowledgements, and its metrics when asked, go to the supervisor over the channel.

Arguments: slot, number of slots, then the descriptors it inherited: the position board, the
channel, the wake socket (datagrams: one purge each, see ``woken``), the listening socket (-1:
bind its own with SO_REUSEPORT) and the disk's key filter (-1: no disk tier). The configuration arrives
as JSON in ``EDGECACHE_WORKER_CONFIG``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable

import uvloop

from edgecache import logs
from edgecache.app import Node
from edgecache.cluster.board import PositionBoard
from edgecache.cluster.channel import Channel, Message, decode_purge
from edgecache.cluster.collector import families
from edgecache.cluster.fill_locks import FillLocks, shares_fills
from edgecache.cluster.follower import LedgerFollower, SharedWordWaker
from edgecache.config import Config
from edgecache.db.ledger import LedgerRow, LedgerTail
from edgecache.edge.http1 import Connection, Handler, Pending, Request
from edgecache.purge.selectors import Purge, Selector
from edgecache.store.keyfilter import KeyFilter

CONFIG_ENV = "EDGECACHE_WORKER_CONFIG"
RECLAIM_GATHER = 0.05
"""Seconds a worker's reclaimer lets purges accumulate before it reclaims them together: a purge is
in effect from its wake (the index has it); what waits is freeing memory and the acknowledgement, so
at 50 purges/s the disk writer, the reclaimer and the acknowledgement wake ~20 times a second for
2-3 purges each, not 50 times for one."""
WAKE_MAX = 1 << 20
"""The largest wake message read whole (a larger datagram is refused by the kernel when sent, and
the worker then reads the ledger instead)."""

log = logging.getLogger(__name__)


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening socket of its own on a port other processes share (the kernel spreads
    connections over them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class Worker:
    """The data plane of one process, following the node's ledger."""

    def __init__(
        self,
        config: Config,
        slot: int,
        board: PositionBoard,
        channel: Channel,
        wakes: socket.socket | None = None,
        key_filter: KeyFilter | None = None,
    ) -> None:
        """``wakes``: the datagram socket the supervisor sends each published purge on;
        ``key_filter``: the node's disk key filter, which the supervisor created."""
        self.slot = slot
        self._wakes = wakes
        self._buffer = bytearray(WAKE_MAX)
        self._board = board
        self._channel = channel
        self._acks: list[list[object]] = []
        self.node = Node(
            config, acknowledge=self._acknowledge, reclaim_gather=RECLAIM_GATHER, key_filter=key_filter
        )
        if shares_fills(config) and self.node.disk is not None:
            self.node.proxy.share_fills(FillLocks(board, slot), config.runtime.fill_lock_timeout)
        self.waker = SharedWordWaker(board)
        self._tail = LedgerTail(self.node.database)
        self.follower = LedgerFollower(
            read_after=self._tail.after,
            apply=self._apply,
            waker=self.waker,
            position=self.node.index.position,
            on_applied=lambda seq: board.set_applied(slot, seq),
        )
        board.set_applied(slot, self.follower.applied)
        board.set_reclaimed(slot, self.follower.applied)

    def _apply(self, row: LedgerRow) -> None:
        zone = self.node.zones.by_id.get(row.zone_id)
        if zone is None:
            log.warning("ledger row %d names zone %s, which this node does not serve", row.seq, row.zone_id)
            return
        self.node.apply_purge(self.node.purges.replay(zone, row))

    def read_wakes(self) -> None:
        """Handle every wake message waiting on the wake socket (non-blocking; called when the
        socket is readable, and by a request that finds this worker behind: the supervisor sends
        the message before the API answers, so it is usually there already)."""
        if self._wakes is None:
            return
        while True:
            try:
                n = self._wakes.recv_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                log.exception("reading the wake socket failed; following the ledger alone")
                self._stop_reading_wakes()
                return
            if n == 0:  # the supervisor is gone (the channel's end of file stops this worker)
                self._stop_reading_wakes()
                return
            try:
                self.woken(json.loads(self._buffer[:n]))
            except Exception:
                log.exception("bad wake message; following the ledger instead")
                self.waker.nudge()

    def _stop_reading_wakes(self) -> None:
        if self._wakes is not None:
            with contextlib.suppress(RuntimeError):  # no loop: nothing was registered
                asyncio.get_running_loop().remove_reader(self._wakes.fileno())
            self._wakes.close()
            self._wakes = None

    def woken(self, message: Message) -> None:
        """A purge was published: apply the one carried in the message when it is the next one here,
        else wake the ledger read."""
        purge = decode_purge(message["purge"])
        if not self.follower.deliver(int(message["after"]), purge.seq, lambda: self._put(purge)):
            self.waker.nudge()

    def _put(self, purge: Purge) -> None:
        if purge.zone not in self.node.zones.by_id:
            log.warning("purge %d names zone %s, which this node does not serve", purge.seq, purge.zone)
            return
        self.node.apply_purge(purge)

    def _acknowledge(self, purge: Purge, matched: dict[Selector, int]) -> None:
        self._board.set_reclaimed(self.slot, purge.seq)
        if not self._acks:
            # The reclaimer finishes a gathered batch in one loop turn: one message for all of it.
            asyncio.get_running_loop().call_soon(self._send_acks)
        self._acks.append([purge.seq, [matched.get(s, 0) for s in purge.selectors]])

    def _send_acks(self) -> None:
        acks, self._acks = self._acks, []
        self._channel.send({"t": "acks", "acks": acks})

    def handler(self) -> Handler:
        """The data plane's request handler: the proxy, behind the ledger check."""
        words = self._board.words
        follower = self.follower
        proxy = self.node.proxy.__call__  # bound once: see Node.start_data
        read_wakes = self.read_wakes

        def handle(req: Request, conn: Connection) -> Awaitable[None] | Pending | None:
            # One shared-memory read per request; a worker that is behind catches up before it
            # answers: from the wake messages waiting for it, else from the ledger.
            if words[0] > follower.applied:
                read_wakes()
                if words[0] > follower.applied:
                    follower.catch_up()
            return proxy(req, conn)

        return handle

    async def serve(self, sock: socket.socket, grace: float) -> None:
        """Serve until SIGTERM/SIGINT or until the supervisor goes away; then drain and stop."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        self.follower.check()
        if self._wakes is not None:
            loop.add_reader(self._wakes.fileno(), self.read_wakes)
        await self.node.start_data(sock, self.handler())
        self._channel.send({"t": "hello", "position": self.follower.applied, "pid": os.getpid()})
        following = loop.create_task(self.follower.run())
        listening = loop.create_task(self._listen(stop))
        await stop.wait()
        self._stop_reading_wakes()
        await self.node.drain(grace)
        for task in (following, listening):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.stop()

    async def stop(self) -> None:
        """Stop the data plane and return the ledger connection."""
        self._tail.close()
        await self.node.stop()

    async def _listen(self, stop: asyncio.Event) -> None:
        while (message := await self._channel.receive()) is not None:
            kind = message.get("t")
            if kind == "metrics?":
                samples = families(self.node.registry)
                self._channel.send({"t": "metrics", "id": message["id"], "families": samples})
        # The supervisor is gone: nobody would restart us or acknowledge our purges.
        stop.set()


async def _main(
    config: Config,
    slot: int,
    slots: int,
    board_fd: int,
    channel_fd: int,
    wakes_fd: int,
    listen_fd: int,
    keys_fd: int,
) -> None:
    board = PositionBoard(board_fd, slots)
    channel = await Channel.open(socket.socket(fileno=channel_fd))
    wakes = socket.socket(fileno=wakes_fd)
    wakes.setblocking(False)
    if listen_fd >= 0:
        sock = socket.socket(fileno=listen_fd)
        sock.setblocking(False)
    else:
        sock = reuseport_socket(config.data.host, config.data.port)
    worker = Worker(config, slot, board, channel, wakes, None if keys_fd < 0 else KeyFilter(keys_fd))
    await worker.serve(sock, config.runtime.shutdown_grace)


def main(argv: list[str]) -> None:
    """Entry point of a worker process."""
    config = Config.model_validate_json(os.environ[CONFIG_ENV])
    logs.configure(config.logging)
    slot, slots, board_fd, channel_fd, wakes_fd, listen_fd, keys_fd = (int(a) for a in argv[:7])
    # The supervisor's pass_fds left these inheritable here, and uvloop's process spawn ignores
    # close_fds: without this, the fill-writer child would hold the data port's listening socket,
    # the board and this worker's channel. The key filter goes to it through its own pass_fds.
    for fd in (board_fd, channel_fd, wakes_fd, listen_fd, keys_fd):
        if fd >= 0:
            os.set_inheritable(fd, False)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_main(config, slot, slots, board_fd, channel_fd, wakes_fd, listen_fd, keys_fd))


if __name__ == "__main__":
    main(sys.argv[1:])
