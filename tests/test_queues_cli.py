"""``edgecache queues ...`` on a data directory, as an operator runs it."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edgecache.cli import app
from edgecache.config import DEFAULT_ACCOUNT_ID
from edgecache.control.credentials import CredentialService
from edgecache.db.engine import open_database, sqlite_url


def test_queue_lifecycle_from_the_command_line(tmp_path: Path) -> None:
    engine = open_database(sqlite_url(tmp_path))
    CredentialService(engine).ensure_account(DEFAULT_ACCOUNT_ID, "default", "enterprise")
    engine.dispose()
    runner = CliRunner()
    d = ["--data-dir", str(tmp_path)]

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, ["queues", *args, *d])
        assert result.exit_code == code, result.output
        return result.output

    queue_id = run("create", "jobs").strip()
    assert len(queue_id) == 32
    run(
        "consumers",
        "add",
        "jobs",
        "--batch-size",
        "2",
        "--max-retries",
        "1",
        "--dead-letter-queue",
        "jobs-dlq",
    )
    assert "jobs-dlq" in run("consumers", "list", "jobs")
    run("push", "jobs", "a", "b", "c")
    run("push", "jobs", '{"k": 1}', "--content-type", "json")
    leased = [json.loads(line) for line in run("pull", "jobs").splitlines()]
    assert [m["body"] for m in leased] == ["a", "b"]
    out = run("ack", "jobs", leased[0]["lease_id"], "--retry", leased[1]["lease_id"])
    assert "acked 1, retried 1" in out
    listing = run("list")
    assert "jobs " in listing and "jobs-dlq" in listing
    row = next(line for line in listing.splitlines() if line.startswith("jobs "))
    assert row.split()[2] == "3"  # b (retried), c, the JSON message
    run("pause", "jobs")
    assert "queue_delivery_paused" in run("pull", "jobs", code=1)
    run("resume", "jobs")
    out = run("purge", "jobs", "--wait")
    assert "purge completed" in out
    assert run("pull", "jobs") == ""
    run("push", "nope", "x", code=1)
    sub_id = run(
        "subscriptions", "create", "jobs-dlq", "--source", "edgecache.purge", "--event", "purge.completed"
    ).strip()
    assert sub_id in run("subscriptions", "list")
    run("subscriptions", "create", "jobs", "--source", "r2", "--event", "x", code=1)
    run("subscriptions", "delete", sub_id)
    assert sub_id not in run("subscriptions", "list")
    run("consumers", "remove", "jobs")
    run("delete", "jobs")
    run("create", "hooks")
    out = run("consumers", "add", "hooks", "--endpoint", "https://hooks.example/q", "--max-concurrency", "4")
    assert "signing secret (shown once)" in out
    assert "https://hooks.example/q" in run("consumers", "list", "hooks")
    run("consumers", "add", "jobs-dlq", "--endpoint", "file:///etc/passwd", code=1)
    assert "jobs " not in run("list")
