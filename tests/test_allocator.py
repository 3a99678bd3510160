"""``edgecache serve`` runs on jemalloc when it can (``runtime.allocator``, decision 0019): real
processes, the allocator read from ``/proc/<pid>/maps`` (what the dynamic linker really loaded)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from edgecache.allocator import MALLOC_CONF, find, preload_env
from workers_node import VersionedOrigin, WorkerNode

JEMALLOC = find(None)
needs_jemalloc = pytest.mark.skipif(JEMALLOC is None, reason="libjemalloc2 is not installed")


def on_jemalloc(pid: int) -> bool:
    return "libjemalloc" in Path(f"/proc/{pid}/maps").read_text()


def write_config(tmp_path: Path, runtime: str) -> Path:
    path = tmp_path / "edgecache.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "state"}"\n[data]\nport = 0\n[control]\nport = 0\n'
        f"[runtime]\nworkers = 1\n{runtime}\n"
    )
    return path


@contextmanager
def serve(config: Path, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``edgecache serve`` in its own process; yields it and its control-plane base URL."""
    log = config.parent / "serve.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from edgecache.cli import main; main()",
                "serve",
                "--config",
                str(config),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, **(env or {})},
        )
        try:
            assert proc.stdout is not None
            banner = proc.stdout.readline()
            found = re.search(r"\(control plane on (http://\S+)/client/v4\)", banner)
            assert found, f"{banner!r}; log: {log.read_text()}"
            yield proc, found.group(1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def metric(base: str) -> str:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
        text: str = resp.read().decode()
    found = re.search(r'^edgecache_allocator_processes\{allocator="(\w+)"\} 1\.0$', text, re.M)
    assert found, text
    return found.group(1)


@needs_jemalloc
def test_auto_runs_on_jemalloc_and_says_so(tmp_path: Path) -> None:
    config = write_config(tmp_path, "")
    with serve(config) as (proc, base):
        assert on_jemalloc(proc.pid)
        assert metric(base) == "jemalloc"
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert f"MALLOC_CONF={MALLOC_CONF}".encode() in environ
    assert "allocator: jemalloc" in (tmp_path / "serve.log").read_text()


def test_system_does_not_preload(tmp_path: Path) -> None:
    config = write_config(tmp_path, 'allocator = "system"')
    with serve(config) as (proc, base):
        assert not on_jemalloc(proc.pid)
        assert metric(base) == "system"
    assert 'allocator: system (runtime.allocator = "system")' in (tmp_path / "serve.log").read_text()


def test_required_jemalloc_missing_fails_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "libjemalloc.so.2"
    config = write_config(tmp_path, f'allocator = "jemalloc"\njemalloc_path = "{missing}"')
    out = subprocess.run(
        [sys.executable, "-c", "from edgecache.cli import main; main()", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert (
        f'runtime.allocator = "jemalloc" but libjemalloc.so.2 was not found (looked at {missing})'
        in out.stderr
    )
    assert "apt-get install libjemalloc2" in out.stderr
    assert not (tmp_path / "state").exists()


def test_auto_with_the_library_missing_falls_back_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "libjemalloc.so.2"
    config = write_config(tmp_path, f'jemalloc_path = "{missing}"')
    with serve(config) as (proc, base):
        assert not on_jemalloc(proc.pid)
        assert metric(base) == "system"
    lines = [line for line in (tmp_path / "serve.log").read_text().splitlines() if "allocator:" in line]
    assert len(lines) == 1 and f"libjemalloc.so.2 not found (looked at {missing})" in lines[0]


@needs_jemalloc
def test_the_operators_preload_and_malloc_conf_are_kept(tmp_path: Path) -> None:
    # An operator's own preload (here glibc's libm, harmless) stays after jemalloc, and their
    # MALLOC_CONF wins over ours.
    other = "libm.so.6"
    config = write_config(tmp_path, "")
    with serve(config, {"LD_PRELOAD": other, "MALLOC_CONF": "narenas:2"}) as (proc, _):
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert f"LD_PRELOAD={JEMALLOC}:{other}".encode() in environ
        assert b"MALLOC_CONF=narenas:2" in environ
        assert on_jemalloc(proc.pid)


def test_preload_env_puts_jemalloc_first() -> None:
    lib = Path("/opt/je/libjemalloc.so.2")
    env = preload_env({"LD_PRELOAD": "/x/a.so"}, lib)
    assert env["LD_PRELOAD"] == "/opt/je/libjemalloc.so.2:/x/a.so"
    assert env["MALLOC_CONF"] == MALLOC_CONF
    assert preload_env({}, lib)["LD_PRELOAD"] == str(lib)


@needs_jemalloc
def test_workers_inherit_jemalloc(tmp_path: Path) -> None:
    origin = VersionedOrigin()
    node = WorkerNode(tmp_path, origin, workers=2)
    try:
        deadline = time.monotonic() + 30
        while len(node.workers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = node.workers()
        assert len(workers) == 2
        assert on_jemalloc(node.process.pid)
        assert all(on_jemalloc(pid) for pid in workers)
        # The node's /metrics sums its processes: every one that serves data runs on jemalloc.
        with urllib.request.urlopen(f"http://127.0.0.1:{node.control_port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert 'edgecache_allocator_processes{allocator="jemalloc"} 2.0' in text
        assert 'allocator="system"' not in text
    finally:
        node.stop()
        origin.close()


def test_the_console_script_settles_the_allocator_before_importing_the_node(tmp_path: Path) -> None:
    # The re-execution (or the refusal) happens with only the configuration loaded: the node's
    # modules are imported once, by the process that runs.
    missing = tmp_path / "nowhere" / "libjemalloc.so.2"
    config = write_config(tmp_path, f'allocator = "jemalloc"\njemalloc_path = "{missing}"')
    exe = Path(sys.executable).parent / "edgecache"
    out = subprocess.run(
        [sys.executable, "-X", "importtime", str(exe), "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "libjemalloc.so.2 was not found" in out.stderr
    assert "edgecache.config" in out.stderr
    assert "edgecache.app" not in out.stderr and "edgecache.cli" not in out.stderr


@needs_jemalloc
def test_the_console_script_runs_serve_on_jemalloc(tmp_path: Path) -> None:
    config = write_config(tmp_path, "")
    exe = Path(sys.executable).parent / "edgecache"
    proc = subprocess.Popen(
        [str(exe), "serve", "-c", str(config)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout is not None
        assert "control plane on" in proc.stdout.readline()
        assert on_jemalloc(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
