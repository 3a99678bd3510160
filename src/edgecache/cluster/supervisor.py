"""The supervisor: one control plane and ``[runtime] workers`` data-plane processes on one port.

Theory of operation
-------------------
The supervisor process runs the node's control plane (APIs, ``/metrics``, the ledger writer, task
bookkeeping, rate limits, quotas and the token cache: all in this one process, so no limit can be
exceeded once per worker). It starts N worker processes (``worker.py``) that serve the data port,
each with its own memory tier, and shares with them a position board (``board.py``).

A purge: the API's ``PurgeService.submit`` commits the ledger row, then (before the API answers)
calls :meth:`Supervisor._publish`, which sends every worker the purge on its wake socket (a
datagram socket pair, apart from the channel, so that a worker can read it synchronously on the
request that finds it behind), then writes the seq to the board's published word. From then on no
worker answers a request before it has caught up with the ledger (``follower.py``). Each worker's
reclaimer acknowledges over its channel, a batch of purges per message; ``AckBook`` completes the
purge's tasks when every worker that could hold covered entries has acknowledged.

Workers that die are replaced with a backoff (logged, counted in ``/metrics``); a replacement starts
from the ledger's end with an empty memory tier. The fill claims a dead worker held on the board are
cleared as soon as it is reaped, before the replacement starts (decision 0028). SIGTERM and SIGINT
stop the workers first (each drains its connections within ``runtime.shutdown_grace``), then the
control plane.
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
import time
from dataclasses import dataclass, field

from edgecache.app import Node
from edgecache.cluster.acks import AckBook
from edgecache.cluster.board import PositionBoard
from edgecache.cluster.channel import Channel, encode_purge
from edgecache.cluster.collector import Families, NodeCollector, WorkerView
from edgecache.cluster.worker import CONFIG_ENV
from edgecache.config import Config, Listener
from edgecache.purge.selectors import Purge, Selector

log = logging.getLogger(__name__)

STEADY_AFTER = 10.0
"""A worker that ran this long before dying is restarted at once; quicker deaths back off."""
MAX_BACKOFF = 10.0
START_TIMEOUT = 60.0
METRICS_TIMEOUT = 1.0


@dataclass(eq=False)
class _Slot:
    index: int
    process: asyncio.subprocess.Process | None = None
    channel: Channel | None = None
    wakes: socket.socket | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    families: Families = field(default_factory=list)
    metrics_waiter: asyncio.Future[None] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None


class Supervisor:
    """Runs a node as one control plane and ``config.runtime.workers`` data-plane processes."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.board = PositionBoard.create(config.runtime.workers)
        self.acks = AckBook(done=self._acknowledged)
        collector = NodeCollector(self._views, lambda: self.board.published, on_collect=self._ask_metrics)
        self.node = Node(config, apply=self._publish, collector=collector)
        self._slots = [_Slot(i) for i in range(config.runtime.workers)]
        self._port_holder: socket.socket | None = None
        self._shared: socket.socket | None = None
        self._worker_config = ""
        self._stopping = False
        self._metrics_id = 0

    # -- purges and acknowledgements -----------------------------------------------------------------

    def _publish(self, purge: Purge) -> None:
        """A purge is committed: announce it to every worker (before the API answers)."""
        after = self.board.published
        # Registered before any worker can acknowledge it.
        self.acks.published(purge)
        # The purge rides along: a worker at ``after`` applies it without reading its ledger row.
        # One datagram each, never blocking: a message the socket cannot take now is dropped, and
        # that worker reads the ledger instead (the shared word says it is behind). Sent before the
        # word is written: a request that sees the new word then always finds the message waiting
        # (a send on a local datagram socket has queued it when it returns), rather than reading
        # the ledger in the moment between the two.
        data = json.dumps({"t": "wake", "after": after, "purge": encode_purge(purge)}).encode()
        for slot in self._slots:
            if slot.wakes is not None:
                with contextlib.suppress(OSError):
                    slot.wakes.send(data)
        self.board.publish(purge.seq)

    def _acknowledged(self, purge: Purge, matched: dict[Selector, int]) -> None:
        self.node.purges.reclaimed(purge, matched)

    # -- starting and stopping -----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the data port, start the control plane, then every worker; returns once all serve."""
        cfg = self.config
        self.board.publish(self.node.index.position)
        host = cfg.data.host
        if cfg.runtime.shares_listener:
            self._shared = socket.create_server((host, cfg.data.port), backlog=1024)
            port = self._shared.getsockname()[1]
        else:
            # Bound, never listening: it holds the port (chosen by the kernel for port 0) while the
            # workers' own SO_REUSEPORT sockets come and go; only listening sockets get connections.
            holder = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            holder.bind((host, cfg.data.port))
            self._port_holder = holder
            port = holder.getsockname()[1]
        worker_config = cfg.model_copy(update={"data": Listener(host=host, port=port)})
        self._worker_config = worker_config.model_dump_json()
        self.node.data_port = port
        await self.node.start_control(refresh_metrics=self._gather_metrics)
        for slot in self._slots:
            await self._spawn(slot)
        # Polled rather than awaited: a worker that dies while starting is replaced with a new event.
        deadline = time.monotonic() + START_TIMEOUT
        while not all(s.ready.is_set() for s in self._slots):
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers not serving after {START_TIMEOUT:.0f} s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Stop every worker (each drains within the grace period), then the control plane."""
        self._stopping = True
        for slot in self._slots:
            if slot.process is not None and slot.alive:
                slot.process.send_signal(signal.SIGTERM)
        deadline = self.config.runtime.shutdown_grace + 5.0
        for slot in self._slots:
            if slot.process is None:
                continue
            try:
                await asyncio.wait_for(slot.process.wait(), deadline)
            except TimeoutError:
                log.error("worker %d did not stop within %.0f s; killing it", slot.index, deadline)
                slot.process.kill()
                await slot.process.wait()
        for slot in self._slots:
            for task in slot.tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if slot.channel is not None:
                slot.channel.close()
            if slot.wakes is not None:
                slot.wakes.close()
        await self.node.stop()
        for sock in (self._shared, self._port_holder):
            if sock is not None:
                sock.close()
        self.board.close()

    async def _spawn(self, slot: _Slot) -> None:
        parent, child = socket.socketpair()
        wakes, wakes_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        wakes.setblocking(False)
        listen_fd = self._shared.fileno() if self._shared is not None else -1
        # The disk's key filter (store/keyfilter.py): close-on-exec, so passed here explicitly. Its
        # build from the disk may still be running; a worker trusts it once the ready byte is set.
        keys_fd = -1 if self.node.key_filter is None else self.node.key_filter.fd
        inherited = [self.board.fd, child.fileno(), wakes_child.fileno(), listen_fd, keys_fd]
        fds = [fd for fd in inherited if fd >= 0]
        args = (slot.index, len(self._slots), *inherited)
        slot.ready = asyncio.Event()
        slot.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edgecache.cluster.worker",
            *(str(a) for a in args),
            pass_fds=fds,
            env={**os.environ, CONFIG_ENV: self._worker_config},
        )
        child.close()
        wakes_child.close()
        slot.wakes = wakes
        slot.channel = await Channel.open(parent)
        slot.started = time.monotonic()
        loop = asyncio.get_running_loop()
        slot.tasks = [loop.create_task(self._read(slot, slot.channel)), loop.create_task(self._watch(slot))]

    async def _read(self, slot: _Slot, channel: Channel) -> None:
        while (message := await channel.receive()) is not None:
            kind = message.get("t")
            if kind == "hello":
                self.acks.joined(slot.index, int(message["position"]))
                slot.ready.set()
            elif kind == "acks":
                for seq, counts in message["acks"]:
                    self.acks.acked(slot.index, int(seq), counts)
            elif kind == "metrics":
                slot.families = message["families"]
                if slot.metrics_waiter is not None and not slot.metrics_waiter.done():
                    slot.metrics_waiter.set_result(None)

    async def _watch(self, slot: _Slot) -> None:
        process = slot.process
        assert process is not None
        code = await process.wait()
        # Reaped: it can claim nothing more, and its fetches are over. Its claims go before the
        # slot's next worker starts, which is what lets a claim of the slot mean a live fetch.
        cleared = self.board.clear_claims(slot.index)
        self.acks.left(slot.index)
        if slot.channel is not None:
            slot.channel.close()
            slot.channel = None
        if slot.wakes is not None:
            slot.wakes.close()
            slot.wakes = None
        if self._stopping:
            return
        uptime = time.monotonic() - slot.started
        slot.backoff = 0.0 if uptime >= STEADY_AFTER else min(MAX_BACKOFF, max(0.1, 2 * slot.backoff))
        slot.restarts += 1
        log.warning(
            "worker %d (pid %d) exited with %s after %.1f s, holding %d fill claims; restarting in %.1f s",
            slot.index,
            process.pid,
            code,
            uptime,
            cleared,
            slot.backoff,
        )
        await asyncio.sleep(slot.backoff)
        if not self._stopping:
            await self._spawn(slot)

    # -- metrics -------------------------------------------------------------------------------------

    def _ask_metrics(self) -> list[asyncio.Future[None]]:
        """Ask every worker for its samples; their answers replace the ones kept per slot. (Called
        on each collection, so readers of the registry other than a scrape, the console's Live
        page, see figures at most one reading old.)"""
        self._metrics_id += 1
        loop = asyncio.get_running_loop()
        waiters = []
        for slot in self._slots:
            if slot.channel is None or not slot.alive:
                continue
            if slot.metrics_waiter is None or slot.metrics_waiter.done():
                slot.metrics_waiter = loop.create_future()
            waiters.append(slot.metrics_waiter)
            slot.channel.send({"t": "metrics?", "id": self._metrics_id})
        return waiters

    async def _gather_metrics(self) -> None:
        """Fresh samples from every worker before a scrape; a slow one keeps its last answer."""
        waiters = self._ask_metrics()
        if waiters:
            await asyncio.wait(waiters, timeout=METRICS_TIMEOUT)

    def _views(self) -> list[WorkerView]:
        return [
            WorkerView(
                slot=s.index,
                pid=s.process.pid if s.process is not None else 0,
                alive=s.alive,
                restarts=s.restarts,
                applied=self.board.applied(s.index),
                reclaimed=self.board.reclaimed(s.index),
                families=s.families,
            )
            for s in self._slots
        ]
