"""The disk tier's fill writer as a child process of each data-plane process (decision 0020).

The event loop puts each fill's encoded record in a shared-memory ring (``store/fillring.py``)
instead of the disk writer thread's queue; this process reads the ring and writes the records to
the same LMDB environment in group-committed transactions, by the store's own rules
(``DiskStore.write_fills``: a put below ``reclaimed_upto`` is dropped, and so on). Its Python runs
under its own interpreter lock, not the loop's. Everything else (deletes, removal jobs, large
objects, renewals) stays on the writer thread, which waits for the ring's commit before any change
queued after fills (``DiskStore._await_fills``).

:class:`FillWriterProcess` starts it, restarts it when it dies (the records it had not committed
are skipped and counted as dropped: a cache may drop a fill; the loop never waits for it), kills
it first when it hangs (records waiting and no commit for ``HUNG_AFTER``: the writer thread's
fences would wait forever), waits longer between restarts of a child that keeps failing, and at
stop asks it to commit what is left and exit. A ring that tmpfs has no room for goes in the data
directory. The child dies with its parent (``PR_SET_PDEATHSIG``):
a kill -9 of the data-plane process loses the fills it had not committed, as it loses the writer
thread's queue, and no fill writer outlives the node it wrote for. The rings of data-plane
processes that are gone are removed when a new one is created.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import logging
import os
import secrets
import signal
import sys
import time
from pathlib import Path

from edgecache.config import Config
from edgecache.edge.logring import SHM, on_tmpfs, owner_alive
from edgecache.store.disk import GROUP_QUIET, GROUP_WAIT, MAX_BATCH_BYTES, MAX_BATCH_OPS, DiskStore
from edgecache.store.fillring import FillRing
from edgecache.store.keyfilter import KeyFilter

log = logging.getLogger(__name__)

RESTART_AFTER = 1.0
"""Seconds between a fill writer's unexpected exit and its restart, doubled after each exit of one
that ran less than ``RESTART_MAX`` (a child that keeps failing at start is not respawned in a
tight loop), up to ``RESTART_MAX``."""
RESTART_MAX = 30.0
HUNG_AFTER = 10.0
"""Seconds a fill writer may leave records uncommitted without committing any before it is killed
(and restarted, its records skipped): a stopped or stuck child would otherwise hold the writer
thread's fences, so deletes, reclaim steps and reserve clears, forever. Far above a group commit
(``GROUP_WAIT`` and one fsync of at most ``MAX_BATCH_BYTES``), and above a child's start."""
UNREADABLE_AFTER = 1.0
"""Seconds a fill writer waits on a record whose bytes do not match its CRC before it gives up the
records up to ``head`` (counted as dropped): a record being appended matches within microseconds,
a damaged one never does."""
START_WAIT = 10.0
"""Seconds ``FillWriterProcess.start`` waits at most for its child to be ready to commit."""
START_POLL = 0.005
"""Seconds between two looks, by ``FillWriterProcess.start``, at whether its child has marked the
ring (a child opens the store in hundreds of milliseconds: a look costs a shared-memory read)."""
STOP_GRACE = 10.0
"""Seconds a stopping fill writer has to commit what the ring holds before it is killed."""
IDLE_MAX = 0.05
"""Longest sleep of an idle fill writer between looks at the ring, when no wake came (a wake the
store ordering lost: ``store/fillring.py``)."""
_PREFIX = "edgecache-fills-"
_PR_SET_PDEATHSIG = 1


def ring_file(data_dir: Path, shm: Path = SHM) -> Path:
    """A new ring file for this process: on tmpfs when the machine has one (its pages are never
    written back to a disk), else in the data directory. The rings there of processes that are
    gone (killed before they could remove theirs) are removed first."""
    return _ring_in(shm if on_tmpfs(shm) else data_dir)


def create_ring(data_dir: Path, shm: Path = SHM) -> FillRing:
    """A new ring for this process (``ring_file``); in the data directory when tmpfs has no room
    for it (Docker gives a container 64 MiB of ``/dev/shm``: a few workers' rings fill it)."""
    path = ring_file(data_dir, shm)
    try:
        return FillRing.create(path)
    except OSError as exc:
        if path.parent == data_dir:
            raise
        log.warning(
            "no room for a disk fill ring in %s (%s); the ring goes in the data directory",
            path.parent,
            exc.strerror,
            extra={"event": "disk_fill_ring_fallback", "directory": str(path.parent)},
        )
    return FillRing.create(_ring_in(data_dir))


