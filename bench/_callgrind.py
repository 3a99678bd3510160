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


def instructions(script: str, src: Path, *child_args: str) -> int:
    """Instructions of ``python script --child *child_args`` with ``src`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        [*VALGRIND, sys.executable, script, "--child", *child_args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
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
