"""Worker processes: what one node of N processes gives per CPU, and what following the ledger costs.

Method:
- An nginx origin (bench/_servers.py) serves /small (1 KiB) and /medium (64 KiB). In front of it:
  nginx proxy_cache (1 worker), Varnish, edgecache with ``[runtime] workers = 1`` and with 2.
- (1) Requests per server CPU-second: ``wrk -t1 -c50`` on a warm hit; the server's CPU (utime +
  stime of its whole process tree, from /proc) over the run; figure = requests / CPU seconds. This
  is what carries to a bigger machine: on 2 cores wrk takes one, so req/s alone measures the client.
  A last row runs the one worker with ``wrk -c25``, what each of two workers gets of ``-c50``: the
  same connections per worker, so the ratio of 2 workers to it shows what the second process
  costs rather than the change of load per process. Also the server's wake-ups per request
  (voluntary context switches of its processes, from /proc): a process that sleeps less often
  handles more requests per system call.
- (2) Hit throughput of edgecache (2 workers) on /small while a client purges an unrelated URL through
  the API every 20 ms (each purge reaches every worker in its wake message), against none and
  against a purge request the API rejects every 20 ms (the same client and most of the same
  control-plane work, nothing for the workers: what sharing the 2 cores costs by itself): req/s,
  hits per worker CPU-second, the control plane's CPU per call; then the same purges without
  traffic, for the workers' own CPU per purge.
- (3) From the purge API's answer to the first MISS in every process: two kept-alive connections,
  one held by each worker (identified through /proc), each holding the purged URL as a hit; at the
  answer both send the request at once; the figure is when the later answer's head arrives (a
  MISS, or a hit from the shared disk tier on what the other process fetched meanwhile). The same
  measurement without a purge, on a never-seen URL (a plain MISS), is the floor it includes.
  Then at the board: with no request in flight, from the API's answer until every worker's
  applied position on the position board (the supervisor's memfd, mapped through /proc) reaches
  the purge, spinning on the mapping: how soon an idle worker has the purge in its index without a
  request to make it look (a request that arrives first applies it itself, before it is served).
- (4) Origin fetches for one hot new object: ``wrk -c50`` for 1 s on a never-seen URL, with 1 and
  with 2 workers; the node's ``edgecache_origin_fetches_total`` before and after (``/metrics``,
  summed over the workers). One process coalesces its misses on one fetch; the processes of a
  node coalesce through their fill locks (decision 0021), so the figure to expect is 1 either way.
  Then what coalescing costs the clients of the process that waits: two kept-alive connections,
  one held by each worker, ask for a never-seen object at once; the figure is when the later
  answer's head arrives (a MISS, and a MISS or a disk hit on what the other fetched). Before
  decision 0021 both processes fetched. Also with 2 workers: a hot new object 1 s after a purge of
  an unrelated URL (each worker's first miss after it), and the first hot new object of a node
  started for it, asked for as soon as it serves: decision 0028's two causes of a first object
  fetched twice.
- (5) The layouts a node can run, side by side (decision 0026): one process for the data and
  control planes (``workers = 1``, ``control_plane = "inline"``), the control plane in the
  supervisor with one data-plane worker (``workers = 1``, ``control_plane = "process"``), the same
  with that worker pinned to the last CPU and the control plane, wrk and this harness to the others
  (what the layout gives a machine with a core for the control plane), and 2 workers. Each, rounds
  interleaved: ``wrk -t1 -c50`` on a warm /small without purges and with a
  purge of an unrelated URL every 20 ms (50/s, sent through the API from a thread of this
  process, started 0.5 s before wrk); printed: req/s (noisy), requests per server CPU-second (the
  whole process tree, /proc) and the ratios with / without, also of requests per data-plane
  CPU-second (the workers and their fill writers; inline, the whole process). Then without
  traffic, an idle window and a window with the same 50 purges/s: CPU per purge net of idle,
  split by process: the ``edgecache serve`` process (the whole node inline; the control plane
  when split) and its descendants (the workers and their disk fill writers; inline, the fill
  writer alone).
- Rounds are interleaved; medians with min-max. The machine is shared with other work now: every
  figure is noisy, and the "other CPU" line says how busy the rest of the machine was.

Usage: ``.venv/bin/python bench/workers.py [--duration S] [--rounds N] [--purges N] [--sections 12345]``
(section 5 alone: ``--sections 5 --rounds 3``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import mmap
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import _servers as srv
import _wrk as wrk

from edgecache.config import DEFAULT_ACCOUNT_ID
from edgecache.control.credentials import CredentialService, Permission
from edgecache.db.engine import open_database, sqlite_url

REPO = Path(__file__).resolve().parent.parent
EDGECACHE_BIN = REPO / ".venv" / "bin" / "edgecache"


def fresh_get(port: int, path: str) -> str:
    """One GET on a new connection; the cache status it reports."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": "127.0.0.1"})
        resp = conn.getresponse()
        resp.read()
        return resp.headers.get("CF-Cache-Status") or resp.headers.get("X-Cache") or ""
    finally:
        conn.close()