def _ring_in(directory: Path) -> Path:
    for stale in directory.glob(f"{_PREFIX}*.ring"):
        pid = stale.name[len(_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not owner_alive(int(pid), 0):
            stale.unlink(missing_ok=True)
    return directory / f"{_PREFIX}{os.getpid()}-{secrets.token_hex(6)}.ring"


class FillWriterProcess:
    """One data-plane process's fill writer, supervised."""

    def __init__(self, config: Config, disk: DiskStore) -> None:
        self.config = config
        self.disk = disk
        self.ring = create_ring(config.data_dir)
        keys = disk.key_filter
        self._keys_fd = -1 if keys is None else keys.fd
        """The node's key filter, which the child sets for what it writes (-1: none)."""
        self.restarts = 0
        self.hung_after = HUNG_AFTER
        """Seconds without a commit, while records wait, after which the child is killed."""
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Start the child and send fills through the ring from now on; return once the child is
        ready to commit them (or has exited, or ``START_WAIT`` has passed: its supervision goes
        on). Until then a fill would wait in the ring for the child's start, hundreds of
        milliseconds in which the node's other workers, told it was stored, would not find it on
        disk and fetch it again (decision 0028: the first hot object fetched twice)."""
        proc = self._proc = await self._spawn()
        self.disk.attach_fills(self.ring)
        self._task = asyncio.get_running_loop().create_task(self._supervise())
        deadline = time.monotonic() + START_WAIT
        while self.ring.started != proc.pid:
            if proc.returncode is not None:
                # Its supervision reports the exit too and starts it again: the node serves on.
                log.warning(
                    "disk fill writer exited with status %s before it was ready; going on without it",
                    proc.returncode,
                    extra={"event": "disk_fill_writer_start_failed", "status": proc.returncode},
                )
                return
            if time.monotonic() > deadline:
                log.warning("disk fill writer not ready after %g s; going on without it", START_WAIT)
                return
            await asyncio.sleep(START_POLL)

    @property
    def pid(self) -> int | None:
        """The running child's pid (None before it started)."""
        return None if self._proc is None else self._proc.pid

    def _args(self) -> list[str]:
        cfg = self.config
        reserve = {
            z.id: [z.cache_reserve.budget_bytes, z.cache_reserve.retention_days * 86400.0] for z in cfg.zones
        }
        return [
            "--parent",
            str(os.getpid()),
            "--ring",
            str(self.ring.path),
            "--wake-fd",
            str(self.ring.wake_fd),
            "--done-fd",
            str(self.ring.done_fd),
            "--disk",
            str(cfg.data_dir / cfg.storage.disk.path),
            "--budget",
            str(cfg.storage.disk.budget_bytes),
            "--reserve",
            json.dumps(reserve),
            "--keys-fd",
            str(self._keys_fd),
        ]

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edgecache.edge.fillwriter",
            *self._args(),
            pass_fds=tuple(fd for fd in (self.ring.wake_fd, self.ring.done_fd, self._keys_fd) if fd >= 0),
        )

    async def _supervise(self) -> None:
        delay = RESTART_AFTER
        while True:
            assert self._proc is not None
            began = time.monotonic()
            code = await self._watch(self._proc)
            if self._stopping:
                return
            # Before the restart's wait: the writer thread's fences pass at once.
            lost = self.ring.skip()
            self.disk.stats.dropped += lost
            self.restarts += 1
            if time.monotonic() - began >= RESTART_MAX:
                delay = RESTART_AFTER
            log.warning(
                "disk fill writer exited with status %s (%d fills not written); starting it again in %g s",
                code,
                lost,
                delay,
                extra={"event": "disk_fill_writer_exited", "status": code, "lost": lost},
            )
            await asyncio.sleep(delay)
            delay = min(2 * delay, RESTART_MAX)
            if self._stopping:
                return
            self._proc = await self._spawn()

    async def _watch(self, proc: asyncio.subprocess.Process) -> int:
        """The child's exit status, once it exits, or is killed for committing nothing for
        ``hung_after`` seconds while records wait in the ring."""
        exited = asyncio.ensure_future(proc.wait())
        ring = self.ring
        committed, since = ring.committed, time.monotonic()
        try:
            while not exited.done():
                await asyncio.wait((exited,), timeout=min(1.0, self.hung_after / 4))
                now = time.monotonic()
                if ring.committed != committed or not ring.pending():
                    committed, since = ring.committed, now
                elif now - since >= self.hung_after and proc.returncode is None and not self._stopping:
                    log.error(
                        "disk fill writer committed nothing in %.1f s with %d fills waiting; killing it",
                        now - since,
                        ring.pending(),
                        extra={"event": "disk_fill_writer_hung", "pending": ring.pending()},
                    )
                    proc.kill()
                    since = now
            return exited.result()
        finally:
            exited.cancel()

    async def stop(self) -> None:
        """Let the child commit what the ring holds, end it, and send fills to the writer thread."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        proc = self._proc
        self.ring.close_writer()
        if proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                log.error("disk fill writer did not stop in %g s; killing it", STOP_GRACE)
                proc.kill()
                await proc.wait()
        # Detached before the next await: a fill the loop puts from now on goes to the writer
        # thread, not to a ring nobody reads (a fence on it would never pass).
        self.disk.attach_fills(None)
        self.disk.stats.dropped += self.ring.skip()
        await asyncio.to_thread(self.disk.flush)
        self.ring.close(unlink=True)


def run(
    ring: FillRing,
    store: DiskStore,
    stop: list[bool],
    parent: int,
    unreadable_after: float = UNREADABLE_AFTER,
) -> None:
    """Write what the ring gathers until ``stop[0]``, the ring's closing flag or the death of
    ``parent`` (the appending process, where no ``PR_SET_PDEATHSIG`` ends this one with it), then
    what is left. A record unreadable for ``unreadable_after`` seconds is given up, with the
    records after it."""
    pos = ring.committed
    stuck = 0.0  # since when the record at ``pos`` has not been readable (0: it was)
    while True:
        seen = ring.available(pos)
        if not seen:
            if stop[0] or ring.closing or os.getppid() != parent:
                return
            ring.wait(pos, IDLE_MAX)
            continue
        if not ring.urgent(pos) and not ring.closing:
            # More fills share the commit if they keep coming (the writer thread's GROUP_WAIT);
            # a fence (``want``) ends the wait at once, not at the next look.
            began = time.monotonic()
            ring.doze(GROUP_QUIET)
            while (
                ring.available(pos) > seen
                and time.monotonic() - began < GROUP_WAIT
                and not ring.urgent(pos)
                and ring.available(pos) < MAX_BATCH_BYTES
            ):
                seen = ring.available(pos)
                ring.doze(GROUP_QUIET)
        batch = ring.read(pos, MAX_BATCH_OPS, MAX_BATCH_BYTES)
        if batch.end == pos:
            # A record whose bytes are not all visible yet, or never will be.
            now = time.monotonic()
            stuck = stuck or now
            settled = ring.settled() if now - stuck >= unreadable_after else None
            if settled is None:
                time.sleep(GROUP_QUIET)
                continue
            batch, skipped = settled
            store.stats.dropped += skipped
            log.error(
                "disk fill ring: the record at %d does not match its CRC; %d fills given up",
                pos,
                skipped,
                extra={"event": "disk_fill_ring_unreadable", "position": pos, "lost": skipped},
            )
            ring.commit(batch, store.fill_counters(), skipped)
            pos, stuck = batch.end, 0.0
            continue
        stuck = 0.0
        if batch.records:
            store.write_fills(batch.records)
        ring.commit(batch, store.fill_counters())
        pos = batch.end


def main(argv: list[str] | None = None) -> None:
    """``python -m edgecache.edge.fillwriter``: how a data-plane process starts its fill writer."""
    parser = argparse.ArgumentParser(description="edgecache disk fill writer")
    parser.add_argument("--parent", type=int, required=True, help="the appending process's pid")
    parser.add_argument("--ring", type=Path, required=True)
    parser.add_argument("--wake-fd", type=int, required=True)
    parser.add_argument(
        "--done-fd",
        type=int,
        default=-1,
        help="the eventfd to write after each commit (none from an older node, which polls instead)",
    )
    parser.add_argument("--disk", type=Path, required=True)
    parser.add_argument("--budget", type=int, required=True)
    parser.add_argument("--reserve", type=json.loads, default={})
    parser.add_argument("--keys-fd", type=int, default=-1, help="the node's disk key filter (memfd)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reserve: dict[str, list[float]] = args.reserve
    stop = [False]

    def stopping(*_: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, stopping)
    # A terminal's Ctrl-C reaches the whole process group: the node stops this one (``closing``)
    # once it has stopped taking fills, so none is dropped on the way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != args.parent:
        return  # the parent died before the line above could tie this process to it
    ring = FillRing.open(args.ring, args.wake_fd, args.done_fd)
    store = DiskStore(
        args.disk,
        budget=args.budget,
        position=0,
        reserve_budget=lambda zone: int(reserve[zone][0]) if zone in reserve else 0,
        reserve_retention=lambda zone: reserve[zone][1] if zone in reserve else 0.0,
        zones=list(reserve),
        writer=False,
    )
    if args.keys_fd >= 0:
        # Before the first commit: what this child writes is "maybe" for every process at once.
        store.use_filter(KeyFilter(args.keys_fd), build=False)
    # Counted on from where the last fill writer of this ring stopped.
    for name, value in ring.counters().items():
        setattr(store.stats, name, value)
    # What start-up made (modules, the store) lives as long as the process. Collected first (frozen
    # garbage would stay for good), then frozen: a full collection walks only what came after, where
    # it walked every module (decision 0020's addendum ``fillchild``); a young collection never
    # walks the old objects, frozen or not.
    gc.collect()
    gc.freeze()
    ring.mark_started()
    try:
        run(ring, store, stop, args.parent)
    finally:
        store.close()
        # The appender removes its ring at stop; one that died cannot.
        ring.close(unlink=os.getppid() != args.parent)


if __name__ == "__main__":
    main()
