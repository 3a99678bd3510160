"""kill -9 in the middle of fills and purges: neither the node before the kill nor the restarted one
serves a corrupt object or one that an acknowledged purge covered (real processes, the official SDK
for the purges; a failure prints what the purges, the fills and the disk did for that object). And
the two interleavings of a purge's disk job with a lookup's delete that once let a purged object
survive (decision 0009, addendum on the crash test), built deterministically on the store."""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cloudflare
import pytest

from edgecache.edge.reclaimer import DiskReclaim
from edgecache.purge.selectors import Everything, Mode, Purge, Selector, Tag
from edgecache.store.disk import DiskStore, WriteView
from edgecache.store.entry import Entry

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

    def version_of(self, path: str, body: bytes) -> int | None:
        """Which version of ``path`` ``body`` is (None: none the origin sent)."""
        head = body[: len(path) + 24].split(b" ")
        if len(head) < 2 or not head[1][1:].isdigit():
            return None
        version = int(head[1][1:])
        with self.lock:
            current = self.version[path]
        return version if version <= current and Origin.body(path, version) == body else None


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


@dataclass
class History:
    """What the clients saw, to explain a failure: every purge answered and every fill."""

    start: float = field(default_factory=time.monotonic)
    purges: list[tuple[float, float, int, str, dict[str, int]]] = field(default_factory=list)
    """(sent, answered, tag, job id, version per covered path)"""
    fills: list[tuple[float, float, str, int | None, str]] = field(default_factory=list)
    """(sent, answered, path, version served, Cache-Status)"""

    def now(self) -> float:
        return time.monotonic() - self.start


@dataclass
class DiskState:
    """What the killed node left on disk, read before the restart."""

    reclaimed_upto: int
    records: dict[str, tuple[int, tuple[str, ...], int | None]]
    """Path -> (stored_seq, tags, version of its body)."""


def disk_state(data: Path, origin: Origin) -> DiskState:
    store = DiskStore(data / "cache", budget=1 << 30, position=0)
    try:
        records = {}
        for entry in store:
            path = "/" + entry.key.split("/", 3)[3]
            records[path] = (entry.stored_seq, entry.tags, origin.version_of(path, entry.body))
        return DiskState(store.reclaimed_upto, records)
    finally:
        store.close()


def ledger(data: Path) -> dict[str, int]:
    """Job id -> seq of every purge in the node's ledger."""
    with sqlite3.connect(data / "edgecache.db") as db:
        return dict(db.execute("SELECT job_id, seq FROM purge_ledger").fetchall())


def explain(
    path: str,
    served: int,
    cache_status: str,
    history: History,
    disk: DiskState,
    jobs: dict[str, int],
) -> str:
    """A failure's account: the purges of ``path``'s tag, its fills, and its record on disk."""
    lines = [f"{path} v{served} served ({cache_status}); disk reclaimed_upto={disk.reclaimed_upto}"]
    record = disk.records.get(path)
    lines.append(
        "on disk before the restart: "
        + ("nothing" if record is None else f"stored_seq={record[0]} tags={record[1]} v{record[2]}")
    )
    for sent, answered, tag, job, versions in history.purges:
        if path in versions:
            lines.append(
                f"purge t{tag} seq={jobs.get(job)} -> v{versions[path]}: "
                f"sent {sent:.3f} answered {answered:.3f}"
            )
    for sent, answered, p, version, status in history.fills:
        if p == path:
            lines.append(f"fill v{version} ({status}): sent {sent:.3f} answered {answered:.3f}")
    return "\n".join(lines)


def test_kill_9_during_fills_and_purges(tmp_path: Path) -> None:
    origin = Origin()
    proc, info = start(tmp_path, origin)
    acknowledged: dict[str, int] = {}
    """Per path: the version every acknowledged purge guarantees (at least)."""
    history = History()
    stop = threading.Event()
    errors: list[BaseException] = []

    def fill() -> None:
        rnd = random.Random()
        while not stop.is_set():
            path = rnd.choice(PATHS)
            sent = history.now()
            try:
                _, body, cache_status = get(info["data"], path)
            except (OSError, http.client.HTTPException):
                # The kill cuts responses short (IncompleteRead) as well as connections.
                return
            history.fills.append((sent, history.now(), path, origin.version_of(path, body), cache_status))

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
            sent = history.now()
            try:
                answer = cf.cache.purge(zone_id=ZONE, tags=[f"t{tag}"])
            except (cloudflare.APIConnectionError, cloudflare.APIStatusError):
                return
            except BaseException as exc:
                errors.append(exc)
                return
            assert answer is not None
            history.purges.append((sent, history.now(), tag, answer.id, versions))
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
    killed = history.now()
    proc.wait()
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors
    assert acknowledged, "no purge was acknowledged before the kill"
    disk = disk_state(tmp_path, origin)
    jobs = ledger(tmp_path)
    # Before the kill too: a request sent after a purge was answered gets a version it allows.
    for sent, _, path, version, cache_status in history.fills:
        allowed = max(
            (v[path] for _, answered, _, _, v in history.purges if answered < sent and path in v), default=0
        )
        assert version is None or version >= allowed, (
            f"{path}: served at {sent:.3f}, before the kill, a version an acknowledged purge removed\n"
            + explain(path, version, cache_status, history, disk, jobs)
        )

    proc, info = start(tmp_path, origin)
    try:
        from_disk = 0
        for p in PATHS:
            status, body, cache_status = get(info["data"], p)
            assert status == 200
            version = origin.version_of(p, body)
            assert version is not None, f"{p}: the body is no version the origin ever sent"
            assert version >= acknowledged.get(p, 0), (
                f"{p}: served a version an acknowledged purge removed (killed at {killed:.3f})\n"
                + explain(p, version, cache_status, history, disk, jobs)
            )
            from_disk += cache_status.endswith("detail=disk")
        assert from_disk > 0, "nothing survived the kill on disk"
    finally:
        proc.kill()
        proc.wait()
        origin.server.shutdown()


