"""The hit benchmark's own machinery (``bench/run.py``): the h2load client, ``--workers``, where
nginx keeps its cache, and what the tables say about how they were measured.

Real processes only: h2load against the bare ceiling server, nginx and edgecache started as the
benchmark starts them. h2load and nginx come from Debian (installed here when missing, as the
benchmark does); without them the tests are skipped, except under CI, where they fail.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from nginx import find_nginx, install_nginx

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _bench(name: str) -> ModuleType:
    # bench/ is a directory of scripts that import each other by bare name, as when run from there
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


run = _bench("run")
srv = _bench("_servers")
h2load = _bench("_h2load")
report = _bench("_report")


def _need(what: str, why: str | None) -> None:
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI: {why}")
    pytest.skip(f"no {what}: {why}")


def _ensure_h2load() -> None:
    if shutil.which("h2load"):
        return
    why = "h2load not found, and not root to install nghttp2-client"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["timeout", "300", "apt-get", "install", "-y", "-q", "nghttp2-client"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:  # a fresh machine's package lists may be empty
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        why = None if shutil.which("h2load") else f"apt-get install failed: {done.stderr[-300:]}"
    _need("h2load", why)


def _ensure_nginx() -> None:
    _need("nginx", None if find_nginx() else install_nginx())


@pytest.fixture
def tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="edgecache-bench-test-"))
    path.chmod(0o755)  # nginx's workers read configs and files here
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running(server: srv.Server) -> Iterator[srv.Server]:
    try:
        yield server
    finally:
        srv.stop(server)


def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_h2load_loads_a_real_server_and_reports_its_figures(tmp: Path) -> None:
    _ensure_h2load()
    with running(srv.start_bare(tmp)) as bare:
        res = h2load.run(f"http://127.0.0.1:{bare.port}/medium", 1)
    assert res.rps > 100
    assert res.requests > 100
    assert res.errors == 0
    assert 0 < res.mean_ms <= res.max_ms
    assert res.cpu > 0


def test_h2load_that_completes_nothing_is_an_error_not_zero_requests(tmp: Path) -> None:
    _ensure_h2load()
    with pytest.raises(h2load.H2loadError):
        h2load.run(f"http://127.0.0.1:{srv.free_port()}/small", 1)


def test_h2load_runs_only_the_one_url_scenarios() -> None:
    specs, memory = run.plan(run.parse_args(["--client", "h2load"]))
    assert [s.name for s in specs] == ["small", "medium"]
    assert memory
    assert [s.name for s in run.plan(run.parse_args([]))[0]] == ["small", "medium", "rand10k", "missmix"]
    with pytest.raises(SystemExit):
        run.parse_args(["--client", "h2load", "--only", "missmix"])
    with pytest.raises(SystemExit):
        run.parse_args(["--workers", "0"])


def test_each_server_runs_in_every_place_of_a_round_the_baseline_too() -> None:
    servers = ["nginx", "varnish", "edgecache", "bare", "baseline"]
    orders = [run.round_order(servers, r) for r in range(2 * len(servers))]
    assert all(sorted(order) == sorted(servers) for order in orders)
    for place in range(len(servers)):
        assert sorted(order[place] for order in orders[: len(servers)]) == sorted(servers)
    assert orders[: len(servers)] == orders[len(servers) :]
    assert run.round_order([], 3) == []


def test_table_names_the_client_its_latency_figures_and_the_configuration() -> None:
    sample = report.Sample(50_000, (0.5, 9.0), 0, 80, 90, 0, 1)
    scn = report.Scenario(
        "medium",
        "(b) hot 64 KiB hit",
        samples={"edgecache": [sample]},
        client="h2load",
        latency=run.LATENCY["h2load"],
        setup=run.setup_line(2),
    )
    table = report.scenario_table(scn)
    assert "| mean ms | max ms |" in table
    assert "| h2load CPU % |" in table
    assert "edgecache `workers = 2`, nginx `worker_processes 2`" in table
    assert "| 0.50 | 9.00 |" in table
    assert "bare" not in run.setup_line(2, ceiling=False)
    # where the caches live: nginx's files on tmpfs, edgecache's disk tier in the temp dir's filesystem
    caches = run.setup_line(1)
    assert run.filesystem(Path("/proc/self")) == "proc"
    on_disk = run.filesystem(Path(tempfile.gettempdir()))
    assert on_disk != "an unknown filesystem"
    assert f"edgecache's LMDB disk tier (behind its memory tier) on {on_disk}" in caches
    if run.SHM.is_dir():
        assert "nginx's files on tmpfs (/dev/shm)" in caches
    assert "`workers = 1`" in report.scenario_table(
        report.Scenario("small", "(a)", samples={"edgecache": [sample]}, setup=run.setup_line(1))
    )


def test_workers_reach_nginx_and_edgecache_and_nginx_caches_on_tmpfs() -> None:
    _ensure_nginx()
    with run.workspace(keep=False) as fleet:
        shm = fleet.nginx_cache.parent
        assert shm.parent == run.SHM
        origin = srv.start_origin(fleet.tmp)
        fleet.started.append(origin)
        servers, _unavailable = run.start_caches(fleet, origin, workers=2)
        by_name = {s.name: s for s in servers}
        nginx, edgecache = by_name["nginx"], by_name["edgecache"]
        workers = [
            p
            for p in nginx.pids()
            if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"nginx: worker process")
        ]
        assert len(workers) == 2
        assert _get(nginx.port, "/small")[1]["x-cache"] == "MISS"
        assert _get(nginx.port, "/small")[1]["x-cache"] == "HIT"
        assert any(f.is_file() for f in fleet.nginx_cache.rglob("*"))  # the cached file is on tmpfs
        assert "workers = 2" in (fleet.tmp / "edgecache.toml").read_text()
        status, _headers, body = _get(edgecache.port, "/medium")
        assert (status, len(body)) == (200, 65536)
    assert not shm.exists()


def test_stopping_a_server_stops_what_outlives_its_master(tmp: Path) -> None:
    """A master whose children outlive it, one of them started as it stops: a shell that runs
    ``sleep`` in the background, and on SIGTERM starts another and exits. ``stop`` leaves neither
    running."""
    script = "trap 'sleep 300 & exit 0' TERM; sleep 300 & wait"
    log = tmp / "shell.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["sh", "-c", script], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = srv.Server("shell", 0, "", proc, log)
    try:
        deadline = time.monotonic() + 10
        while len(server.pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(server.pids()) == 2, "the shell started no background sleep"
        srv.stop(server, grace=1.0)
        assert proc.returncode == 0  # the trap ran: it started a child as the shell stopped
        assert srv.session_members(proc.pid) == []
    finally:
        for pid, _started in srv.session_members(proc.pid):
            os.kill(pid, signal.SIGKILL)
