"""Start and stop the servers the benchmark compares: an nginx origin, an nginx cache, Varnish, edgecache
and the bare Python ceiling (``_bare.py``).

Rules:
- Every server runs in the foreground as our own child (nginx `daemon off`, `varnishd -F`), so the PID we
  hold is the master's; it is stopped by that PID (SIGTERM, SIGKILL after a grace period), never by name,
  and then what is left of its session (each runs in its own) is killed.
- Children get PR_SET_PDEATHSIG, so a harness killed with SIGKILL does not leave servers running.
- Everything listens on 127.0.0.1 on ports the kernel reported free (bind to port 0).
- Configs are the ones in /work/shared/reference/bench-anchors.md, with our ports and temp paths, but
  nginx's upstream keeps 64 idle connections (not 32: fewer than the 50 client connections closed
  and reopened ~1,200 origin connections/s); ``run.py`` puts nginx's cache on tmpfs
  (``docs/benchmarks.md``, "nginx's slow miss rounds").
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SMALL = b"a" * 1024
MEDIUM = b"b" * 65536
LARGE = b"c" * (8 << 20)
ZONE_ID = "0123456789abcdef0123456789abcdef"
CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


class ServerError(RuntimeError):
    """A server did not start or died; the message says why."""


@dataclass
class Server:
    """One running server: a child process listening on `port`."""

    name: str
    port: int
    status_header: str
    """Lower-case response header that says HIT or MISS."""
    proc: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, str] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def pids(self) -> list[int]:
        """The master and all its descendants."""
        return process_tree(self.proc.pid)

    def why_dead(self) -> str:
        code = self.proc.returncode
        how = f"exited with code {code}"
        if code == 0:
            how = "exited cleanly (code 0: stopped by a signal from outside?)"
        return f"{how}: {log_tail(self.log)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, limit: int = 200) -> str:
    """The log's last line (for a Python traceback: the exception), shortened to `limit` characters."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    last = lines[-1].strip() if lines else "(empty log)"
    return last if len(last) <= limit else last[: limit - 3] + "..."


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(name: str, argv: list[str], port: int, status_header: str, tmp: Path) -> Server:
    """Start `argv` and wait until it accepts connections on `port`."""
    log = tmp / f"{name}.log"
    with log.open("ab") as out:  # append: nginx also writes its error_log here
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # single-threaded: preexec_fn is safe
        )
    server = Server(name, port, status_header, proc, log)
    wait_listening(server, timeout=30.0)
    return server


