"""Instructions a child run of a benchmark script executes, counted by callgrind: a figure the
machine's load does not move, for comparing two trees of ``src`` (``--src A --src B``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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
