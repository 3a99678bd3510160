"""One tree's figures from a child process: this benchmark's script run again with ``--child`` and a
scratch directory, the tree's ``src`` first on the path, its last line of output read as JSON (how
the benchmarks that compare this tree with ``--before`` another one run each side)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def child_figures(script: str, src: Path, *args: str) -> dict[str, object]:
    """``script --child DIR *args`` with ``src`` first on the path: its last line, decoded."""
    tmp = Path(tempfile.mkdtemp(prefix="edgecache-bench-"))
    try:
        env = {**os.environ, "PYTHONPATH": str(src)}
        argv = [sys.executable, script, "--child", str(tmp), *args]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
        found: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        return found
    finally:
        shutil.rmtree(tmp)
