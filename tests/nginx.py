"""A real nginx origin for tests: static files from a temporary directory, on a free port of
127.0.0.1, plain HTTP or HTTPS, stopped by its PID at the end.

Finding the binary: ``nginx`` on PATH or ``/usr/sbin/nginx``. When it is missing and we are root,
Debian's ``nginx`` package is installed with apt-get (its service is never started: ``policy-rc.d``
refuses it, as ``bench/run.py`` does). If that is impossible the tests are skipped with the reason,
except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

START_TIMEOUT = 20.0

CONF = """\
worker_processes 1;
daemon off;
pid {base}/nginx.pid;
error_log {base}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {base}/body; proxy_temp_path {base}/proxy;
  fastcgi_temp_path {base}/fastcgi; uwsgi_temp_path {base}/uwsgi; scgi_temp_path {base}/scgi;
  keepalive_requests 1000; keepalive_timeout 65;
  gzip on; gzip_types text/plain; gzip_min_length 0; gzip_vary on; gzip_proxied any;
  default_type text/plain;
  server {{
    listen 127.0.0.1:{port}{ssl};
    {certificate}
    root {base}/www;
    add_header Cache-Control "public, max-age=3600";
    add_header X-Connection $connection;
    add_header Cache-Tag "nginx";
  }}
}}
"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"nginx is required in CI: {reason}")
    pytest.skip(f"no nginx available: {reason}")


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found is None and Path("/usr/sbin/nginx").exists():
        found = "/usr/sbin/nginx"
    return found


def install_nginx() -> str | None:
    """Install Debian's ``nginx`` without starting its service; None on success, else why not."""
    if os.geteuid() != 0:
        return "nginx not found, and not root to install Debian's nginx package"
    if shutil.which("apt-get") is None:
        return "nginx not found, and no apt-get to install it"
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "nginx"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    finally:
        if created:
            policy.unlink()
    if done.returncode != 0:
        return f"apt-get install nginx failed: {done.stderr.strip()[-500:]}"
    return None


class NginxOrigin:
    """A running nginx serving ``files`` (name → bytes); ``url`` is its base URL."""

    def __init__(self, files: dict[str, bytes], *, cert: Path | None = None, key: Path | None = None) -> None:
        binary = find_nginx()
        if binary is None:
            reason = install_nginx()
            if reason is not None:
                _unavailable(reason)
            binary = find_nginx()
            if binary is None:
                _unavailable("the nginx package installed no nginx binary")
        assert binary is not None
        self.base = Path(tempfile.mkdtemp(prefix="edgecache-nginx-"))
        self.base.chmod(0o755)  # nginx's workers run as another user and read the files here
        www = self.base / "www"
        www.mkdir(mode=0o755)
        for name, data in files.items():
            (www / name).write_bytes(data)
            (www / name).chmod(0o644)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        tls = cert is not None and key is not None
        certificate = f"ssl_certificate {cert}; ssl_certificate_key {key};" if tls else ""
        conf = self.base / "nginx.conf"
        conf.write_text(
            CONF.format(base=self.base, port=self.port, ssl=" ssl" if tls else "", certificate=certificate)
        )
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [binary, "-p", f"{self.base}/", "-e", str(self.base / "error.log"), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log()
                self.stop()
                raise RuntimeError(f"nginx exited: {log}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.05)
        log = self.log()
        self.stop()
        raise RuntimeError(f"nginx not listening after {START_TIMEOUT:.0f} s: {log}")

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "error.log").read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.base, ignore_errors=True)
