"""The ``edgecache`` command as a new user meets it: a fresh data directory, a configuration file, the
commands run in the order the README suggests, and the credentials they print working against the
node that ``serve`` starts from the same file (a real process)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cloudflare
import pytest
from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.teo.v20220901 import models, teo_client
from typer.testing import CliRunner, Result

from edgecache.cli import app
from edgecache.config import DEFAULT_ACCOUNT_ID
from edgecache.control.credentials import Permission

ZONE = "5e1f00d5e1f00d5e1f00d5e1f00d5e1f"
EO_ZONE = "zone-5e1f00d5e1f0"
runner = CliRunner()


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "edgecache.toml"
    path.write_text(
        f"""
data_dir = "{tmp_path / "state"}"
[data]
port = 0
[control]
port = 0
[[zones]]
id = "{ZONE}"
name = "site.example"
hostnames = ["site.example"]
origin = "http://127.0.0.1:9"
"""
    )
    return path


def test_token_create_on_a_fresh_directory_says_what_to_run_first(tmp_path: Path) -> None:
    result = cli(
        "token",
        "create",
        "--account",
        DEFAULT_ACCOUNT_ID,
        "--name",
        "n",
        "-p",
        "all",
        "--data-dir",
        str(tmp_path / "fresh"),
    )
    assert result.exit_code == 1
    assert f"unknown account {DEFAULT_ACCOUNT_ID}" in result.stderr
    assert "--config FILE" in result.stderr and "edgecache serve" in result.stderr
    secret = cli(
        "credential",
        "create",
        "--account",
        DEFAULT_ACCOUNT_ID,
        "--name",
        "n",
        "-p",
        "cache_purge",
        "--data-dir",
        str(tmp_path / "fresh"),
    )
    assert secret.exit_code == 1 and "--config FILE" in secret.stderr


def test_config_file_is_enough_on_a_fresh_directory(config: Path, tmp_path: Path) -> None:
    created = cli(
        "token",
        "create",
        "--config",
        str(config),
        "--account",
        DEFAULT_ACCOUNT_ID,
        "--name",
        "deploy",
        "--permission",
        "all",
        "--zone",
        ZONE,
    )
    assert created.exit_code == 0, created.output
    assert re.fullmatch(r"[A-Za-z0-9_-]{40}\n", created.stdout)
    listed = cli("token", "list", "--config", str(config))
    assert listed.exit_code == 0, listed.output
    assert ",".join(sorted(p.value for p in Permission)) in listed.stdout  # "all" is every permission
    secret = cli(
        "credential",
        "create",
        "-c",
        str(config),
        "--account",
        DEFAULT_ACCOUNT_ID,
        "--name",
        "teo",
        "-p",
        "cache_purge",
    )
    assert secret.exit_code == 0, secret.output
    assert secret.stdout.startswith("TENCENTCLOUD_SECRET_ID=AKID")
    assert (tmp_path / "state" / "edgecache.db").exists() and (tmp_path / "state" / "master.key").exists()
    tasks = cli("tasks", "list", "--config", str(config), "--zone", EO_ZONE)
    assert tasks.exit_code == 0 and "0 of 0 tasks" in tasks.stderr
    unknown = cli("token", "create", "-c", str(config), "--account", "0" * 32, "--name", "x", "-p", "all")
    assert unknown.exit_code == 1 and f"not in {config}" in unknown.stderr


def test_permission_all_is_listed_in_help() -> None:
    for group in ("token", "credential"):
        result = runner.invoke(app, [group, "create", "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        assert "or all for every one" in result.stdout
        assert all(p.value in result.stdout for p in Permission)


@contextmanager
def serve(config: Path) -> Iterator[str]:
    """``edgecache serve --config`` as its own process; yields its control-plane base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from edgecache.cli import main; main()", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NO_PROXY": "127.0.0.1"},
    )
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        found = None
        # Log lines (the allocator's, at start) come before the banner on the merged stream.
        while line := proc.stdout.readline():
            seen.append(line)
            if found := re.search(r"\(control plane on (http://\S+)/client/v4\)", line):
                break
        assert found, "".join(seen)
        yield found.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_credentials_made_before_the_first_serve_work_against_it(config: Path) -> None:
    token = cli(
        "token", "create", "-c", str(config), "--account", DEFAULT_ACCOUNT_ID, "--name", "t", "-p", "all"
    ).stdout.strip()
    pair = cli(
        "credential",
        "create",
        "-c",
        str(config),
        "--account",
        DEFAULT_ACCOUNT_ID,
        "--name",
        "e",
        "-p",
        "all",
    ).stdout
    with serve(config) as control:
        check_against(control, token, pair)


def check_against(control: str, token: str, pair: str) -> None:
    cf = cloudflare.Cloudflare(api_token=token, base_url=f"{control}/client/v4", max_retries=0)
    assert cf.cache.purge(zone_id=ZONE, tags=["fresh"]) is not None
    env = dict(line.split("=", 1) for line in pair.split())
    profile = ClientProfile(
        httpProfile=HttpProfile(protocol="http", endpoint=control.removeprefix("http://"))
    )
    teo = teo_client.TeoClient(
        credential.Credential(env["TENCENTCLOUD_SECRET_ID"], env["TENCENTCLOUD_SECRET_KEY"]), "", profile
    )
    req = models.DescribeContentQuotaRequest()
    req.ZoneId = EO_ZONE
    assert {q.Type for q in teo.DescribeContentQuota(req).PurgeQuota} >= {"purge_url", "purge_cache_tag"}
    # The purge command takes the EdgeOne-style zone id, as the EdgeOne API does.
    purged = cli(
        "purge", "--zone", EO_ZONE, "--tag", "fresh", "--api", f"{control}/client/v4", "--token", token
    )
    assert purged.exit_code == 0, purged.output
    with urllib.request.urlopen(
        urllib.request.Request(
            f"{control}/edgecache/v1/jobs/{purged.stdout.strip()}",
            headers={"Authorization": f"Bearer {token}"},
        ),
        timeout=10,
    ) as resp:
        assert json.load(resp)["zone_id"] == ZONE
    missing = cli(
        "purge",
        "--zone",
        "zone-000000000000",
        "--tag",
        "x",
        "--api",
        f"{control}/client/v4",
        "--token",
        token,
    )
    assert missing.exit_code == 1 and "no zone zone-000000000000" in missing.stderr
