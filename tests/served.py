"""A node in its own process (``edgecache serve``), as an operator runs it: for tests that kill it
or drive it with external tools (wrangler).

The node listens on free ports of 127.0.0.1; its control URL is read from the banner it prints.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from edgecache.config import DEFAULT_ACCOUNT_ID
from edgecache.control.credentials import CredentialService, Permission
from edgecache.db.engine import open_database, sqlite_url

START_TIMEOUT = 30.0
BANNER = re.compile(r"control plane on (http://[^ )]+)/client/v4")


class ServedNode:
    """``edgecache serve -c <config>`` on a data directory; start, kill -9, start again."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.config = data_dir / "edgecache.toml"
        self.config.write_text(
            f'data_dir = "{data_dir}"\n'
            '[data]\nhost = "127.0.0.1"\nport = 0\n'
            '[control]\nhost = "127.0.0.1"\nport = 0\n'
        )
        self.process: subprocess.Popen[str] | None = None
        self.base = ""

    def start(self) -> str:
        """Start the node; returns its control-plane base URL (``http://127.0.0.1:<port>``)."""
        exe = Path(sys.executable).parent / "edgecache"
        self.process = subprocess.Popen(
            [str(exe), "serve", "-c", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + START_TIMEOUT
        seen: list[str] = []
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            seen.append(line)
            found = BANNER.search(line)
            if found:
                self.base = found.group(1)
                return self.base
        self.kill()
        raise RuntimeError("edgecache serve did not start:\n" + "".join(seen))

    def token(self, *permissions: Permission) -> str:
        """A new API token of the default account, written straight into the node's database."""
        engine = open_database(sqlite_url(self.data_dir))
        try:
            _, secret = CredentialService(engine).create_token(
                DEFAULT_ACCOUNT_ID, "served", list(permissions), None
            )
        finally:
            engine.dispose()
        return secret

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM and wait for a clean exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
