"""Instructions a child run of a benchmark script executes, counted by callgrind: a figure the
machine's load does not move, for comparing two trees of ``src`` (``--src A --src B``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

VALGRIND = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")


def instructions(script: str, src: Path, *child_args: str, main_thread: bool = False) -> int:
    """Instructions of ``python script --child *child_args`` with ``src`` first on the path; with
    ``main_thread``, of its main thread alone (the event loop's, without the worker threads whose
    periodic work grows with the run's length rather than with what it runs)."""
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryDirectory(prefix="edgecache-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        tool = (*VALGRIND[:2], "--separate-threads=yes", f"--callgrind-out-file={out}")
        proc = subprocess.run(
            [*(tool if main_thread else VALGRIND), sys.executable, script, "--child", *child_args],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        if main_thread:
            # One file per thread, numbered in the order they started: -01 is the main thread.
            summary = re.search(r"^summary:\s+(\d+)", Path(f"{out}-01").read_text(), re.MULTILINE)
            assert summary, proc.stderr[-2000:]
            return int(summary.group(1))
    found = re.search(r"refs:\s+([\d,]+)", proc.stderr)
    assert found, proc.stderr[-2000:]
    return int(found.group(1).replace(",", ""))


def thread_instructions(script: str, src: Path, *child_args: str) -> dict[int, int]:
    """Instructions of ``python script --child *child_args`` (``src`` first on the path) by thread:
    callgrind's thread number (1, the main thread, first) to its count."""
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp:
        out = Path(tmp) / "out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",
                f"--callgrind-out-file={out}",
                sys.executable,
                script,
                "--child",
                *child_args,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        counts: dict[int, int] = {}
        for path in Path(tmp).glob("out-*"):
            text = path.read_text(errors="replace")
            thread = re.search(r"^thread: (\d+)$", text, re.M)
            total = re.search(r"^totals: (\d+)$", text, re.M)
            assert thread and total, path
            counts[int(thread.group(1))] = int(total.group(1))
        return counts
