"""Software counts of another process, by thread, that the machine's load does not move: the
kernel's per-thread accounting in ``/proc/<pid>/task/<tid>/`` (user and system ticks, run time,
minor and major faults, voluntary and involuntary context switches) and the syscalls ``strace -ff``
records per thread, and where ``perf record -e cpu-clock`` samples land. Used by
``bench/purge_steps.py --counts``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

TICK = 1 / os.sysconf("SC_CLK_TCK")
"""Seconds per clock tick of ``stat``'s utime and stime (10 ms with USER_HZ 100)."""

FIELDS = ("utime_ms", "stime_ms", "run_ms", "minflt", "majflt", "vcsw", "ivcsw")


@dataclass
class Snapshot:
    """Each live thread's counters at one moment, and the whole process's (dead threads included)."""

    threads: dict[int, dict[str, float]] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    process: dict[str, float] = field(default_factory=dict)


def _stat(path: Path) -> dict[str, float]:
    text = path.read_text()
    # The name in parentheses may hold spaces: the fields start after its closing one.
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): field k is rest[k - 3].
    return {
        "minflt": float(rest[7]),
        "majflt": float(rest[9]),
        "utime_ms": float(rest[11]) * TICK * 1000,
        "stime_ms": float(rest[12]) * TICK * 1000,
    }


def _status(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in path.read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            out["vcsw"] = float(line.split()[1])
        elif line.startswith("nonvoluntary_ctxt_switches:"):
            out["ivcsw"] = float(line.split()[1])
    return out


def snapshot(pid: int) -> Snapshot:
    """The counters of ``pid``'s threads now."""
    snap = Snapshot()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            tid = int(task.name)
            counts = _stat(task / "stat") | _status(task / "status")
            counts["run_ms"] = int((task / "schedstat").read_text().split()[0]) / 1e6
            snap.names[tid] = (task / "comm").read_text().strip()
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
        snap.threads[tid] = counts
    snap.process = _stat(Path(f"/proc/{pid}/stat"))
    return snap


def delta(before: Snapshot, after: Snapshot, names: dict[int, str]) -> dict[str, dict[str, float]]:
    """Counters spent between two snapshots, summed per thread label (``names``: tid to label, else
    the kernel's ``comm``), and ``process`` (every thread, the ones that ended meanwhile too)."""
    out: dict[str, dict[str, float]] = {}
    for tid, now in after.threads.items():
        then = before.threads.get(tid, dict.fromkeys(FIELDS, 0.0))
        label = names.get(tid) or after.names.get(tid, str(tid))
        acc = out.setdefault(label, dict.fromkeys(FIELDS, 0.0))
        for k in FIELDS:
            acc[k] += now.get(k, 0.0) - then.get(k, 0.0)
    out["process"] = {k: after.process[k] - before.process[k] for k in after.process}
    return out


_CALL = re.compile(r"^(?:\d+\.\d+ )?([a-z_0-9]+)\(")
_RESUMED = re.compile(r"^(?:\d+\.\d+ )?<\.\.\. ([a-z_0-9]+) resumed>")


class Strace:
    """``strace -ff`` attached to every thread of a process for a window: syscalls by thread and
    name, read once it has detached (its files are then complete)."""

    def __init__(self, pid: int) -> None:
        self._dir = tempfile.mkdtemp(prefix="edgecache-strace-")
        self._proc = subprocess.Popen(
            ["strace", "-f", "-ff", "-qq", "-o", f"{self._dir}/t", "-p", str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # attaching to every thread
        if self._proc.poll() is not None:
            raise RuntimeError(f"strace failed: {self._proc.stderr.read() if self._proc.stderr else ''!r}")

    def stop(self) -> dict[int, Counter[str]]:
        """Detach (the traced process goes on) and return the syscalls by thread id."""
        self._proc.send_signal(signal.SIGINT)
        self._proc.wait(30)
        out: dict[int, Counter[str]] = {}
        for path in Path(self._dir).glob("t.*"):
            counts: Counter[str] = Counter()
            for line in path.read_text(errors="replace").splitlines():
                if _RESUMED.match(line):
                    continue  # counted where it started
                m = _CALL.match(line)
                if m:
                    counts[m.group(1)] += 1
            out[int(path.suffix[1:])] = counts
            path.unlink()
        Path(self._dir).rmdir()
        return out


def by_label(calls: dict[int, Counter[str]], names: dict[int, str]) -> dict[str, Counter[str]]:
    """Syscalls per thread label."""
    out: dict[str, Counter[str]] = {}
    for tid, counts in calls.items():
        out.setdefault(names.get(tid, str(tid)), Counter()).update(counts)
    return out


SWITCH = re.compile(
    r"finish_task_switch|_raw_spin_unlock_irq|schedule|try_to_wake_up|ttwu|futex|select_task_rq"
)
"""Kernel symbols a sample lands on around a context switch or a wake-up (a sampled interrupt is
taken when interrupts are enabled again, so a switch's cost gathers at these symbols)."""

BLOCK_IO = re.compile(
    r"iowrite|virtqueue|virtio|vp_notify|blk_|bio|ext4_|filemap_|folio|mark_buffer|buffer|writeback|"
    r"vfs_write|generic_perform_write|copy_page|rep_movs|memcpy|xas_|fsync|_copy_from_user|iomap"
)
"""Kernel symbols of a file write and its sync: the page cache, ext4, the block layer and the
virtio notification (a VM exit, charged to the thread that rings it)."""


class PerfRecord:
    """``perf record -e cpu-clock`` of every thread of a process for a window (a software event:
    it works without hardware counters): where each thread's samples land, user or kernel, and in
    the kernel by kind (``SWITCH``, ``BLOCK_IO``, the rest)."""

    def __init__(self, pid: int, frequency: int = 4999) -> None:
        self._dir = tempfile.mkdtemp(prefix="edgecache-perf-")
        self._data = f"{self._dir}/perf.data"
        self._proc = subprocess.Popen(
            [
                "perf",
                "record",
                "-q",
                "-e",
                "cpu-clock",
                "-F",
                str(frequency),
                "-p",
                str(pid),
                "-o",
                self._data,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)
        if self._proc.poll() is not None:
            raise RuntimeError(f"perf failed: {self._proc.stderr.read() if self._proc.stderr else ''!r}")

    def stop(self) -> tuple[dict[int, Counter[str]], dict[int, Counter[str]]]:
        """Detach; per thread id, samples by kind (``user``, ``kernel: switch``, ``kernel: block
        I/O``, ``kernel: other``) and the kernel samples by symbol."""
        self._proc.send_signal(signal.SIGINT)
        self._proc.wait(60)
        script = subprocess.run(
            ["perf", "script", "-i", self._data, "-F", "tid,ip,sym,dso"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        kinds: dict[int, Counter[str]] = {}
        symbols: dict[int, Counter[str]] = {}
        for line in script.splitlines():
            parts = line.split(None, 2)  # thread id, address, symbol and (object)
            if len(parts) < 3 or not parts[0].isdigit():
                continue
            tid, rest = int(parts[0]), parts[2]
            symbol = rest.rsplit("(", 1)[0].strip()
            if "[kernel" in rest:
                kind = (
                    "kernel: switch"
                    if SWITCH.search(symbol)
                    else "kernel: block I/O"
                    if BLOCK_IO.search(symbol)
                    else "kernel: other"
                )
                symbols.setdefault(tid, Counter())[symbol] += 1
            else:
                kind = "user"
            kinds.setdefault(tid, Counter())[kind] += 1
        for path in Path(self._dir).glob("*"):
            path.unlink()
        Path(self._dir).rmdir()
        return kinds, symbols
