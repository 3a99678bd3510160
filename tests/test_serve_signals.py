"""``edgecache serve`` stopped while it starts: a SIGTERM that arrives while the supervisor is
starting its workers stops the whole node, workers included, rather than killing the supervisor
alone and leaving its workers to run on (and to write to a data directory an operator may be
removing)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from workers_node import HOST, ZONE, VersionedOrigin


def _children(pid: int, *, workers: bool = False) -> list[int]:
    """``pid``'s children; with ``workers``, only its worker processes (the start also runs short
    lived helpers, such as the dynamic loader's cache query, before the node starts)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                command = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            is_worker = b"edgecache.cluster.worker" in command
            if stat.rsplit(")", 1)[1].split()[1] == str(pid) and (is_worker or not workers):
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_during_start_stops_the_workers_too(tmp_path: Path) -> None:
    origin = VersionedOrigin()
    config = tmp_path / "edgecache.toml"
    config.write_text(
        f"""data_dir = "{tmp_path}"
[data]
port = 0
[control]
port = 0
[runtime]
workers = 2
shutdown_grace = 1
[[zones]]
id = "{ZONE}"
name = "{HOST}"
hostnames = ["{HOST}"]
origin = "http://127.0.0.1:{origin.port}"
"""
    )
    argv = [sys.executable, "-c", "from edgecache.cli import main; main()", "serve", "--config", str(config)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        children: list[int] = []
        while not children and time.monotonic() < deadline and proc.poll() is None:
            children = _children(proc.pid, workers=True)
            time.sleep(0.005)
        assert children, "the supervisor started no worker"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        seen = set(children) | set(_children(proc.pid))
        assert code == 0, f"serve exited with {code} on SIGTERM during its start"
        left = [pid for pid in seen if _alive(pid)]
        assert not left, f"processes of the node still running after it exited: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        origin.close()
