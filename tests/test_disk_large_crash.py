"""kill -9 while a large object is being written to disk in chunks: the restarted node never serves
it truncated (a half-written chunked object is invisible), and stores it whole on the next fill."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import lmdb

from test_disk_crash import start

LIMIT = 256 * 1024
BIG = os.urandom(6 << 20)
STALL_AT = (3 << 20) + 512 * 1024


class StallingOrigin:
    """Serves /big; the first answer stops after ``STALL_AT`` bytes and never ends."""

    def __init__(self) -> None:
        self.answers = 0
        self.release = threading.Event()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                origin.answers += 1
                first = origin.answers == 1
                self.send_response(200)
                self.send_header("Cache-Control", "public, max-age=3600")
                self.send_header("Content-Length", str(len(BIG)))
                self.end_headers()
                step = 128 * 1024
                for i in range(0, len(BIG), step):
                    if first and i >= STALL_AT:
                        origin.release.wait(30)
                        return
                    try:
                        self.wfile.write(BIG[i : i + step])
                    except OSError:
                        return

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def get(port: int) -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", "/big", headers={"Host": "crash.example"})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("Cache-Status", "")
    finally:
        conn.close()


def chunk_rows(data: Path) -> int:
    env = lmdb.open(str(data / "cache"), readonly=True, lock=False, max_dbs=16)
    try:
        db = env.open_db(b"chunks", create=False)
        with env.begin(db=db) as txn:
            return int(txn.stat(db)["entries"])
    finally:
        env.close()


def test_kill_9_while_a_large_object_is_written(tmp_path: Path) -> None:
    origin = StallingOrigin()
    proc, info = start(tmp_path, origin, str(LIMIT))  # type: ignore[arg-type]
    received = 0

    def client() -> None:
        nonlocal received
        conn = http.client.HTTPConnection("127.0.0.1", info["data"], timeout=30)
        try:
            conn.request("GET", "/big", headers={"Host": "crash.example"})
            resp = conn.getresponse()
            while chunk := resp.read(64 * 1024):
                received += len(chunk)
        except OSError:
            pass
        finally:
            conn.close()

    reader = threading.Thread(target=client)
    reader.start()
    deadline = time.monotonic() + 20
    while received < STALL_AT and time.monotonic() < deadline:
        time.sleep(0.05)
    assert received >= STALL_AT, "the first bytes never reached the client"
    time.sleep(1.5)  # the chunks queued so far reach the disk
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    origin.release.set()
    reader.join(10)
    assert chunk_rows(tmp_path) >= 3, "the half-written object's chunks should be on disk"

    proc, info = start(tmp_path, origin, str(LIMIT))  # type: ignore[arg-type]
    try:
        status, body, cache_status = get(info["data"])
        assert status == 200 and body == BIG
        assert "hit" not in cache_status, "a half-written object was served"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, body, cache_status = get(info["data"])
            assert status == 200 and body == BIG
            if cache_status.endswith("detail=disk"):
                break
            time.sleep(0.2)
        assert cache_status.endswith("detail=disk"), "the refill was not stored on disk"
    finally:
        proc.kill()
        proc.wait()
        origin.server.shutdown()
