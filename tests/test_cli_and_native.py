"""The ``edgecache`` command line and the native tasks API against a running node."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from conftest import VARIANT_ZONE_ID, ZONE_ID, Route, Stack
from edgecache.cli import app

runner = CliRunner()


def api(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.node.control_port}/client/v4"


def get(stack: Stack, path: str, token: str) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{stack.node.control_port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def test_purge_command_waits_for_its_tasks(stack: Stack) -> None:
    stack.origin.routes["/cli/a"] = Route(headers={"Cache-Control": "max-age=600", "Cache-Tag": "cli"})
    stack.request("/cli/a")
    token = stack.token()
    result = runner.invoke(
        app, ["purge", "--zone", ZONE_ID, "--tag", "cli", "--api", api(stack), "--token", token, "--wait"]
    )
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip().splitlines()[0]
    assert len(job_id) == 32
    assert "success" in result.output and "1 cached objects" in result.output
    assert stack.request("/cli/a")[1]["cf-cache-status"] == "MISS"
    data_dir = Path(stack.tmp.name)
    shown = runner.invoke(app, ["tasks", "show", job_id, "--data-dir", str(data_dir)])
    assert shown.exit_code == 0 and "purge_cache_tag" in shown.stdout and "cloudflare" in shown.stdout
    listed = runner.invoke(
        app, ["tasks", "list", "--zone", ZONE_ID, "--target", "cli", "--data-dir", str(data_dir)]
    )
    assert job_id in listed.stdout


def test_purge_command_reports_api_errors(stack: Stack) -> None:
    result = runner.invoke(
        app,
        [
            "purge",
            "--zone",
            ZONE_ID,
            "--host",
            "elsewhere.example",
            "--api",
            api(stack),
            "--token",
            stack.token(),
        ],
    )
    assert result.exit_code == 1
    assert "error 1115" in result.output
    missing = runner.invoke(app, ["purge", "--zone", ZONE_ID, "--tag", "x", "--api", api(stack)], env={})
    assert missing.exit_code == 2


def test_native_jobs_api_checks_the_caller(stack: Stack) -> None:
    token = stack.token()
    result = runner.invoke(
        app,
        ["purge", "--zone", ZONE_ID, "--url", "http://test.example/n", "--api", api(stack), "--token", token],
    )
    job_id = result.stdout.strip()
    status, body = get(stack, f"/edgecache/v1/jobs/{job_id}", token)
    assert status == 200 and body["zone_id"] == ZONE_ID
    assert [t["target"] for t in body["tasks"]] == ["http://test.example/n"]
    other = stack.token(zones=[VARIANT_ZONE_ID])
    assert get(stack, f"/edgecache/v1/jobs/{job_id}", other)[0] == 404
    assert get(stack, f"/edgecache/v1/jobs/{job_id}", "x" * 40)[0] == 403
    status, listing = get(
        stack, f"/edgecache/v1/zones/{ZONE_ID}/tasks?type=purge_url&target=test.example/n", token
    )
    assert status == 200 and job_id in [t["job_id"] for t in listing["tasks"]]
