"""kill -9 in the middle of fills and purges: the restarted node serves no corrupt object and no
object that an acknowledged purge covered (real processes, the official SDK for the purges)."""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cloudflare

ZONE = "0123456789abcdef0123456789abcdef"
PATHS = [f"/obj/{i}" for i in range(120)]
TAGS = 6


class Origin:
    """Each path's bytes carry a version; a purge test bumps the versions of a tag before purging it."""

    def __init__(self) -> None:
        self.version = dict.fromkeys(PATHS, 0)
        self.lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with origin.lock:
                    v = origin.version.get(self.path)
                if v is None:
                    self.send_error(404)
                    return
                body = origin.body(self.path, v)
                self.send_response(200)
                self.send_header("Cache-Control", "public, max-age=3600")
                self.send_header("Cache-Tag", f"t{tag_of(self.path)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def body(path: str, version: int) -> bytes:
        size = 200 + (hash(path) % 7) * 9000
        return (f"{path} v{version} ".encode() * (size // 10 + 1))[:size]


def tag_of(path: str) -> int:
    return int(path.rsplit("/", 1)[1]) % TAGS


def start(data: Path, origin: Origin, *extra: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start ``crash_node.py`` (``extra``: its optional arguments) and read its ports and token."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("crash_node.py")),
            str(data),
            f"http://127.0.0.1:{origin.server.server_port}",
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "the node did not start"
    return proc, json.loads(line)


def get(port: int, path: str) -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": "crash.example"})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("Cache-Status", "")
    finally:
        conn.close()


def disk_entries(control_port: int) -> float:
    """The node's ``edgecache_disk_entries`` (summed over zones and areas), from ``/metrics``."""
    conn = http.client.HTTPConnection("127.0.0.1", control_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    lines = [line for line in text.splitlines() if line.startswith("edgecache_disk_entries")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def test_kill_9_during_fills_and_purges(tmp_path: Path) -> None:
    origin = Origin()
    proc, info = start(tmp_path, origin)
    acknowledged: dict[str, int] = {}
    """Per path: the version every acknowledged purge guarantees (at least)."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def fill() -> None:
        rnd = random.Random()
        while not stop.is_set():
            try:
                get(info["data"], rnd.choice(PATHS))
            except (OSError, http.client.HTTPException):
                # The kill cuts responses short (IncompleteRead) as well as connections.
                return

    def purge() -> None:
        cf = cloudflare.Cloudflare(
            api_token=info["token"], base_url=f"http://127.0.0.1:{info['control']}/client/v4", max_retries=0
        )
        rnd = random.Random()
        while not stop.is_set():
            tag = rnd.randrange(TAGS)
            covered = [p for p in PATHS if tag_of(p) == tag]
            with origin.lock:
                for p in covered:
                    origin.version[p] += 1
                versions = {p: origin.version[p] for p in covered}
            try:
                cf.cache.purge(zone_id=ZONE, tags=[f"t{tag}"])
            except (cloudflare.APIConnectionError, cloudflare.APIStatusError):
                return
            except BaseException as exc:
                errors.append(exc)
                return
            for p, v in versions.items():
                acknowledged[p] = max(acknowledged.get(p, 0), v)
            time.sleep(0.02)

    threads = [threading.Thread(target=fill) for _ in range(4)] + [threading.Thread(target=purge)]
    for t in threads:
        t.start()
    # At least two seconds of fills and purges, and (on a loaded machine, later) until the disk
    # writer has committed objects and a purge has been acknowledged: the kill must find both.
    deadline = time.monotonic() + 60
    time.sleep(2.0)
    while time.monotonic() < deadline and not (acknowledged and disk_entries(info["control"]) > 0):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors
    assert acknowledged, "no purge was acknowledged before the kill"

    proc, info = start(tmp_path, origin)
    try:
        from_disk = 0
        for p in PATHS:
            status, body, cache_status = get(info["data"], p)
            assert status == 200
            with origin.lock:
                current = origin.version[p]
            versions = [v for v in range(current + 1) if Origin.body(p, v) == body]
            assert versions, f"{p}: the body is no version the origin ever sent"
            assert versions[0] >= acknowledged.get(p, 0), (
                f"{p}: served a version an acknowledged purge removed"
            )
            from_disk += cache_status.endswith("detail=disk")
        assert from_disk > 0, "nothing survived the kill on disk"
    finally:
        proc.kill()
        proc.wait()
        origin.server.shutdown()