def warm(server: srv.Server, paths: list[str]) -> None:
    """Every process of the server has every path (new connections spread over the workers)."""
    for path in paths:
        for _ in range(40):
            fresh_get(server.port, path)


def others_cpu_percent(before: dict[int, float], seconds: float) -> float:
    after = srv.others_cpu()
    return 100 * sum(max(0.0, t - before.get(pid, 0.0)) for pid, t in after.items()) / seconds


def wakeups(pids: list[int]) -> int:
    """Voluntary context switches of the processes (each thread's): how often they went to sleep."""
    total = 0
    for pid in pids:
        for status in Path(f"/proc/{pid}/task").glob("*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            match = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", text, re.M)
            total += int(match.group(1)) if match else 0
    return total


def per_cpu_second(
    server: srv.Server, path: str, duration: int, connections: int = 50
) -> tuple[float, float, float, float]:
    """(requests per server CPU-second, req/s, other CPU %, requests per server wake-up) of one
    wrk run."""
    pids = server.pids()
    others = srv.others_cpu()
    cpu0, sleeps0 = srv.cpu_seconds(pids), wakeups(pids)
    start = time.monotonic()
    result = wrk.run(f"http://127.0.0.1:{server.port}{path}", duration, connections=connections)
    wall = time.monotonic() - start
    cpu = srv.cpu_seconds(server.pids()) - cpu0
    sleeps = wakeups(server.pids()) - sleeps0
    if result.errors:
        print(f"  {server.name} {path}: {result.errors} errors", file=sys.stderr)
    return (
        result.requests / cpu,
        result.rps,
        others_cpu_percent(others, wall),
        result.requests / max(1, sleeps),
    )


class Api:
    """The control plane of one edgecache, with a token."""

    def __init__(self, server: srv.Server, data_dir: Path) -> None:
        engine = open_database(sqlite_url(data_dir))
        try:
            _, self.token = CredentialService(engine).create_token(
                DEFAULT_ACCOUNT_ID, "bench", [Permission.CACHE_PURGE], [srv.ZONE_ID]
            )
        finally:
            engine.dispose()
        self.conn = http.client.HTTPConnection("127.0.0.1", int(server.extra["control_port"]), timeout=30)

    def purge_url(self, path: str) -> None:
        body = json.dumps({"files": [f"http://127.0.0.1{path}"]})
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        self.conn.request("POST", f"/client/v4/zones/{srv.ZONE_ID}/purge_cache", body=body, headers=headers)
        answer = json.loads(self.conn.getresponse().read())
        if not answer["success"]:
            raise RuntimeError(answer)

    def purge_nothing(self) -> None:
        """A purge request the API rejects (a file URL of another host): authentication, parsing and
        validation, but no ledger row and nothing for the workers."""
        body = json.dumps({"files": ["http://elsewhere.invalid/x"]})
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        self.conn.request("POST", f"/client/v4/zones/{srv.ZONE_ID}/purge_cache", body=body, headers=headers)
        answer = json.loads(self.conn.getresponse().read())
        if answer["success"]:
            raise RuntimeError(answer)


