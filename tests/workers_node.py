"""A multi-process node for tests: ``edgecache serve --config`` as a real subprocess, an origin
whose answers carry a version, and a way to tell which worker process holds a client connection."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edgecache.config import DEFAULT_ACCOUNT_ID
from edgecache.control.credentials import CredentialService, Permission
from edgecache.db.engine import open_database, sqlite_url

ZONE = "9" * 32
HOST = "workers.example"


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


class VersionedOrigin:
    """Answers every path with ``<path> v<version>``, cacheable for 10 minutes, tagged ``obj``;
    paths under ``/slow/`` take ``slow`` seconds; paths that contain ``/private/`` are private
    (not stored); paths that contain ``/late-body/`` send their head, then their body
    ``late_body`` seconds later, the first time they are asked for."""

    def __init__(self) -> None:
        self.version = 1
        self.slow = 1.0
        self.late_body = 0.0
        self.fetches = 0
        self.asked: set[str] = set()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                origin.fetches += 1
                if self.path.startswith("/slow/"):
                    time.sleep(origin.slow)
                body = f"{self.path} v{origin.version}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                private = "/private/" in self.path
                self.send_header("Cache-Control", "private" if private else "public, max-age=600")
                self.send_header("Cache-Tag", "obj")
                self.end_headers()
                if "/late-body/" in self.path and self.path not in origin.asked:
                    origin.asked.add(self.path)
                    self.wfile.flush()
                    time.sleep(origin.late_body)
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def write_config(
    data_dir: Path,
    origin: VersionedOrigin,
    *,
    workers: int = 2,
    grace: float = 5.0,
    fill_lock_timeout: float = 5.0,
    extra: str = "",
    control_plane: str = "auto",
    listen: str = "auto",
) -> Path:
    """Write ``data_dir/edgecache.toml``: free ports, ``workers`` workers sharing the data port as
    ``listen`` says, the control plane where ``control_plane`` says, one zone (``ZONE`` on
    ``HOST``) in front of ``origin``; ``extra`` is TOML appended to it."""
    config = data_dir / "edgecache.toml"
    config.write_text(
        f"""data_dir = "{data_dir}"
[data]
port = 0
[control]
port = 0
[runtime]
workers = {workers}
control_plane = "{control_plane}"
listen = "{listen}"
shutdown_grace = {grace}
fill_lock_timeout = {fill_lock_timeout}
[[zones]]
id = "{ZONE}"
name = "{HOST}"
hostnames = ["{HOST}"]
origin = "http://127.0.0.1:{origin.port}"
{extra}"""
    )
    return config


def children(pid: int, marker: bytes | None = None, *, exclude: bytes | None = None) -> list[int]:
    """Process ids of ``pid``'s children, from /proc; with ``marker``, only those whose command
    line contains it; with ``exclude``, none whose command line contains that."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                command = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] != str(pid):
                continue
            if (marker is None or marker in command) and (exclude is None or exclude not in command):
                found.append(int(entry))
    return found


