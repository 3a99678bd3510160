"""``edgecache serve`` stopped while it starts, or failing to start: a SIGTERM that arrives while the
supervisor is starting its workers ends the start and stops the whole node, workers included, and
a start that fails stops the workers it got to before the error ends the command; neither leaves
workers to run on (and to write to a data directory an operator may be removing)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgecache.cluster.worker import CONFIG_ENV
from workers_node import VersionedOrigin, children, write_config

BANNER = b"edgecache serving on"
WORKER = b"edgecache.cluster.worker"
"""In a worker's command line (the start also runs short lived helpers, such as the dynamic loader's
cache query, before the node starts)."""


def _workers_of(data_dir: Path) -> list[int]:
    """Live worker processes of the node whose data directory is ``data_dir``, whoever their
    parent is now (an orphan is adopted by init): their configuration, in their environment,
    names it."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                command = Path(f"/proc/{entry}/cmdline").read_bytes()
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            worker = WORKER in command and CONFIG_ENV.encode() in environ
            if worker and str(data_dir).encode() in environ and _alive(int(entry)):
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(params=[(2, "auto"), (1, "process")], ids=["2 workers", "1 worker, control process"])
def serve(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Starts ``edgecache serve`` with its data in ``tmp_path`` (``prelude``: Python run before the
    command) in each supervised layout: two workers, and one behind a control plane of its own
    (decision 0026); afterwards kills what is left of it, so that a failed test leaves no process
    to the next one."""
    origin = VersionedOrigin()
    started: list[subprocess.Popen[bytes]] = []
    workers, control_plane = request.param

    def start(prelude: str) -> subprocess.Popen[bytes]:
        config = write_config(tmp_path, origin, workers=workers, grace=1.0, control_plane=control_plane)
        # Output to files, not pipes: the workers inherit them, and reading a pipe to its end would
        # wait for workers left running as well as for the command.
        code = f"{prelude}from edgecache.cli import main; main()"
        argv = [sys.executable, "-c", code, "serve", "--config", str(config)]
        with (tmp_path / "out").open("wb") as out, (tmp_path / "err").open("wb") as err:
            started.append(subprocess.Popen(argv, stdout=out, stderr=err))
        return started[-1]

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for pid in _workers_of(tmp_path):
            os.kill(pid, signal.SIGKILL)
        origin.close()


def _output(config_dir: Path) -> tuple[bytes, bytes]:
    return (config_dir / "out").read_bytes(), (config_dir / "err").read_bytes()


def test_sigterm_during_start_stops_the_workers_too(
    tmp_path: Path, serve: Callable[[str], subprocess.Popen[bytes]]
) -> None:
    proc = serve("")
    deadline = time.monotonic() + 30
    workers: list[int] = []
    while not workers and time.monotonic() < deadline and proc.poll() is None:
        workers = children(proc.pid, WORKER)
        time.sleep(0.005)
    assert workers, "the supervisor started no worker"
    seen = set(children(proc.pid)) | set(workers)  # before the signal: the exit reaps them
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    out, err = _output(tmp_path)
    assert code == 0, f"serve exited with {code} on SIGTERM during its start: {err!r}"
    assert BANNER not in out, "serve announced a node it was stopping"
    left = [pid for pid in seen if _alive(pid)] + _workers_of(tmp_path)
    assert not left, f"processes of the node still running after it exited: {left}"


def test_a_start_that_fails_stops_the_workers_it_started(
    tmp_path: Path, serve: Callable[[str], subprocess.Popen[bytes]]
) -> None:
    """Workers not serving in time (the supervisor's start timeout, set below zero here so that it
    expires as soon as the workers are spawned rather than after a minute): the command fails, and
    the workers it spawned are stopped, not left running."""
    proc = serve("import edgecache.cluster.supervisor as s; s.START_TIMEOUT = -1.0; ")
    code = proc.wait(timeout=60)
    out, err = _output(tmp_path)
    assert code != 0, "serve succeeded although its workers never served"
    assert b"TimeoutError" in err and BANNER not in out
    left = _workers_of(tmp_path)
    assert not left, f"workers still running after serve failed to start: {left}"
