"""The access-log formatter: follows every ring in a ring directory and writes formatted lines
(Varnish's ``varnishncsa``). A node whose access log is on runs one as a child process writing the
log file (``--output``); ``edgecache log tail`` runs one by hand, printing to stdout.

Every ``FLUSH_EVERY`` seconds it reads what each ring gathered, formats it and writes it with one
``write`` and a flush, so a crash loses at most one interval. It looks for new rings (a data-plane
process that started) every ``RESCAN_EVERY`` seconds. Records a ring overwrote before they were
read are counted, never waited for: the writer (the event loop) does not slow down for a reader.
When it writes the node's log file it keeps its place in each ring (a restart resumes there),
reports losses as a warning on stderr, and removes the rings of processes that are gone once read.
SIGTERM and SIGINT make it read what is left, write it, and exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from edgecache.config import Zone
from edgecache.edge.logformat import Format, LineFormatter
from edgecache.edge.logring import RingReader, ring_files
from edgecache.edge.zones import ZoneTable

log = logging.getLogger(__name__)

FLUSH_EVERY = 0.1
RESCAN_EVERY = 1.0
ZONES_FILE = "zones.json"
"""Written by the node into the ring directory: the zones, so lines name the zone of their host."""


def write_zones(directory: Path, zones: tuple[Zone, ...]) -> None:
    """Save the zones a formatter needs to name each request's zone."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (ZONES_FILE + ".new")
    tmp.write_text(json.dumps([z.model_dump(mode="json") for z in zones]))
    tmp.replace(directory / ZONES_FILE)


def read_zones(directory: Path) -> ZoneTable:
    """The zones the node saved (none when it saved nothing)."""
    try:
        raw = json.loads((directory / ZONES_FILE).read_text())
    except FileNotFoundError:
        raw = []
    return ZoneTable(tuple(Zone.model_validate(z) for z in raw))


class Tail:
    """Follows the rings of one directory and writes their records as lines to ``out``."""

    def __init__(
        self, directory: Path, out: IO[str], fmt: Format, *, keep: bool, from_start: bool = False
    ) -> None:
        self.directory = directory
        self.out = out
        self.keep = keep
        self.from_start = from_start
        self.formatter = LineFormatter(fmt, read_zones(directory))
        self.readers: dict[Path, RingReader] = {}
        self.lost_reported = 0
        self.lost_before = 0
        """Records lost in rings this formatter no longer follows."""

    def rescan(self) -> None:
        """Open rings that appeared; forget (and, for the node's formatter, remove) drained rings
        of processes that are gone: a process with the same pid but another start time is not
        the ring's owner."""
        for path in ring_files(self.directory):
            if path not in self.readers:
                try:
                    self.readers[path] = RingReader(path, keep=self.keep, from_start=self.from_start)
                except (OSError, ValueError):
                    log.warning("cannot read access-log ring %s", path, exc_info=True)
        for path, reader in list(self.readers.items()):
            if not path.exists():
                self._forget(path)
            elif not reader.owner_alive() and reader.drained():
                self._forget(path)
                if self.keep:
                    path.unlink(missing_ok=True)

    def _forget(self, path: Path) -> None:
        reader = self.readers.pop(path)
        self.lost_before += reader.lost
        reader.close()

    def pump(self) -> int:
        """Read, format and write what every ring gathered; the number of lines written."""
        total = 0
        for reader in self.readers.values():
            records = reader.read()
            if records:
                self.out.write(self.formatter.lines(records))
                self.out.flush()
            # Saved after the flush: a formatter killed in between writes these lines again
            # rather than losing them.
            count = len(records)
            reader.commit(count)
            total += count
        lost = self.lost()
        if lost != self.lost_reported:
            log.warning(
                "access log fell behind: %d records lost so far (overwritten before they were read)",
                lost,
                extra={"event": "access_log_lost", "lost": lost},
            )
            self.lost_reported = lost
        return total

    def lost(self) -> int:
        """Records overwritten before this formatter read them, over every ring it follows."""
        return self.lost_before + sum(r.lost for r in self.readers.values())

    def run(self, stop: threading.Event) -> None:
        """Follow the rings until ``stop`` is set, then write what is left."""
        ticks_per_scan = max(1, round(RESCAN_EVERY / FLUSH_EVERY))
        tick = 0
        self.rescan()
        while not stop.wait(FLUSH_EVERY):
            if tick % ticks_per_scan == 0:
                self.rescan()
            tick += 1
            self.pump()
        self.rescan()
        self.pump()
        # Once more after the last read: the rings of processes that stopped with records unread
        # (their last batch, closed before this formatter read it) are drained only now, and a
        # ring left on tmpfs holds its memory until someone removes it.
        self.rescan()
        for reader in self.readers.values():
            reader.close()


def follow(
    directory: Path,
    fmt: Format,
    output: Path | None,
    *,
    from_start: bool = False,
    stop: threading.Event | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Run a formatter in this process until SIGTERM/SIGINT (or ``stop``): to ``output`` as the
    node's formatter (calling ``ready`` once it is), else to stdout."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    if output is None:
        Tail(directory, sys.stdout, fmt, keep=False, from_start=from_start).run(stop)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("a", encoding="utf-8", errors="replace") as out:
        tail = Tail(directory, out, fmt, keep=True)
        if ready is not None:
            ready()
        tail.run(stop)


def main(argv: list[str] | None = None) -> None:
    """``python -m edgecache.edge.logtail``: how a node starts its formatter (a light import,
    without the CLI's)."""
    parser = argparse.ArgumentParser(description="edgecache access-log formatter")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--format", choices=("combined", "json"), default="combined")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fmt: Format = "json" if args.format == "json" else "combined"
    follow(args.dir, fmt, args.output, ready=_say_ready)


def _say_ready() -> None:
    # The node waits for this line before it serves: a stop after it loses no record.
    sys.stdout.write("ready\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