def wait_listening(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServerError(server.why_dead())
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", server.port), 0.5):
            return
        time.sleep(0.1)
    stop(server)
    raise ServerError(f"not listening on port {server.port} after {timeout:.0f} s: {log_tail(server.log)}")


def stop(server: Server, grace: float = 10.0) -> None:
    """SIGTERM the server's own PID, then SIGKILL it if it is still there after `grace` seconds; then
    wait (as long again) for the rest of its session, and SIGKILL what is still there (until it is gone).

    Every server runs in a session of its own (``spawn``), and the processes it starts stay in it
    (an edgecache supervisor's workers, nginx's): the session is swept after the master's exit,
    rather than the tree seen before the signal, because a tree can outlive its master and grow
    while it stops. An orphan is no longer anyone's descendant, and a process the master starts on
    its way out was not there to be seen; either would go on writing to the directory the caller
    is about to remove (and take CPU from whatever is measured next)."""
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(grace)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(5)
    session = server.proc.pid
    deadline = time.monotonic() + grace
    while (left := session_members(session)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid, started in left:
        if _still_running(pid, started):  # not a later process that reuses the PID
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    # SIGKILL is delivered, not waited for: the caller goes on to remove what they were writing.
    deadline = time.monotonic() + 5.0
    while any(_still_running(*member) for member in left) and time.monotonic() < deadline:
        time.sleep(0.01)


def session_members(session: int) -> list[tuple[int, int]]:
    """The live processes of session `session` (a server's: its master's PID), with their start times."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session and fields[0] != "Z":
                out.append((int(entry.name), int(fields[19])))
    return out


def _still_running(pid: int, started: int) -> bool:
    with contextlib.suppress(OSError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z" and int(fields[19]) == started
    return False


# --- /proc helpers -------------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in task.read_text().split())
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the given processes, in seconds."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def others_cpu() -> dict[int, float]:
    """CPU seconds (utime + stime) of every live user-space process outside this harness's tree.

    The difference of two snapshots is what the rest of the machine took during a run: on a shared box
    a busy neighbour shows up here rather than as an unexplained dip.
    """
    ours = set(process_tree(os.getpid()))
    out: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in ours:
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[1] == "2" or entry.name == "2":  # kernel threads: their work is the loopback's
                continue
            out[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK  # not cutime: lumpy
    return out


def rss_bytes(pid: int) -> int:
    """Resident memory the kernel cannot drop: anonymous and shared-memory pages (RssAnon +
    RssShmem). File-backed pages (RssFile: the binaries, and the mapped pages of edgecache's LMDB
    disk tier) are left out: they are page cache, reclaimable, and would charge the disk tier's
    file to the memory per object."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("RssAnon", "RssShmem"):
            found[name] = int(rest.split()[0]) * 1024
    if len(found) != 2:
        raise ServerError(f"no RssAnon/RssShmem for pid {pid}")
    return sum(found.values())


def varnish_child(server: Server) -> int:
    """PID of varnishd's cache process (the manager's child named cache-main)."""
    for pid in server.pids()[1:]:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "cache-main":
                return pid
    raise ServerError("varnishd has no cache-main child")


# --- the servers ---------------------------------------------------------------------------------------

_NGINX_COMMON = """\
worker_processes {workers};
daemon off;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.log warn;
events {{ worker_connections 4096; }}
"""

_NGINX_HTTP_COMMON = """\
  access_log off;
  client_body_temp_path {tmp}/{name}-body; proxy_temp_path {tmp}/{name}-proxy;
  fastcgi_temp_path {tmp}/{name}-fastcgi; uwsgi_temp_path {tmp}/{name}-uwsgi;
  scgi_temp_path {tmp}/{name}-scgi;
  keepalive_requests 1000000; keepalive_timeout 65;
"""

ORIGIN_CONF = (
    _NGINX_COMMON
    + """\
http {{
  include /etc/nginx/mime.types; default_type application/octet-stream;
"""
    + _NGINX_HTTP_COMMON
    + """\
  sendfile on; tcp_nopush off; tcp_nodelay on;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {tmp}/www;
    location = /small  {{ add_header Cache-Control "public, max-age=3600";
                          add_header Cache-Tag "bench small"; add_header xkey "bench small"; }}
    location = /medium {{ add_header Cache-Control "public, max-age=3600";
                          add_header Cache-Tag "bench medium"; add_header xkey "bench medium"; }}
    location ~ ^/obj/(?<id>\\d*(?<tag>\\d\\d))$ {{
      add_header Cache-Control "public, max-age=3600";
      add_header Cache-Tag "tag$tag"; add_header xkey "tag$tag";
      try_files /small =404;
    }}
    location ~ ^/mobj/(?<mid>\\d+)$ {{
      add_header Cache-Control "public, max-age=3600";
      try_files /medium =404;
    }}
    location ~ ^/lobj/(?<lid>\\d+)$ {{
      add_header Cache-Control "public, max-age=3600";
      try_files /large =404;
    }}
  }}
}}
"""
)

NGINX_CACHE_CONF = (
    _NGINX_COMMON
    + """\
http {{
"""
    + _NGINX_HTTP_COMMON
    + """\
  sendfile off; tcp_nopush off; tcp_nodelay on;
  proxy_cache_path {cache} levels=1:2 keys_zone=edge:64m max_size=4g inactive=1d use_temp_path=off;
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache edge; proxy_cache_key $uri;
      add_header X-Cache $upstream_cache_status;
    }}
  }}
}}
"""
)

VARNISH_VCL = """\
vcl 4.1;
import xkey; import std;
backend origin {{ .host = "127.0.0.1"; .port = "{origin}"; }}
sub vcl_backend_response {{ set beresp.http.X-Url = bereq.url; }}
sub vcl_deliver {{
  if (obj.hits > 0) {{ set resp.http.X-Cache = "HIT"; }} else {{ set resp.http.X-Cache = "MISS"; }}
  unset resp.http.X-Url;
}}
"""

EDGECACHE_TOML = """\
data_dir = "{tmp}/{name}-data"
[data]
host = "127.0.0.1"
port = {port}
[control]
host = "127.0.0.1"
port = {control}
[storage]
memory_bytes = {memory}
max_object_bytes = {max_object}
[storage.disk]
budget_bytes = {disk_budget}
[runtime]
workers = {workers}
control_plane = "{control_plane}"
listen = "{listen}"
[[zones]]
id = "{zone}"
name = "bench.test"
hostnames = ["127.0.0.1", "localhost"]
origin = "http://127.0.0.1:{origin}"
"""


def _nginx(
    name: str,
    template: str,
    tmp: Path,
    origin: int,
    status_header: str,
    workers: int = 1,
    cache: Path | None = None,
) -> Server:
    port = free_port()
    conf = tmp / f"{name}.conf"
    cache = cache or tmp / "nginx-cache"
    conf.write_text(
        template.format(tmp=tmp, name=name, port=port, origin=origin, workers=workers, cache=cache)
    )
    argv = ["nginx", "-p", f"{tmp}/", "-e", str(tmp / f"{name}.log"), "-c", str(conf)]
    return spawn(name, argv, port, status_header, tmp)


def start_origin(tmp: Path) -> Server:
    www = tmp / "www"
    www.mkdir(mode=0o755)
    (www / "small").write_bytes(SMALL)
    (www / "medium").write_bytes(MEDIUM)
    (www / "large").write_bytes(LARGE)
    return _nginx("origin", ORIGIN_CONF, tmp, 0, "")


def start_nginx_cache(tmp: Path, origin: int, workers: int = 1, cache: Path | None = None) -> Server:
    """nginx ``proxy_cache`` in front of ``origin``, with ``worker_processes workers``, its cache files
    in ``cache`` (default: ``nginx-cache`` in ``tmp``)."""
    return _nginx("nginx", NGINX_CACHE_CONF, tmp, origin, "x-cache", workers, cache)


def start_varnish(tmp: Path, origin: int, name: str = "varnish", storage: str = "malloc,2g") -> Server:
    port, admin = free_port(), free_port()
    vcl = tmp / f"{name}.vcl"
    vcl.write_text(VARNISH_VCL.format(origin=origin))
    argv = [
        "varnishd",
        "-F",
        "-a",
        f"127.0.0.1:{port}",
        "-T",
        f"127.0.0.1:{admin}",
        "-n",
        str(tmp / f"{name}-work"),
        "-f",
        str(vcl),
        "-s",
        storage,
        "-P",
        str(tmp / f"{name}.pid"),
    ]
    return spawn(name, argv, port, "x-cache", tmp)


def start_edgecache(
    tmp: Path,
    origin: int,
    binary: Path,
    name: str = "edgecache",
    memory: int = 2147483648,
    workers: int = 1,
    max_object: int = 8 << 20,
    disk_budget: int = 1 << 30,
    listen: str = "auto",
    control_plane: str = "auto",
) -> Server:
    """Start edgecache; a second call with the same ``name`` restarts it on the same data directory."""
    if not binary.exists():
        raise ServerError(f"{binary} does not exist")
    port, control = free_port(), free_port()
    toml = tmp / f"{name}.toml"
    toml.write_text(
        EDGECACHE_TOML.format(
            tmp=tmp,
            name=name,
            port=port,
            control=control,
            origin=origin,
            zone=ZONE_ID,
            memory=memory,
            max_object=max_object,
            disk_budget=disk_budget,
            workers=workers,
            listen=listen,
            control_plane=control_plane,
        )
    )
    server = spawn(name, [str(binary), "serve", "--config", str(toml)], port, "cf-cache-status", tmp)
    server.extra["control_port"] = str(control)
    return server


def start_bare(tmp: Path) -> Server:
    """The ceiling column: ``_bare.py`` under the benchmark's own interpreter (the project's venv)."""
    port = free_port()
    script = Path(__file__).resolve().parent / "_bare.py"
    return spawn("bare", [sys.executable, str(script), str(port)], port, "x-cache", tmp)
