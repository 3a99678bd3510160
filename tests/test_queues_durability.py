"""What a queue promises across crashes: a push that was answered survives ``kill -9`` of the node
process; a lease that was never acked comes back after the restart."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import cloudflare
import pytest

from edgecache.config import DEFAULT_ACCOUNT_ID as A
from edgecache.control.credentials import Permission
from served import ServedNode


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedNode]:
    node = ServedNode(tmp_path)
    try:
        yield node
    finally:
        node.stop()


def client(base: str, token: str) -> cloudflare.Cloudflare:
    return cloudflare.Cloudflare(api_token=token, base_url=f"{base}/client/v4", max_retries=0)


def test_answered_pushes_survive_kill_9(served: ServedNode) -> None:
    base = served.start()
    token = served.token(Permission.QUEUES_WRITE)
    cf = client(base, token)
    q = cf.queues.create(account_id=A, queue_name="durable")
    assert q is not None and q.queue_id is not None
    qid = q.queue_id
    cf.queues.consumers.create(qid, account_id=A, type="http_pull", settings={"visibility_timeout_ms": 100})
    answered: list[str] = []
    lock = threading.Lock()

    def producer(p: int) -> None:
        c = client(base, token)
        for i in range(10):
            body = f"{p}-{i}"
            c.queues.messages.push(qid, account_id=A, body=body, content_type="text")
            with lock:
                answered.append(body)

    threads = [threading.Thread(target=producer, args=(p,)) for p in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    leased = cf.queues.messages.pull(qid, account_id=A, batch_size=3, visibility_timeout_ms=60_000)
    assert leased is not None and len(leased.messages or []) == 3
    served.kill()

    base = served.start()
    cf = client(base, token)
    got: list[str] = []
    while True:
        batch = cf.queues.messages.pull(qid, account_id=A, batch_size=100, visibility_timeout_ms=60_000)
        assert batch is not None
        if not batch.messages:
            break
        got += [m.body or "" for m in batch.messages]
    # Everything answered is there, except the three still leased (they return after their lease).
    assert len(got) == len(answered) - 3
    assert set(got) < set(answered)