def _entry(path: str, seq: int) -> Entry:
    return Entry(
        zone=ZONE,
        key=f"http://crash.example{path}",
        status=200,
        head=b"Content-Type: text/plain\r\n",
        body=Origin.body(path, 0),
        tags=("t0",),
        stored_seq=seq,
        response_time=time.time(),
        initial_age=0.0,
        freshness_lifetime=3600.0,
    )


@pytest.mark.parametrize("selector", [Tag("t0"), Everything()], ids=["tag", "everything-step-by-step"])
def test_a_purge_job_removes_what_a_lookup_is_still_deleting(
    tmp_path: Path, selector: Selector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookup that finds an object a purge covers queues its delete; when that happens while the
    purge's disk job runs, the job's commit (which moves ``reclaimed_upto`` past the purge) may come
    first. A kill between the two commits must not leave the object: the restart replays only the
    purges after ``reclaimed_upto``, so nothing would ever remove it again. (The lookup's credit
    counts the object, so the job does not.)"""
    # A purge of everything goes record by record when it keeps any record at all (the one stored
    # after it here), as it does when it would keep more than WIPE_KEEP_MAX.
    monkeypatch.setattr("edgecache.store.disk.WIPE_KEEP_MAX", 0)
    store = DiskStore(tmp_path / "cache", budget=1 << 30, position=0)
    kept, looked_up, newer = _entry("/obj/0", 1), _entry("/obj/6", 1), _entry("/obj/12", 2)
    for entry in (kept, looked_up, newer):
        store.put(entry)
    assert store.flush(10)

    gate, holding = threading.Event(), threading.Event()

    def hold(_view: WriteView) -> bool:
        holding.set()
        return gate.wait(10)

    purge = DiskReclaim(Purge(2, ZONE, Mode.DELETE, (selector,), time.time()))

    def lookup_then_purge(view: WriteView) -> bool:
        # The lookup runs on the event loop while the writer has taken the job: its delete is queued
        # behind it.
        store.delete(looked_up.key)
        return purge(view)

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    store.run_job(hold)
    assert holding.wait(10)
    done = store.run_job(lookup_then_purge)
    # What a kill -9 right after the job's commit leaves: the writer has not taken the delete yet.
    done.add_done_callback(lambda _: store.env.copy(str(crashed)))
    gate.set()
    done.result(10)
    store.close()
    assert purge.counts == {selector: 1}

    restarted = DiskStore(crashed, budget=1 << 30, position=0)
    try:
        assert restarted.reclaimed_upto == 2
        assert restarted.get(kept.key) is None
        assert restarted.get(looked_up.key) is None, "a purged object survived the crash"
        assert restarted.get(newer.key) is not None
    finally:
        restarted.close()


@pytest.mark.parametrize(
    ("selector", "keep_max"),
    [(Tag("t0"), None), (Everything(), 0), (Everything(), None)],
    ids=["tag", "everything-step-by-step", "everything-one-drop"],
)
def test_a_purge_job_removes_a_fill_written_after_a_delete_in_its_batch(
    tmp_path: Path, selector: Selector, keep_max: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookup's delete of an object, then the fill that replaces it (fetched before a purge that
    covers it), then that purge's disk job, all in one batch of the writer: the delete is committed
    before the job runs, and the job must still remove the fill, which the delete did not cover
    (traced in the crash test: the job took the key for one a lookup was deleting, and the disk kept
    the fill past ``reclaimed_upto``, to be served once the purge's epoch rows were compacted).
    And count it: the lookup's credit was for the record its delete removed, so the purge's
    matched count (the task's, in both APIs) would otherwise miss the fill."""
    if keep_max is not None:
        monkeypatch.setattr("edgecache.store.disk.WIPE_KEEP_MAX", keep_max)
    store = DiskStore(tmp_path / "cache", budget=1 << 30, position=0)
    store.put(_entry("/obj/0", 0))
    assert store.flush(10)
    gate, holding = threading.Event(), threading.Event()

    def hold(_view: WriteView) -> bool:
        holding.set()
        return gate.wait(10)

    store.run_job(hold)
    assert holding.wait(10)
    refill = _entry("/obj/0", 1)
    store.delete(refill.key)
    store.put(refill)
    purge = DiskReclaim(Purge(2, ZONE, Mode.DELETE, (selector,), time.time()))
    done = store.run_job(purge)
    gate.set()
    done.result(10)
    try:
        assert store.get(refill.key) is None, "the disk kept a fill the purge covers"
        assert store.reclaimed_upto == 2
        assert purge.counts == {selector: 1}, "the fill the job removed was not counted"
    finally:
        store.close()