def hit_run(
    server: srv.Server, call: Callable[[int], None] | None, duration: int, *, load: bool = True
) -> tuple[float, float, float, int]:
    """One run, with ``call(n)`` (an API call: a URL purge, or one rejected) every 20 ms when given:
    with ``load``, wrk on /small and (req/s, hits per worker CPU-second, control-plane CPU seconds,
    calls made); without, the same tuple with the workers' CPU seconds in place of hits per
    CPU-second."""
    supervisor, *workers = server.pids()
    stop = threading.Event()
    sent = [0]

    def purger() -> None:
        assert call is not None
        next_at = time.monotonic()
        while not stop.is_set():
            call(sent[0])
            sent[0] += 1
            next_at += 0.020
            time.sleep(max(0.0, next_at - time.monotonic()))

    thread = threading.Thread(target=purger)
    work0, control0 = srv.cpu_seconds(workers), srv.cpu_seconds([supervisor])
    if call is not None:
        thread.start()
    try:
        if load:
            requests = wrk.run(f"http://127.0.0.1:{server.port}/small", duration).requests
        else:
            time.sleep(duration)
            requests = 0
    finally:
        stop.set()
        if call is not None:
            thread.join()
    work = srv.cpu_seconds(workers) - work0
    control = srv.cpu_seconds([supervisor]) - control0
    return requests / duration, requests / work if requests else work, control, sent[0]


def owner(port: int, sock: socket.socket, pids: list[int]) -> int:
    """The process of ``pids`` holding the server side of a client socket."""
    client_port = sock.getsockname()[1]
    inode = ""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port and int(f[2].split(":")[1], 16) == client_port:
            inode = f[9]
    for pid in pids:
        try:
            if any(
                os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]"
                for fd in os.listdir(f"/proc/{pid}/fd")
            ):
                return pid
        except OSError:
            continue
    return 0


