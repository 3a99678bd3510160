"""Drivers for bench/purge_api.py: an edgecache node in a subprocess (bench/_purge_node.py) and a Varnish
with the purge VCL of the reference anchors, each talked to over one keep-alive connection.

Rules:
- Servers are started through ``_servers.spawn`` (own child, PR_SET_PDEATHSIG, port chosen by the kernel)
  and stopped by that PID through ``_servers.stop``; nothing is killed by name.
- Every timed request is one round trip on an already open keep-alive connection (``http.client``), timed
  with ``perf_counter`` from just before the request is written to the last byte of the answer. A
  connection the server closed meanwhile is reopened outside the timed region and the request redone.
- Every call has a timeout.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _servers as srv
from _purge_node import ALT_HOST, ALT_MOD, HOST, ZONE_ID

__all__ = ["ALT_HOST", "ALT_MOD", "HOST", "ZONE_ID", "ApiClient", "BenchError", "Conn", "EdgeNode", "Varnish"]

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "_purge_node.py"


def object_path(i: int) -> str:
    return f"/obj/{i:06d}"


def object_host(i: int) -> str:
    return ALT_HOST if i % 100 == ALT_MOD else HOST


class Conn:
    """One keep-alive HTTP/1.1 connection with timed requests."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.port = port
        self.timeout = timeout
        self.reconnects = 0
        self._c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def reopen(self) -> None:
        self._c.close()
        self._c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        self._c.connect()

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[float, int, dict[str, str], bytes]:
        """(milliseconds, status, lower-cased headers, body)."""
        for attempt in (1, 2):
            if self._c.sock is None:
                self.reopen()
            try:
                t0 = time.perf_counter()
                self._c.request(method, path, body=body, headers=headers or {})
                resp = self._c.getresponse()
                data = resp.read()
                ms = (time.perf_counter() - t0) * 1000
            except (http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine):
                if attempt == 2:
                    raise
                self.reconnects += 1
                self._c.close()
                continue
            if resp.getheader("connection", "").lower() == "close":
                self._c.close()
            return ms, resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._c.close()


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which and why."""


class ApiClient:
    """The Cloudflare v4 purge endpoints of one node, on one keep-alive connection."""

    def __init__(self, control_port: int, token: str) -> None:
        self.conn = Conn(control_port)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def purge(self, body: dict[str, Any], soft: bool = False) -> tuple[float, int, Any]:
        """POST purge_cache (or invalidate_cache): (ms, status, parsed answer)."""
        path = f"/client/v4/zones/{ZONE_ID}/{'invalidate_cache' if soft else 'purge_cache'}"
        ms, status, _, data = self.conn.request("POST", path, json.dumps(body).encode(), self.headers)
        return ms, status, json.loads(data) if data else None

    def close(self) -> None:
        self.conn.close()


class EdgeNode:
    """A node started by bench/_purge_node.py, with its API, data-plane and command connections."""

    def __init__(
        self,
        name: str,
        tmp: Path,
        origin_port: int,
        memory_bytes: int,
        no_reclaimer: bool = False,
        extra: tuple[str, ...] = (),
    ) -> None:
        hook = srv.free_port()
        argv = [
            sys.executable,
            str(LAUNCHER),
            "--hook-port",
            str(hook),
            "--origin",
            f"http://127.0.0.1:{origin_port}",
            "--data-dir",
            str(tmp / f"{name}-data"),
            "--memory-bytes",
            str(memory_bytes),
        ]
        if no_reclaimer:
            argv.append("--no-reclaimer")
        argv += extra
        self.server = srv.spawn(name, argv, hook, "cf-cache-status", tmp)
        self._hook = Conn(hook, timeout=900)
        info = self.cmd("info")
        self.pid = int(info["pid"])
        self.data_port = int(info["data_port"])
        self.control_port = int(info["control_port"])
        self.token = str(info["token"])
        self.budget = int(info["budget"])
        self.api = ApiClient(self.control_port, self.token)
        self.data = Conn(self.data_port)

    def cmd(self, op: str, **args: Any) -> dict[str, Any]:
        """One command on the launcher's command port."""
        if not self.server.alive():
            raise BenchError(f"{self.server.name} died: {self.server.why_dead()}")
        _, status, _, body = self._hook.request(
            "POST", "/cmd", json.dumps({"op": op, **args}).encode(), {"Content-Type": "application/json"}
        )
        if status != 200:
            raise BenchError(f"{op}: {status} {body[:200]!r}")
        result: dict[str, Any] = json.loads(body)
        return result

    def purge(self, body: dict[str, Any], soft: bool = False) -> tuple[float, int, Any]:
        """POST purge_cache (or invalidate_cache): (ms, status, parsed answer)."""
        return self.api.purge(body, soft)

    def get(self, path: str, host: str) -> tuple[float, int, str]:
        """GET through the data plane: (ms, status, CF-Cache-Status)."""
        ms, status, headers, _ = self.data.request("GET", path, headers={"Host": host})
        return ms, status, headers.get("cf-cache-status", "")

    def stop(self) -> None:
        for c in (self._hook, self.api, self.data):
            c.close()
        srv.stop(self.server)


