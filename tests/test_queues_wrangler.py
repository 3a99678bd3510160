"""Cloudflare's own CLI, ``wrangler`` (unmodified, from npm), managing queues on edgecache: every
queue command a user runs, each checked through the official Python SDK afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import cloudflare
import pytest

from conftest import Stack
from edgecache.config import DEFAULT_ACCOUNT_ID as A
from edgecache.control.credentials import Permission
from wrangler import Wrangler, install_wrangler


@pytest.fixture(scope="module")
def wrangler(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Wrangler:
    exe = install_wrangler()
    return Wrangler(
        exe=exe,
        home=tmp_path_factory.mktemp("wrangler-home"),
        api=f"http://127.0.0.1:{stack.node.control_port}/client/v4",
        token=stack.token((Permission.QUEUES_WRITE,)),
        account_id=A,
    )


@pytest.fixture(scope="module")
def cf(stack: Stack) -> Iterator[cloudflare.Cloudflare]:
    client = cloudflare.Cloudflare(
        api_token=stack.token((Permission.QUEUES_WRITE,)),
        base_url=f"http://127.0.0.1:{stack.node.control_port}/client/v4",
        max_retries=0,
    )
    yield client
    client.close()


def queue(cf: cloudflare.Cloudflare, name: str) -> cloudflare.types.queues.Queue | None:
    return next((q for q in cf.queues.list(account_id=A) if q.queue_name == name), None)


def test_wrangler_manages_a_queue_end_to_end(wrangler: Wrangler, cf: cloudflare.Cloudflare) -> None:
    wrangler("queues", "create", "orders", "--delivery-delay-secs", "5")
    q = queue(cf, "orders")
    assert q is not None and q.queue_id is not None and q.settings is not None
    assert q.settings.delivery_delay == 5
    assert "orders" in wrangler("queues", "list")

    wrangler(
        "queues", "update", "orders", "--delivery-delay-secs", "0", "--message-retention-period-secs", "3600"
    )
    q = cf.queues.get(q.queue_id, account_id=A)
    assert q is not None and q.settings is not None
    assert (q.settings.delivery_delay, q.settings.message_retention_period) == (0, 3600)

    wrangler(
        "queues", "consumer", "http", "add", "orders",
        "--batch-size", "7", "--message-retries", "2", "--dead-letter-queue", "orders-dlq",
        "--visibility-timeout-secs", "60", "--retry-delay-secs", "3",
    )  # fmt: skip
    [consumer] = list(cf.queues.consumers.list(q.queue_id, account_id=A))
    assert consumer.type == "http_pull" and consumer.settings is not None
    assert consumer.dead_letter_queue == "orders-dlq"
    s = consumer.settings
    assert (s.batch_size, s.max_retries, s.retry_delay, s.visibility_timeout_ms) == (7, 2, 3, 60_000)
    assert queue(cf, "orders-dlq") is not None
    info = wrangler("queues", "info", "orders")
    assert q.queue_id in info and "HTTP Pull Consumer" in info

    cf.queues.messages.push(q.queue_id, account_id=A, body="first", content_type="text")
    wrangler("queues", "pause-delivery", "orders")
    with pytest.raises(cloudflare.ConflictError):
        cf.queues.messages.pull(q.queue_id, account_id=A)
    wrangler("queues", "resume-delivery", "orders")
    pulled = cf.queues.messages.pull(q.queue_id, account_id=A)
    assert pulled is not None and [m.body for m in pulled.messages or []] == ["first"]

    cf.queues.messages.bulk_push(
        q.queue_id, account_id=A, messages=[{"body": str(i), "content_type": "text"} for i in range(20)]
    )
    wrangler("queues", "purge", "orders", "--force")
    status = cf.queues.purge.status(q.queue_id, account_id=A)
    assert status is not None and status.started_at is not None
    metrics = cf.queues.get_metrics(q.queue_id, account_id=A)
    assert metrics is not None and metrics.backlog_count == 0

    wrangler("queues", "consumer", "http", "remove", "orders")
    assert list(cf.queues.consumers.list(q.queue_id, account_id=A)) == []
    wrangler("queues", "delete", "orders")
    assert queue(cf, "orders") is None
    assert "orders" not in wrangler("queues", "list").replace("orders-dlq", "")


def test_wrangler_sees_queues_created_elsewhere(wrangler: Wrangler, cf: cloudflare.Cloudflare) -> None:
    created = cf.queues.create(account_id=A, queue_name="from-sdk")
    assert created is not None and created.queue_id is not None
    assert created.queue_id in wrangler("queues", "info", "from-sdk")


def test_wrangler_lists_and_deletes_event_subscriptions(
    wrangler: Wrangler, cf: cloudflare.Cloudflare
) -> None:
    created = cf.queues.create(account_id=A, queue_name="deploy-events")
    assert created is not None and created.queue_id is not None
    sub = cf.queues.subscriptions.create(
        account_id=A,
        name="purges done",
        source={"type": "edgecache.purge"},  # type: ignore[arg-type,misc]
        events=["purge.completed", "purge.timedOut"],
        destination={"type": "queues.queue", "queue_id": created.queue_id},
    )
    assert sub is not None
    listing = wrangler("queues", "subscription", "list", "deploy-events")
    assert sub.id in listing and "edgecache.purge" in listing and "purge.completed" in listing
    wrangler("queues", "subscription", "delete", "deploy-events", "--id", sub.id, "--force")
    with pytest.raises(cloudflare.NotFoundError):
        cf.queues.subscriptions.get(sub.id, account_id=A)
    assert "No event subscriptions found" in wrangler("queues", "subscription", "list", "deploy-events")