class WorkerNode:
    """``edgecache serve`` with ``[runtime] workers = N`` (and ``control_plane``) on free ports, in
    ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        origin: VersionedOrigin,
        workers: int = 2,
        grace: float = 5.0,
        extra: str = "",
        fill_lock_timeout: float = 5.0,
        control_plane: str = "auto",
        listen: str = "auto",
    ) -> None:
        """``extra``: TOML appended to the configuration."""
        self.data_dir = data_dir
        config = write_config(
            data_dir,
            origin,
            workers=workers,
            grace=grace,
            fill_lock_timeout=fill_lock_timeout,
            extra=extra,
            control_plane=control_plane,
            listen=listen,
        )
        self.log = (data_dir / "serve.log").open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from edgecache.cli import main; main()",
                "serve",
                "--config",
                str(config),
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        assert self.process.stdout is not None
        banner = self.process.stdout.readline()
        self.banner = banner
        found = re.search(r"http://127\.0\.0\.1:(\d+) \(control plane on http://127\.0\.0\.1:(\d+)/", banner)
        assert found, f"no banner: {banner!r}; log: {(data_dir / 'serve.log').read_text()}"
        self.data_port, self.control_port = int(found[1]), int(found[2])
        engine = open_database(sqlite_url(data_dir))
        try:
            _, self.token = CredentialService(engine).create_token(
                DEFAULT_ACCOUNT_ID, "workers test", [Permission.CACHE_PURGE], [ZONE]
            )
        finally:
            engine.dispose()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Stop the node with ``sig``; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=60)
        self.log.close()
        return code

    def workers(self) -> list[int]:
        """Process ids of the running workers (the supervisor's children but its access-log
        formatter)."""
        return sorted(children(self.process.pid, exclude=b"edgecache.edge.logtail"))

    def connection(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.data_port, timeout=10)
        conn.connect()
        return conn

    def get(self, conn: http.client.HTTPConnection, path: str) -> tuple[int, str, str]:
        """Status, CF-Cache-Status and body of one request on a kept-alive connection."""
        conn.request("GET", path, headers={"Host": HOST})
        resp = conn.getresponse()
        return resp.status, resp.headers.get("CF-Cache-Status", ""), resp.read().decode()

    def owner(self, conn: http.client.HTTPConnection) -> int:
        """The worker process holding the server side of a client connection (0: none found; ask
        after a response, when the worker has accepted the connection)."""
        assert conn.sock is not None
        client_port = conn.sock.getsockname()[1]
        inode = ""
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if (
                int(fields[1].split(":")[1], 16) == self.data_port
                and int(fields[2].split(":")[1], 16) == client_port
            ):
                inode = fields[9]
        for pid in self.workers():
            try:
                links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            except OSError:
                continue
            if f"socket:[{inode}]" in links:
                return pid
        return 0

    def purge(self, body: dict[str, Any]) -> str:
        """A Cloudflare purge through the control plane; returns the job id."""
        conn = http.client.HTTPConnection("127.0.0.1", self.control_port, timeout=30)
        try:
            conn.request(
                "POST",
                f"/client/v4/zones/{ZONE}/purge_cache",
                body=json.dumps(body),
                headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            )
            answer = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        assert answer["success"], answer
        return str(answer["result"]["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.control_port, timeout=30)
        try:
            conn.request(
                "GET", f"/edgecache/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {self.token}"}
            )
            job: dict[str, Any] = json.loads(conn.getresponse().read())
            return job
        finally:
            conn.close()

    def metrics(self) -> dict[str, float]:
        """Every sample of ``/metrics``, keyed by its name and labels as exposed."""
        conn = http.client.HTTPConnection("127.0.0.1", self.control_port, timeout=30)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        out: dict[str, float] = {}
        families: set[str] = set()
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                # The exposition format allows one block per family: Prometheus refuses a scrape
                # that repeats one, and a reader taking the first would read one process's value.
                family = line.split()[2]
                assert family not in families, f"/metrics repeats the family {family}"
                families.add(family)
            elif line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                assert name not in out, f"/metrics repeats the sample {name}"
                out[name] = float(value)
        return out

    def spread(self, path: str, at_least: int = 2, tries: int = 200) -> Iterator[tuple[int, str, str, int]]:
        """Requests on fresh connections until every worker answered at least ``at_least``:
        yields (status, cache status, body, worker pid) for each."""
        seen: dict[int, int] = {}
        for _ in range(tries):
            conn = self.connection()
            try:
                status, cache, body = self.get(conn, path)
                pid = self.owner(conn)
            finally:
                conn.close()
            seen[pid] = seen.get(pid, 0) + 1
            yield status, cache, body, pid
            workers = self.workers()
            if len(workers) >= 2 and all(seen.get(p, 0) >= at_least for p in workers):
                return
        raise AssertionError(f"connections did not reach every worker: {seen}")