# --- Varnish ---------------------------------------------------------------------------------------

VCL = """\
vcl 4.1;
import xkey; import std;
backend origin {{ .host = "127.0.0.1"; .port = "{origin}"; }}
acl purgers {{ "127.0.0.1"; }}
sub vcl_recv {{
  if (req.method == "PURGE") {{ if (client.ip !~ purgers) {{ return (synth(405)); }} return (purge); }}
  if (req.method == "BAN") {{
    if (client.ip !~ purgers) {{ return (synth(405)); }}
    if (req.http.X-Ban-Tag) {{ ban("obj.http.Cache-Tag ~ " + req.http.X-Ban-Tag); }}
    else {{ ban("obj.http.X-Url ~ " + req.http.X-Ban-Url); }}
    return (synth(200, "Ban added"));
  }}
  if (req.method == "XKEYPURGE") {{
    if (client.ip !~ purgers) {{ return (synth(405)); }}
    set req.http.n-gone = xkey.purge(req.http.X-Xkey);
    return (synth(200, "Invalidated " + req.http.n-gone + " objects"));
  }}
}}
sub vcl_backend_response {{ set beresp.http.X-Url = bereq.url; }}
sub vcl_deliver {{
  if (obj.hits > 0) {{ set resp.http.X-Cache = "HIT"; }} else {{ set resp.http.X-Cache = "MISS"; }}
  unset resp.http.X-Url;
}}
"""


@dataclass
class Varnish:
    """A fresh varnishd (``-s malloc,2g``, default parameters) with the anchors' purge VCL."""

    server: srv.Server
    workdir: Path

    @classmethod
    def start(cls, name: str, tmp: Path, origin_port: int) -> Varnish:
        port, admin = srv.free_port(), srv.free_port()
        vcl = tmp / f"{name}.vcl"
        vcl.write_text(VCL.format(origin=origin_port))
        workdir = tmp / f"{name}-work"
        argv = [
            "varnishd",
            "-F",
            "-a",
            f"127.0.0.1:{port}",
            "-T",
            f"127.0.0.1:{admin}",
            "-n",
            str(workdir),
            "-f",
            str(vcl),
            "-s",
            "malloc,2g",
            "-P",
            str(tmp / f"{name}.pid"),
        ]
        return cls(srv.spawn(name, argv, port, "x-cache", tmp), workdir)

    @property
    def port(self) -> int:
        return self.server.port

    def adm(self, *args: str) -> str:
        out = subprocess.run(
            ["varnishadm", "-n", str(self.workdir), *args], capture_output=True, text=True, timeout=20
        )
        if out.returncode != 0:
            raise BenchError(f"varnishadm {' '.join(args)}: {out.stdout.strip()} {out.stderr.strip()}")
        return out.stdout

    def counters(self, *names: str) -> dict[str, int]:
        argv = ["varnishstat", "-n", str(self.workdir), "-1", "-j"]
        for n in names:
            argv += ["-f", n]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True)
        data = json.loads(out.stdout)
        found = data.get("counters", data)
        return {n: int(found[n]["value"]) for n in names}

    def wait_counter(self, name: str, target: int, since: float, timeout: float) -> float | None:
        """Poll counter ``name`` until it reaches ``target``; seconds since ``since`` (a perf_counter
        reading), None on timeout. Each poll spawns varnishstat (~5 ms): that is the resolution."""
        while time.perf_counter() - since < timeout:
            if self.counters(name)[name] >= target:
                return time.perf_counter() - since
        return None

    def wait_below(self, name: str, target: int, since: float, timeout: float) -> float | None:
        """Like ``wait_counter``, for a gauge falling to ``target`` or below."""
        while time.perf_counter() - since < timeout:
            if self.counters(name)[name] <= target:
                return time.perf_counter() - since
        return None

    def stop(self) -> None:
        srv.stop(self.server)
