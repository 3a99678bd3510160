"""Cloudflare's ``wrangler`` CLI (npm), unmodified, for end-to-end tests of the Queues API.

The pinned release is the newest whose ``engines.node`` accepts Debian bookworm's Node.js (18.20):
4.49 and later need Node 20 or 22. It is installed once with npm into ``.cache/`` in the project
(ignored by git) and reused. When ``npm`` is missing and we are root, Debian's ``nodejs`` and
``npm`` are installed with apt-get; when that is impossible the tests are skipped with the reason,
except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

WRANGLER_VERSION = "4.48.0"
CACHE = Path(__file__).resolve().parent.parent / ".cache" / f"wrangler-{WRANGLER_VERSION}"
RUN_TIMEOUT = 120.0


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"wrangler is required in CI: {reason}")
    pytest.skip(f"wrangler unavailable: {reason}")


def _install_node() -> str | None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "npm not found, and not root with apt-get to install Debian's nodejs and npm"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "nodejs", "npm"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"apt-get install nodejs npm failed: {done.stderr.strip()[-500:]}"
    return None


def install_wrangler() -> Path:
    """The wrangler executable, installed on first use."""
    exe = CACHE / "node_modules" / ".bin" / "wrangler"
    if exe.exists():
        return exe
    if shutil.which("npm") is None:
        reason = _install_node()
        if reason is not None:
            _unavailable(reason)
    CACHE.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            *("npm", "install", "--no-audit", "--no-fund", "--loglevel=error"),
            *("--prefix", str(CACHE), f"wrangler@{WRANGLER_VERSION}"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode != 0 or not exe.exists():
        _unavailable(f"npm install wrangler@{WRANGLER_VERSION} failed: {done.stderr.strip()[-500:]}")
    return exe


@dataclass
class Wrangler:
    """Runs ``wrangler`` against an edgecache control plane as one account's user."""

    exe: Path
    home: Path
    api: str
    token: str
    account_id: str

    def __call__(self, *args: str) -> str:
        """Run one command; returns its output, or fails the test with it."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "CLOUDFLARE_API_BASE_URL": self.api,
            "CLOUDFLARE_API_TOKEN": self.token,
            "CLOUDFLARE_ACCOUNT_ID": self.account_id,
            "WRANGLER_SEND_METRICS": "false",
            "NO_COLOR": "1",
            "FORCE_COLOR": "0",
            "CI": "true",
        }
        done = subprocess.run(
            [str(self.exe), *args],
            cwd=self.home,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=RUN_TIMEOUT,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"wrangler {' '.join(args)} failed ({done.returncode}):\n{output}"
        return output