def worker_pids(server: srv.Server) -> list[int]:
    """The supervisor's worker processes: its children (each worker's own children, the disk tier's
    fill writers, are not workers)."""
    master = server.pids()[0]
    out: list[int] = []
    for task in Path(f"/proc/{master}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            out.extend(int(c) for c in task.read_text().split())
    return out


def one_per_worker(server: srv.Server, workers: list[int]) -> list[socket.socket]:
    """A kept-alive connection held by each worker."""
    held: dict[int, socket.socket] = {}
    spare = []
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", server.port))
        request(sock, "/small")
        pid = owner(server.port, sock, workers)
        if pid and pid not in held:
            held[pid] = sock
        else:
            spare.append(sock)
        if len(held) == len(workers):
            break
    for sock in spare:
        sock.close()
    if len(held) != len(workers):
        raise RuntimeError("could not reach every worker")
    return list(held.values())


def request(sock: socket.socket, path: str) -> str:
    """GET on a kept-alive socket; returns the cache status, "(disk)" added for a disk hit."""
    sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return read_response(sock)


def read_response(sock: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    fields = dict(
        (k.strip().lower(), v.strip())
        for k, _, v in (ln.partition(":") for ln in head.decode().split("\r\n")[1:])
    )
    remaining = int(fields.get("content-length", "0")) - len(rest)
    while remaining > 0:
        remaining -= len(sock.recv(remaining))
    status = fields.get("cf-cache-status", "")
    return status + " (disk)" if "detail=disk" in fields.get("cache-status", "") else status


def first_miss_everywhere(socks: list[socket.socket], path: str, api: Api, *, purge: bool) -> float:
    """Seconds from the purge API's answer (or from now, without ``purge``) to the last process's
    answer for ``path``: a MISS, or a disk hit on what another process fetched meanwhile."""
    if purge:
        api.purge_url(path)
    start = time.perf_counter()
    for sock in socks:
        sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    statuses = [read_response(sock) for sock in socks]
    elapsed = time.perf_counter() - start
    # A process may find the object that another one just fetched in the shared disk tier.
    if "MISS" not in statuses or not set(statuses) <= {"MISS", "HIT (disk)"}:
        raise RuntimeError(f"expected a MISS and no memory HIT, got {statuses}")
    return elapsed


def purge_to_miss(server: srv.Server, api: Api, count: int) -> tuple[list[float], list[float]]:
    """(API answer → every process's MISS, plain MISS in every process) in seconds, ``count`` each."""
    workers = worker_pids(server)
    socks = one_per_worker(server, workers)
    purged, plain = [], []
    for i in range(count):
        path = f"/obj/{i:04d}77"
        for sock in socks:
            request(sock, path)
            if request(sock, path) != "HIT":
                raise RuntimeError("not a hit before the purge")
        purged.append(first_miss_everywhere(socks, path, api, purge=True))
        plain.append(first_miss_everywhere(socks, f"/obj/{i:04d}88", api, purge=False))
    for sock in socks:
        sock.close()
    return purged, plain


class BoardView:
    """The node's position board, mapped read-only through the supervisor's descriptor."""

    def __init__(self, supervisor: int, workers: int) -> None:
        fds = Path(f"/proc/{supervisor}/fd")
        path = next(f for f in fds.iterdir() if "edgecache-positions" in os.readlink(f))
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        self.words = memoryview(self._map).cast("Q")
        self.lines = [(slot + 1) * 8 for slot in range(workers)]

    def all_applied(self) -> bool:
        published = self.words[0]
        return all(self.words[line] >= published for line in self.lines)


def purge_to_applied(server: srv.Server, api: Api, count: int) -> list[float]:
    """Seconds from the purge API's answer until every worker's applied position reaches the
    purge (spinning on the board; no request is made)."""
    supervisor = server.pids()[0]
    board = BoardView(supervisor, len(worker_pids(server)))
    out = []
    for i in range(count):
        api.purge_url(f"/board/{i}")
        start = time.perf_counter()
        while not board.all_applied():
            if time.perf_counter() - start > 5:
                raise RuntimeError("a worker did not apply the purge within 5 s")
        out.append(time.perf_counter() - start)
        time.sleep(0.005)
    return out


def origin_fetches(server: srv.Server) -> float:
    """The node's origin fetches so far (its /metrics, summed over its processes)."""
    conn = http.client.HTTPConnection("127.0.0.1", int(server.extra["control_port"]), timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    match = re.search(r"^edgecache_origin_fetches_total\s+(\S+)", text, re.M)
    if match is None:
        raise RuntimeError("no edgecache_origin_fetches_total in /metrics")
    return float(match.group(1))


def hot_new_object(server: srv.Server, label: str, trials: int) -> list[float]:
    """Origin fetches for each of ``trials`` never-seen objects, each requested by wrk's 50
    connections for 1 s."""
    out = []
    for i in range(trials):
        before = origin_fetches(server)
        wrk.run(f"http://127.0.0.1:{server.port}/obj/{label}{i:04d}55", 1)
        out.append(origin_fetches(server) - before)
    return out


def first_objects(tmp: Path, origin: int, trials: int) -> list[float]:
    """Origin fetches for the first hot new object of ``trials`` freshly started 2-worker nodes,
    asked for as soon as each says it serves (decision 0028: a worker used to serve before its
    disk fill writer could commit)."""
    out = []
    for i in range(trials):
        server = srv.start_edgecache(tmp, origin, EDGECACHE_BIN, f"edgecache-fresh-{i}", workers=2)
        try:
            wait_serving(server)
            out += hot_new_object(server, f"{i}7", 1)
        finally:
            srv.stop(server)
    return out


def after_a_purge(server: srv.Server, api: Api, trials: int) -> list[float]:
    """Origin fetches for a hot new object 1 s after a purge of an unrelated URL, ``trials`` times
    (decision 0028: a purge used to be dated from each worker's next miss)."""
    out = []
    for i in range(trials):
        api.purge_url("/small")
        time.sleep(1)
        out += hot_new_object(server, f"{i}6", 1)
    return out


def both_miss(server: srv.Server, api: Api, count: int) -> list[float]:
    """Seconds until the later answer when each worker is asked for a never-seen object at once."""
    socks = one_per_worker(server, worker_pids(server))
    try:
        return [first_miss_everywhere(socks, f"/obj/{i:04d}99", api, purge=False) for i in range(count)]
    finally:
        for sock in socks:
            sock.close()


LAYOUTS = {
    "one process (inline)": (1, "inline", False),
    "control process + 1 worker": (1, "process", False),
    "control process + 1 worker, pinned": (1, "process", True),
    "control process + 2 workers": (2, "process", False),
}
"""Section 5's nodes: ``[runtime] workers`` and ``control_plane`` of each, and whether its
descendants (the worker, its fill writer) run pinned to the last CPU, away from the control plane,
wrk and this harness (pinned to the others): what the layout gives where the control plane has
cores of its own, which a shared 2-core box does not otherwise show."""


def wait_serving(server: srv.Server, timeout: float = 60.0) -> None:
    """Wait for ``edgecache serve``'s banner: it is printed once every worker serves, where the data
    port already accepts connections once the first one listens (``spawn`` waits for that only)."""
    deadline = time.monotonic() + timeout
    while "edgecache serving on" not in server.log.read_text(errors="replace"):
        if not server.alive():
            raise srv.ServerError(server.why_dead())
        if time.monotonic() > deadline:
            tail = srv.log_tail(server.log)
            raise srv.ServerError(f"{server.name}: no banner after {timeout:.0f} s: {tail}")
        time.sleep(0.05)


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process ``pid`` on ``cpus``."""
    # A process (or a thread) that exited meanwhile has nothing left to pin.
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task.name), cpus)


def tree_cpu(server: srv.Server) -> tuple[float, float]:
    """CPU seconds so far of the ``edgecache serve`` process and of all its descendants."""
    main, *rest = server.pids()
    return srv.cpu_seconds([main]), srv.cpu_seconds(rest)


def layout_run(
    server: srv.Server, api: Api, duration: int, *, purges: bool, load: bool, pinned: bool = False
) -> dict[str, float]:
    """One run of section 5: wrk on /small when ``load`` (else a wait), with a purge of an
    unrelated URL every 20 ms when ``purges``. Requests, purges sent, CPU seconds of the serve
    process and of its descendants. ``pinned``: see ``LAYOUTS``."""
    stop = threading.Event()
    sent = [0]
    everywhere = os.sched_getaffinity(0)
    if pinned and len(everywhere) > 1:
        own = {max(everywhere)}
        main, *rest = server.pids()
        for pid in rest:
            pin(pid, own)
        pin(main, everywhere - own)
        # This thread's mask: wrk and the purging thread, started from here, inherit it.
        os.sched_setaffinity(0, everywhere - own)

    def purger() -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            api.purge_url(f"/unrelated/{time.monotonic_ns()}")
            sent[0] += 1
            next_at += 0.020
            time.sleep(max(0.0, next_at - time.monotonic()))

    thread = threading.Thread(target=purger)
    if purges:
        thread.start()
        time.sleep(0.5)
    main0, rest0 = tree_cpu(server)
    sent0 = sent[0]
    try:
        if load:
            result = wrk.run(f"http://127.0.0.1:{server.port}/small", duration)
            requests, rps = result.requests, result.rps
            if result.errors:
                print(f"  {server.name}: {result.errors} errors", file=sys.stderr)
        else:
            time.sleep(duration)
            requests, rps = 0, 0.0
        main1, rest1 = tree_cpu(server)
        count = sent[0] - sent0
    finally:
        stop.set()
        if purges:
            thread.join()
        os.sched_setaffinity(0, everywhere)
    return {
        "requests": requests,
        "rps": rps,
        "purges": count,
        "main": main1 - main0,
        "rest": rest1 - rest0,
    }


def layouts(tmp: Path, origin: int, duration: int, rounds: int) -> None:
    """Section 5: hits with and without 50 purges/s, and CPU per purge by process, per layout."""
    servers: dict[str, srv.Server] = {}
    try:
        for n, (label, (workers, control_plane, _)) in enumerate(LAYOUTS.items()):
            servers[label] = srv.start_edgecache(
                tmp, origin, EDGECACHE_BIN, f"layout-{n}", workers=workers, control_plane=control_plane
            )
        for server in servers.values():
            wait_serving(server)
        apis = {
            label: Api(server, tmp / f"layout-{n}-data") for n, (label, server) in enumerate(servers.items())
        }
        for server in servers.values():
            warm(server, ["/small"])
        hits: dict[tuple[str, bool], list[dict[str, float]]] = {}
        quiet: dict[tuple[str, bool], list[dict[str, float]]] = {}
        # The runs with purges come second in even rounds and first in odd ones: neither kind
        # always follows the other (a warmer cache, a neighbour's load that grows or fades).
        for r in range(rounds):
            for label, server in servers.items():
                for purges in (False, True) if r % 2 == 0 else (True, False):
                    run = layout_run(
                        server, apis[label], duration, purges=purges, load=True, pinned=LAYOUTS[label][2]
                    )
                    hits.setdefault((label, purges), []).append(run)
        for r in range(rounds):
            for label, server in servers.items():
                for purges in (False, True) if r % 2 == 0 else (True, False):
                    run = layout_run(
                        server, apis[label], duration, purges=purges, load=False, pinned=LAYOUTS[label][2]
                    )
                    quiet.setdefault((label, purges), []).append(run)
    finally:
        for server in servers.values():
            srv.stop(server)

    def per_cpu(run: dict[str, float]) -> float:
        return run["requests"] / (run["main"] + run["rest"])

    def per_data_cpu(label: str, run: dict[str, float]) -> float:
        # Inline, the one process is the data plane too.
        return run["requests"] / (
            run["rest"] if LAYOUTS[label][1] == "process" else run["main"] + run["rest"]
        )

    print(
        f"\n(5) 1 KiB hits (wrk -t1 -c50, {duration} s), without purges and with 50 purges/s, "
        f"by layout; median (min-max) of {rounds} interleaved rounds\n"
    )
    print(
        "| layout | req/s, none (noisy) | req/s, 50 purges/s (noisy) | req per server CPU-s, none "
        "| req per server CPU-s, 50 purges/s "
        "| with / without: req/s, per server CPU-s, per data-plane CPU-s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label in LAYOUTS:
        none, busy = hits[(label, False)], hits[(label, True)]
        rps = [spread([r["rps"] for r in runs]) for runs in (none, busy)]
        cpu = [spread([per_cpu(r) for r in runs]) for runs in (none, busy)]
        ratio_rps = statistics.median(r["rps"] for r in busy) / statistics.median(r["rps"] for r in none)
        ratio_cpu = statistics.median(per_cpu(r) for r in busy) / statistics.median(per_cpu(r) for r in none)
        ratio_data = statistics.median(per_data_cpu(label, r) for r in busy) / statistics.median(
            per_data_cpu(label, r) for r in none
        )
        print(
            f"| {label} | {rps[0]} | {rps[1]} | {cpu[0]} | {cpu[1]} "
            f"| {ratio_rps:.3f}, {ratio_cpu:.3f}, {ratio_data:.3f} |"
        )
    print(
        f"\n(5b) without traffic: CPU ms per purge at 50/s net of an idle window ({duration} s each, "
        f"median of {rounds}), by process\n"
    )
    print("| layout | serve process | its descendants | whole node |")
    print("|---|---:|---:|---:|")
    for label in LAYOUTS:
        idle, busy = quiet[(label, False)], quiet[(label, True)]
        n = statistics.median(r["purges"] for r in busy)
        cells = [
            1000 * (statistics.median(r[k] for r in busy) - statistics.median(r[k] for r in idle)) / n
            for k in ("main", "rest")
        ]
        print(f"| {label} | {cells[0]:.2f} | {cells[1]:.2f} | {sum(cells):.2f} |")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--purges", type=int, default=200)
    parser.add_argument("--sections", default="12345", help="which measurements to run, e.g. 23")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgecache-workers-bench-"))
    tmp.chmod(0o755)  # nginx workers and Varnish's sandbox user read configs and files here
    started: list[srv.Server] = []
    try:
        origin = srv.start_origin(tmp)
        started.append(origin)
        if "5" in args.sections:
            # Its own servers, stopped before any other section starts its own.
            layouts(tmp, origin.port, args.duration, args.rounds)
        if not set(args.sections) & set("1234"):
            return
        servers = {
            "edgecache, 2 workers": srv.start_edgecache(
                tmp, origin.port, EDGECACHE_BIN, "edgecache-2", workers=2
            ),
        }
        if "1" in args.sections or "4" in args.sections:
            servers = {
                "nginx": srv.start_nginx_cache(tmp, origin.port),
                "varnish": srv.start_varnish(tmp, origin.port),
                "edgecache, 1 worker": srv.start_edgecache(
                    tmp, origin.port, EDGECACHE_BIN, "edgecache-1", workers=1
                ),
                **servers,
            }
        started += servers.values()
        for server in servers.values():
            if server.name.startswith("edgecache"):
                wait_serving(server)
        for server in servers.values():
            warm(server, ["/small", "/medium"])

        if "1" in args.sections:
            per_cpu: dict[tuple[str, str], list[float]] = {}
            rps: dict[tuple[str, str], list[float]] = {}
            per_wake: dict[tuple[str, str], list[float]] = {}
            others: list[float] = []
            # The last row gives the one worker what each of two gets: half of wrk's connections.
            runs = [(name, server, 50) for name, server in servers.items()]
            runs.append(("edgecache, 1 worker, wrk -c25", servers["edgecache, 1 worker"], 25))
            for _ in range(args.rounds):
                for label, server, connections in runs:
                    for path in ("/small", "/medium"):
                        figure, rate, busy, batch = per_cpu_second(server, path, args.duration, connections)
                        per_cpu.setdefault((label, path), []).append(figure)
                        rps.setdefault((label, path), []).append(rate)
                        per_wake.setdefault((label, path), []).append(batch)
                        others.append(busy)
            print("\n(1) requests per server CPU-second, warm hits (median (min-max) of rounds)\n")
            print(
                "| server | 1 KiB per CPU-s | 64 KiB per CPU-s | 1 KiB req/s | 64 KiB req/s "
                "| 1 KiB requests per wake-up |"
            )
            print("|---|---:|---:|---:|---:|---:|")
            for name, *_ in runs:
                cells = [spread(per_cpu[(name, p)]) for p in ("/small", "/medium")]
                cells += [spread(rps[(name, p)]) for p in ("/small", "/medium")]
                cells.append(f"{statistics.median(per_wake[(name, '/small')]):.1f}")
                print(f"| {name} | " + " | ".join(cells) + " |")
            for base in ("edgecache, 1 worker", "edgecache, 1 worker, wrk -c25"):
                ratios = [
                    statistics.median(per_cpu[("edgecache, 2 workers", p)])
                    / statistics.median(per_cpu[(base, p)])
                    for p in ("/small", "/medium")
                ]
                print(f"\n2 workers / ({base}) per CPU-second: 1 KiB {ratios[0]:.2f}, 64 KiB {ratios[1]:.2f}")
            print(f"\nother CPU during (1): median {statistics.median(others):.0f}% of a core")

        ec2 = servers["edgecache, 2 workers"]
        api = Api(ec2, tmp / "edgecache-2-data")
        if "2" in args.sections:
            calls: dict[str, Callable[[int], None] | None] = {
                "no API calls": None,
                "a rejected purge every 20 ms": lambda n: api.purge_nothing(),
                "a purge every 20 ms": lambda n: api.purge_url(f"/unrelated/{n}"),
            }
            runs: dict[str, list[tuple[float, float, float, int]]] = {label: [] for label in calls}
            for _ in range(args.rounds):
                for label, call in calls.items():
                    runs[label].append(hit_run(ec2, call, args.duration))
            print("\n(2) edgecache, 2 workers, 1 KiB hits, with API calls every 20 ms or without\n")
            print("| | req/s | hits per worker CPU-s | control-plane CPU-s per call |")
            print("|---|---:|---:|---:|")
            for label, rows in runs.items():
                sent = sum(r[3] for r in rows)
                per_call = f"{1000 * sum(r[2] for r in rows) / sent:.2f} ms ({sent} calls)" if sent else "-"
                rates, per_cpu_s = spread([r[0] for r in rows]), spread([r[1] for r in rows])
                print(f"| {label} | {rates} | {per_cpu_s} | {per_call} |")
            base = statistics.median(r[1] for r in runs["no API calls"])
            for label in ("a rejected purge every 20 ms", "a purge every 20 ms"):
                ratio = statistics.median(r[1] for r in runs[label]) / base
                print(f"hits per worker CPU-second, {label} / none: {ratio:.2f}")
            idle = [hit_run(ec2, None, args.duration, load=False) for _ in range(args.rounds)]
            busy = [
                hit_run(ec2, calls["a purge every 20 ms"], args.duration, load=False)
                for _ in range(args.rounds)
            ]
            extra = statistics.median(r[1] for r in busy) - statistics.median(r[1] for r in idle)
            per_purge = extra / statistics.median(r[3] for r in busy) / 2
            print(
                f"without traffic: workers' CPU {statistics.median(r[1] for r in idle):.3f} s idle, "
                f"{statistics.median(r[1] for r in busy):.3f} s with a purge every 20 ms "
                f"({args.duration} s runs): {1000 * per_purge:.2f} ms per purge per worker, "
                f"{100 * per_purge * 50:.1f}% of a core per worker at 50 purges/s"
            )

        if "3" in args.sections:
            purged, plain = purge_to_miss(ec2, api, args.purges)
            print(f"\n(3) API answer -> MISS from both workers, {args.purges} purges (ms)\n")
            print("| | p50 | p99 | max |")
            print("|---|---:|---:|---:|")
            added = [a - b for a, b in zip(purged, plain, strict=True)]
            applied = purge_to_applied(ec2, api, args.purges)
            for label, values in (
                ("after a purge", purged),
                ("plain MISS, no purge", plain),
                ("after a purge minus the plain MISS after it", added),
                ("at the board: until every worker applied it (no request)", applied),
            ):
                ms = [v * 1000 for v in values]
                print(f"| {label} | {pct(ms, 0.5):.2f} | {pct(ms, 0.99):.2f} | {max(ms):.2f} |")

        if "4" in args.sections:
            fetches = {"edgecache, 2 workers": hot_new_object(ec2, "2", args.rounds * 5)}
            if "edgecache, 1 worker" in servers:
                fetches["edgecache, 1 worker"] = hot_new_object(
                    servers["edgecache, 1 worker"], "1", args.rounds * 5
                )
            fetches["edgecache, 2 workers, 1 s after a purge"] = after_a_purge(ec2, api, args.rounds * 3)
            fetches["edgecache, 2 workers, first object of a new node"] = first_objects(
                tmp, origin.port, args.rounds * 2
            )
            print("\n(4) origin fetches for one hot new object (wrk -c50, 1 s each)\n")
            print("| server | objects | fetches per object (each) |")
            print("|---|---:|---|")
            for name, counts in fetches.items():
                print(f"| {name} | {len(counts)} | {', '.join(f'{c:.0f}' for c in counts)} |")
            ms = [v * 1000 for v in both_miss(ec2, api, args.purges)]
            print(
                f"\n(4b) a never-seen object asked for by both workers at once, {args.purges} objects (ms)\n"
            )
            print("| | p50 | p99 | max |")
            print("|---|---:|---:|---:|")
            print(f"| until the later answer | {pct(ms, 0.5):.2f} | {pct(ms, 0.99):.2f} | {max(ms):.2f} |")
    finally:
        for server in reversed(started):
            srv.stop(server)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
