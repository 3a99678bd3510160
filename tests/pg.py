"""A real PostgreSQL server for tests: ``initdb`` into a temporary directory, ``postgres`` on a free
port of 127.0.0.1, stopped and deleted at the end of the session.

Use it from a test module with::

    from pg import postgres_server_fixture, postgres_url_fixture  # noqa: F401

which provides the fixtures ``postgres_server`` (session: the server's base URL) and
``postgres_url`` (per test: a fresh, empty database on that server).

Finding the binaries: ``initdb`` on PATH, else the newest ``/usr/lib/postgresql/*/bin``. When they
are missing and we are root, Debian's ``postgresql`` package is installed with apt-get. If that is
impossible the tests are skipped with the reason, except under CI (``CI`` set), where they fail.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user the package
creates, in a directory under /tmp handed to that user (pytest's own tmp dirs are 0700 root).
Durability settings are off (fsync, full-page writes): the tests check behaviour, not crash safety.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

START_TIMEOUT = 30.0


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"no PostgreSQL server available: {reason}")


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path))


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``, or None."""
    on_path = shutil.which("initdb")
    if on_path is not None:
        # Debian links /usr/bin or /usr/local/bin/initdb into the versioned directory, where
        # ``postgres`` lives too.
        bindir = Path(on_path).resolve().parent
        if (bindir / "postgres").exists():
            return bindir
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    return Path(found[-1]).parent if found else None


def install_postgresql() -> str | None:
    """Install Debian's ``postgresql``; return None on success or why it was impossible."""
    if os.geteuid() != 0:
        return "initdb not found, and not root to install Debian's postgresql package"
    if shutil.which("apt-get") is None:
        return "initdb not found, and no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        # A fresh image often has no package lists yet.
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"apt-get install postgresql failed: {done.stderr.strip()[-500:]}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A running server; ``url`` names its ``postgres`` database as the ``postgres`` superuser."""

    port: int
    base: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "postgres.log").read_text(errors="replace")[-3000:]
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown: disconnect clients, then exit cleanly.
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.base, ignore_errors=True)


def start_postgres(*, durable: bool = False) -> PostgresServer:
    """initdb + postgres; raises RuntimeError with the server log when it does not come up.

    ``durable`` keeps PostgreSQL's default fsync and synchronous commit (benchmarks measure with
    them); tests turn them off."""
    bindir = find_bindir()
    if bindir is None:
        reason = install_postgresql()
        if reason is not None:
            _unavailable(reason)
        bindir = find_bindir()
        if bindir is None:
            _unavailable("the postgresql package installed no initdb")
    assert bindir is not None
    as_user: dict[str, Any] = {}
    base = Path(tempfile.mkdtemp(prefix="edgecache-pg-"))
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' user to run the server as")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    data = base / "data"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    init = subprocess.run(
        [
            *(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"),
            *("-E", "UTF8", "--no-locale", "--no-sync"),
        ],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        **as_user,
    )
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    last_log = ""
    for _attempt in range(3):  # another process may take the free port before postgres binds it
        port = _free_port()
        with (base / "postgres.log").open("ab") as log:
            process = subprocess.Popen(
                [
                    *(str(bindir / "postgres"), "-D", str(data), "-k", str(base), "-p", str(port)),
                    *("-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"),
                    *(
                        ()
                        if durable
                        else ("-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off")
                    ),
                ],
                cwd=base,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                **as_user,
            )
        server = PostgresServer(port, base, process)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            try:
                psycopg.connect(
                    host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2
                ).close()
                return server
            except psycopg.OperationalError:
                time.sleep(0.05)
        last_log = server.log()
        if process.poll() is None:
            process.kill()
            process.wait()
    shutil.rmtree(base, ignore_errors=True)
    raise RuntimeError(f"postgres did not start:\n{last_log}")


@pytest.fixture(scope="session", name="postgres_server")
def postgres_server_fixture() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="postgres_url")
def postgres_url_fixture(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()
