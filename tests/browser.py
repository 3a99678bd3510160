"""A real headless Chromium for console tests: Debian's ``chromium`` driven by Playwright for Python.

Use it from a test module with::

    from browser import browser_fixture  # noqa: F401

which provides the module fixture ``browser`` (a Playwright ``Browser``). Module scope, not session:
Playwright's sync API keeps an event loop running on the main thread while it is open, and other
modules' tests start their own loops there.

Playwright's own browser download cannot run on these machines, so it is pointed at the system
Chromium (``executable_path``). When ``chromium`` is missing and we are root, Debian's package is
installed with apt-get. If that is impossible the tests are skipped with the reason, except under
CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

CANDIDATES = ("chromium", "chromium-browser")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"Chromium is required in CI: {reason}")
    pytest.skip(f"no Chromium available: {reason}")


def find_chromium() -> str | None:
    """The system Chromium's path, or None."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found is not None:
            return found
    return None


def install_chromium() -> str | None:
    """Install Debian's ``chromium``; return None on success or why it was impossible."""
    if os.geteuid() != 0:
        return "chromium not found, and not root to install Debian's chromium package"
    if shutil.which("apt-get") is None:
        return "chromium not found, and no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", "fonts-dejavu-core"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        # A fresh image often has no package lists yet.
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"apt-get install chromium failed: {done.stderr.strip()[-500:]}"
    return None


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Browser]:
    path = find_chromium()
    if path is None:
        reason = install_chromium()
        if reason is not None:
            _unavailable(reason)
        path = find_chromium()
        if path is None:
            _unavailable("the chromium package installed no chromium binary")
    assert path is not None
    with sync_playwright() as pw:
        # --no-sandbox: the sandbox needs user namespaces, which containers (and root) often lack.
        browser = pw.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()
