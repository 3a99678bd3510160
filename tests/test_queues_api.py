"""Cloudflare Queues over the v4 API, driven by the official ``cloudflare`` SDK (unmodified), on
SQLite and on a real PostgreSQL server: every endpoint, the limits and error codes of reference
§4, leases, retries, dead letters, pause and the asynchronous whole-queue purge (the seed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import cloudflare
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from conftest import LIMITED_ACCOUNT_ID, ZONE_ID, Route, Stack
from edgecache.config import DEFAULT_ACCOUNT_ID
from edgecache.control.credentials import Permission
from pg import postgres_server_fixture  # noqa: F401
from test_cloudflare_api import raw

A = DEFAULT_ACCOUNT_ID
WRITE = (Permission.QUEUES_WRITE,)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def qstack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_server").create_database()
    s = Stack(database_url=url)
    try:
        yield s
    finally:
        s.close()


def client_for(stack: Stack, token: str) -> cloudflare.Cloudflare:
    return cloudflare.Cloudflare(
        api_token=token, base_url=f"http://127.0.0.1:{stack.node.control_port}/client/v4", max_retries=0
    )


@pytest.fixture
def cf(qstack: Stack) -> Iterator[cloudflare.Cloudflare]:
    client = client_for(qstack, qstack.token(WRITE))
    yield client
    client.close()


def name() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


def new_queue(cf: cloudflare.Cloudflare, *, consumer: dict[str, Any] | None = None, **settings: Any) -> str:
    q = cf.queues.create(account_id=A, queue_name=name())
    assert q is not None and q.queue_id is not None
    if settings:
        cf.queues.edit(q.queue_id, account_id=A, settings=settings)  # type: ignore[arg-type]
    if consumer is not None:
        cf.queues.consumers.create(q.queue_id, account_id=A, type="http_pull", **consumer)
    return q.queue_id


def error(exc: cloudflare.APIStatusError) -> dict[str, Any]:
    body = exc.body
    assert isinstance(body, dict)
    return dict(body["errors"][0])


def pull(cf: cloudflare.Cloudflare, qid: str, **kw: Any) -> list[Any]:
    res = cf.queues.messages.pull(qid, account_id=A, **kw)
    assert res is not None and res.messages is not None
    return list(res.messages)


# -- queues ---------------------------------------------------------------------------------------


def test_queue_crud_and_settings(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    n = name()
    q = cf.queues.create(account_id=A, queue_name=n)
    assert q is not None and q.queue_name == n and q.queue_id is not None and len(q.queue_id) == 32
    assert q.settings is not None and q.settings.message_retention_period == 345600
    got = cf.queues.get(q.queue_id, account_id=A)
    assert got is not None and got.queue_name == n and got.created_on is not None
    edited = cf.queues.edit(q.queue_id, account_id=A, settings={"delivery_delay": 5, "delivery_paused": True})
    assert edited is not None and edited.settings is not None
    assert (edited.settings.delivery_delay, edited.settings.delivery_paused) == (5, True)
    assert edited.settings.message_retention_period == 345600
    # PUT replaces: what is not given goes back to its default.
    renamed = n + "-x"
    put = cf.queues.update(
        q.queue_id, account_id=A, queue_name=renamed, settings={"message_retention_period": 60}
    )
    assert put is not None and put.queue_name == renamed and put.settings is not None
    assert (put.settings.delivery_delay, put.settings.delivery_paused) == (0, False)
    assert put.settings.message_retention_period == 60
    assert renamed in [x.queue_name for x in cf.queues.list(account_id=A)]
    deleted = cf.queues.delete(q.queue_id, account_id=A)
    assert deleted is not None and deleted.success is True
    with pytest.raises(cloudflare.NotFoundError) as err:
        cf.queues.get(q.queue_id, account_id=A)
    assert error(err.value)["code"] == 10104


def test_list_filters_by_name_and_pages(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    names = sorted(name() for _ in range(3))
    for n in names:
        cf.queues.create(account_id=A, queue_name=n)
    headers = {"Authorization": "Bearer " + qstack.token(WRITE)}
    path = f"/client/v4/accounts/{A}/queues"
    code, body = raw(qstack, "GET", f"{path}?name={names[1]}&page=1", None, headers)
    assert code == 200 and [q["queue_name"] for q in body["result"]] == [names[1]]
    assert body["result_info"]["total_count"] == 1
    code, body = raw(
        qstack, "GET", f"{path}?name={names[0]}&name={names[2]}&per_page=1&page=2", None, headers
    )
    assert [q["queue_name"] for q in body["result"]] == [names[2]]
    code, body = raw(qstack, "GET", f"{path}?name={names[0]}&page=9", None, headers)
    assert code == 200 and body["result"] == []


def test_queue_names_and_settings_are_checked(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    n = name()
    cf.queues.create(account_id=A, queue_name=n)
    with pytest.raises(cloudflare.ConflictError) as conflict:
        cf.queues.create(account_id=A, queue_name=n)
    assert error(conflict.value)["code"] == 11009
    with pytest.raises(cloudflare.BadRequestError) as bad:
        cf.queues.create(account_id=A, queue_name="Not A Name!")
    assert error(bad.value)["code"] == 11003
    qid = new_queue(cf)
    for settings in (
        {"message_retention_period": 59},
        {"message_retention_period": 1_209_601},
        {"delivery_delay": 86_401},
    ):
        with pytest.raises(cloudflare.BadRequestError) as bad:
            cf.queues.edit(qid, account_id=A, settings=settings)  # type: ignore[arg-type]
        assert error(bad.value)["code"] == 100128
    got = cf.queues.get(qid, account_id=A)
    assert got is not None and got.settings is not None and got.settings.delivery_delay == 0


# -- consumers ------------------------------------------------------------------------------------


def test_consumer_crud(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    qid = new_queue(cf)
    dlq = name()
    c = cf.queues.consumers.create(
        qid,
        account_id=A,
        type="http_pull",
        dead_letter_queue=dlq,
        settings={"batch_size": 10, "max_retries": 2, "retry_delay": 7, "visibility_timeout_ms": 60000},
    )
    assert c is not None and c.type == "http_pull" and c.consumer_id is not None
    assert c.settings is not None and (c.settings.batch_size, c.settings.max_retries) == (10, 2)
    assert c.dead_letter_queue == dlq
    # The dead-letter queue is created with the consumer, as Cloudflare does.
    assert dlq in [q.queue_name for q in cf.queues.list(account_id=A)]
    listed = list(cf.queues.consumers.list(qid, account_id=A))
    assert [x.consumer_id for x in listed] == [c.consumer_id]
    with pytest.raises(cloudflare.BadRequestError) as exists:
        cf.queues.consumers.create(qid, account_id=A, type="http_pull")
    assert error(exists.value)["code"] == 11004
    updated = cf.queues.consumers.update(
        c.consumer_id, account_id=A, queue_id=qid, type="http_pull", settings={"batch_size": 3}
    )
    assert updated is not None and updated.settings is not None and updated.settings.batch_size == 3
    assert updated.dead_letter_queue == ""
    got = cf.queues.consumers.get(c.consumer_id, account_id=A, queue_id=qid)
    assert got is not None and got.settings is not None and got.settings.batch_size == 3
    queue = cf.queues.get(qid, account_id=A)
    assert queue is not None and queue.consumers_total_count == 1
    assert cf.queues.consumers.delete(c.consumer_id, account_id=A, queue_id=qid).success is True  # type: ignore[union-attr]
    assert list(cf.queues.consumers.list(qid, account_id=A)) == []
    with pytest.raises(cloudflare.NotFoundError):
        cf.queues.consumers.get(c.consumer_id, account_id=A, queue_id=qid)


def test_consumer_settings_are_checked(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    qid = new_queue(cf)
    for settings in (
        {"batch_size": 101},
        {"max_retries": 101},
        {"visibility_timeout_ms": 43_200_001},
        {"retry_delay": 86_401},
    ):
        with pytest.raises(cloudflare.BadRequestError) as bad:
            cf.queues.consumers.create(qid, account_id=A, type="http_pull", settings=settings)  # type: ignore[arg-type]
        assert error(bad.value)["code"] == 100127
    with pytest.raises(cloudflare.BadRequestError) as worker:
        cf.queues.consumers.create(qid, account_id=A, type="worker", script_name="w")
    assert "http_pull" in error(worker.value)["message"]
    assert list(cf.queues.consumers.list(qid, account_id=A)) == []


# -- push and pull --------------------------------------------------------------------------------


def test_push_pull_bodies_by_content_type(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    qid = new_queue(cf, consumer={})
    cf.queues.messages.push(qid, account_id=A, body="hello", content_type="text")
    cf.queues.messages.push(qid, account_id=A, body={"greeting": "hi"}, content_type="json")
    raw_bytes = bytes(range(256))
    headers = {"Authorization": "Bearer " + qstack.token(WRITE), "Content-Type": "application/json"}
    code, _ = raw(
        qstack,
        "POST",
        f"/client/v4/accounts/{A}/queues/{qid}/messages",
        json.dumps({"body": base64.b64encode(raw_bytes).decode(), "content_type": "bytes"}).encode(),
        headers,
    )
    assert code == 200
    got = pull(cf, qid, batch_size=10)
    assert len(got) == 3 and got[0].body == "hello"
    assert json.loads(base64.b64decode(got[1].body or "")) == {"greeting": "hi"}
    assert base64.b64decode(got[2].body or "") == raw_bytes
    assert [m.metadata["CF-Content-Type"] for m in got] == ["text", "json", "bytes"]  # type: ignore[index]
    assert all(m.attempts == 1 and m.lease_id and len(m.id or "") == 32 for m in got)
    assert all(abs((m.timestamp_ms or 0) - time.time() * 1000) < 60_000 for m in got)


def test_batch_push_with_delays(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    qid = new_queue(cf, consumer={}, delivery_delay=3600)
    cf.queues.messages.bulk_push(
        qid,
        account_id=A,
        messages=[
            {"body": "queue-default", "content_type": "text"},
            {"body": "now", "content_type": "text", "delay_seconds": 0},
        ],
    )
    cf.queues.messages.bulk_push(
        qid, account_id=A, delay_seconds=0, messages=[{"body": "batch-zero", "content_type": "text"}]
    )
    assert sorted(m.body for m in pull(cf, qid, batch_size=10)) == ["batch-zero", "now"]
    metrics = cf.queues.get_metrics(qid, account_id=A)
    assert metrics is not None and metrics.backlog_count == 3
    assert metrics.backlog_bytes == len("queue-default") + len("now") + len("batch-zero")


def test_lease_gives_disjoint_batches_and_expires(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    qid = new_queue(cf, consumer={"settings": {"visibility_timeout_ms": 400}})
    cf.queues.messages.bulk_push(
        qid, account_id=A, messages=[{"body": str(i), "content_type": "text"} for i in range(40)]
    )
    batches: list[list[str]] = []

    def puller() -> None:
        client = client_for(qstack, qstack.token(WRITE))
        for _ in range(5):
            batches.append(
                [m.body or "" for m in pull(client, qid, batch_size=4, visibility_timeout_ms=60_000)]
            )

    threads = [threading.Thread(target=puller) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = [b for batch in batches for b in batch]
    assert sorted(seen, key=int) == [str(i) for i in range(40)]
    assert pull(cf, qid) == []
    # A lease not acked within its timeout returns the message, counted as another attempt.
    qid2 = new_queue(cf, consumer={"settings": {"visibility_timeout_ms": 300}})
    cf.queues.messages.push(qid2, account_id=A, body="again", content_type="text")
    first = pull(cf, qid2)
    assert [m.attempts for m in first] == [1] and pull(cf, qid2) == []
    time.sleep(0.5)
    second = pull(cf, qid2)
    assert [(m.body, m.attempts) for m in second] == [("again", 2)]
    assert second[0].lease_id != first[0].lease_id


def test_ack_and_retry_in_one_call(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    qid = new_queue(cf, consumer={"settings": {"max_retries": 5}})
    cf.queues.messages.bulk_push(
        qid, account_id=A, messages=[{"body": b, "content_type": "text"} for b in ("a", "b", "c")]
    )
    got = {m.body: m.lease_id for m in pull(cf, qid, batch_size=3)}
    res = cf.queues.messages.ack(
        qid,
        account_id=A,
        acks=[{"lease_id": got["a"] or ""}],
        retries=[{"lease_id": got["b"] or ""}, {"lease_id": got["c"] or "", "delay_seconds": 3600}],
    )
    assert res is not None and (res.ack_count, res.retry_count) == (1, 2)
    again = pull(cf, qid, batch_size=3)
    assert [(m.body, m.attempts) for m in again] == [("b", 2)]
    metrics = cf.queues.get_metrics(qid, account_id=A)
    assert metrics is not None and metrics.backlog_count == 2
    # Unknown and stale leases are warnings, not errors; a late ack of a lapsed lease still works.
    res = cf.queues.messages.ack(
        qid, account_id=A, acks=[{"lease_id": "nope"}, {"lease_id": got["b"] or ""}], retries=[]
    )
    assert res is not None and res.ack_count == 1 and "nope" in (res.warnings or {})


def test_max_retries_then_dead_letter_queue_or_deleted(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    dlq = name()
    qid = new_queue(cf, consumer={"dead_letter_queue": dlq, "settings": {"max_retries": 1}})
    cf.queues.messages.push(qid, account_id=A, body="poison", content_type="text")
    for attempt in (1, 2):
        [m] = pull(cf, qid)
        assert m.attempts == attempt
        cf.queues.messages.ack(qid, account_id=A, acks=[], retries=[{"lease_id": m.lease_id or ""}])
    assert pull(cf, qid) == []
    dlq_id = next(q.queue_id for q in cf.queues.list(account_id=A) if q.queue_name == dlq)
    assert dlq_id is not None
    cf.queues.consumers.create(dlq_id, account_id=A, type="http_pull")
    [dead] = pull(cf, dlq_id)
    assert (dead.body, dead.attempts) == ("poison", 1)
    # Without a dead-letter queue the message is deleted; an expired lease counts as an attempt.
    qid2 = new_queue(cf, consumer={"settings": {"max_retries": 0, "visibility_timeout_ms": 200}})
    cf.queues.messages.push(qid2, account_id=A, body="gone", content_type="text")
    assert len(pull(cf, qid2)) == 1
    time.sleep(0.3)
    assert pull(cf, qid2) == []
    metrics = cf.queues.get_metrics(qid2, account_id=A)
    assert metrics is not None and metrics.backlog_count == 0


def test_pause_refuses_pulls_and_keeps_pushes(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    qid = new_queue(cf, consumer={})
    cf.queues.edit(qid, account_id=A, settings={"delivery_paused": True})
    cf.queues.messages.push(qid, account_id=A, body="kept", content_type="text")
    with pytest.raises(cloudflare.ConflictError) as paused:
        cf.queues.messages.pull(qid, account_id=A)
    assert error(paused.value)["message"] == "queue_delivery_paused"
    cf.queues.edit(qid, account_id=A, settings={"delivery_paused": False})
    assert [m.body for m in pull(cf, qid)] == ["kept"]


def test_pull_needs_an_http_pull_consumer(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    qid = new_queue(cf)
    with pytest.raises(cloudflare.BadRequestError) as err:
        cf.queues.messages.pull(qid, account_id=A)
    assert "http_pull" in error(err.value)["message"]


def test_peek_and_purge_by_ref(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    qid = new_queue(cf, consumer={})
    cf.queues.messages.bulk_push(
        qid, account_id=A, messages=[{"body": b, "content_type": "text"} for b in ("x", "y")]
    )
    peeked = cf.queues.messages.peek(qid, account_id=A, batch_size=10)
    assert peeked is not None and [m.body for m in peeked.messages or []] == ["x", "y"]
    ref = (peeked.messages or [])[0].ref or ""
    res = cf.queues.messages.purge(qid, account_id=A, refs=[{"ref": ref}, {"ref": "f" * 32}])
    assert res is not None and list((res.warnings or {}).keys()) == ["f" * 32]
    assert [m.body for m in pull(cf, qid, batch_size=10)] == ["y"]


# -- whole-queue purge (the seed) -----------------------------------------------------------------


def test_purge_is_asynchronous_and_spares_later_pushes(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    qid = new_queue(cf, consumer={})
    assert cf.queues.purge.status(qid, account_id=A) is not None
    cf.queues.messages.bulk_push(
        qid, account_id=A, messages=[{"body": str(i), "content_type": "text"} for i in range(50)]
    )
    cf.queues.messages.push(qid, account_id=A, body="delayed", content_type="text", delay_seconds=3600)
    pull(cf, qid, batch_size=5)  # leased messages are purged too
    with pytest.raises(cloudflare.BadRequestError):
        cf.queues.purge.start(qid, account_id=A)
    with pytest.raises(cloudflare.BadRequestError):
        cf.queues.purge.start(qid, account_id=A, delete_messages_permanently=False)
    started = cf.queues.purge.start(qid, account_id=A, delete_messages_permanently=True)
    assert started is not None and started.queue_id == qid
    cf.queues.messages.push(qid, account_id=A, body="after", content_type="text")
    status = cf.queues.purge.status(qid, account_id=A)
    assert status is not None and status.started_at is not None
    assert status.completed in ("true", "false")
    deadline = time.monotonic() + 20
    while status is not None and status.completed != "true" and time.monotonic() < deadline:
        time.sleep(0.1)
        status = cf.queues.purge.status(qid, account_id=A)
    assert status is not None and status.completed == "true"
    assert [m.body for m in pull(cf, qid, batch_size=100)] == ["after"]
    metrics = cf.queues.get_metrics(qid, account_id=A)
    assert metrics is not None and metrics.backlog_count == 1


# -- limits and errors ----------------------------------------------------------------------------


def test_push_limits(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    qid = new_queue(cf, consumer={})
    cases: list[tuple[dict[str, Any], int]] = [
        ({"body": "x" * 128_001, "content_type": "text"}, 10204),
        ({"body": "x", "content_type": "text", "delay_seconds": 86_401}, 10203),
    ]
    for kw, code in cases:
        with pytest.raises(cloudflare.BadRequestError) as err:
            cf.queues.messages.push(qid, account_id=A, **kw)
        assert error(err.value)["code"] == code
    batches: list[tuple[dict[str, Any], int]] = [
        ({"messages": [{"body": "x", "content_type": "text"}] * 101}, 10206),
        ({"messages": [{"body": "x" * 100_000, "content_type": "text"}] * 3}, 10205),
        ({"messages": [{"body": "x", "content_type": "text"}], "delay_seconds": 86_401}, 10202),
    ]
    for kw, code in batches:
        with pytest.raises(cloudflare.BadRequestError) as err:
            cf.queues.messages.bulk_push(qid, account_id=A, **kw)
        assert error(err.value)["code"] == code
    with pytest.raises(cloudflare.BadRequestError) as err:
        cf.queues.messages.pull(qid, account_id=A, visibility_timeout_ms=43_200_001)
    assert error(err.value)["code"] == 10026
    with pytest.raises(cloudflare.BadRequestError) as err:
        cf.queues.messages.pull(qid, account_id=A, batch_size=101)
    assert error(err.value)["code"] == 10026
    # Exactly at the limits is accepted.
    cf.queues.messages.push(qid, account_id=A, body="x" * 128_000, content_type="text")
    metrics = cf.queues.get_metrics(qid, account_id=A)
    assert metrics is not None and metrics.backlog_count == 1


def test_malformed_requests(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    qid = new_queue(cf, consumer={})
    headers = {"Authorization": "Bearer " + qstack.token(WRITE), "Content-Type": "application/json"}
    base = f"/client/v4/accounts/{A}/queues"
    code, body = raw(qstack, "POST", f"{base}/{qid}/messages", b"{not json", headers)
    assert (code, body["errors"][0]["code"]) == (400, 10208)
    code, body = raw(qstack, "POST", f"{base}/{qid}/messages", b'{"body": 1, "content_type": "zip"}', headers)
    assert (code, body["errors"][0]["code"]) == (400, 10203)
    code, body = raw(qstack, "POST", f"{base}/{qid}/messages", b'{"content_type": "text"}', headers)
    assert (code, body["errors"][0]["code"]) == (400, 10207)
    code, body = raw(qstack, "POST", f"{base}/{qid}/messages/ack", b'{"acks": "x"}', headers)
    assert (code, body["errors"][0]["code"]) == (400, 10026)
    with pytest.raises(cloudflare.BadRequestError) as err:
        cf.queues.get("not-an-id", account_id=A)
    assert error(err.value)["code"] == 10107
    with pytest.raises(cloudflare.NotFoundError) as missing:
        cf.queues.messages.push("0" * 32, account_id=A, body="x", content_type="text")
    assert error(missing.value)["code"] == 10104
    metrics = cf.queues.get_metrics(qid, account_id=A)
    assert metrics is not None and metrics.backlog_count == 0


def test_permissions(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    qid = new_queue(cf, consumer={})
    reader = client_for(qstack, qstack.token((Permission.QUEUES_READ,)))
    assert qid in [q.queue_id for q in reader.queues.list(account_id=A)]
    assert reader.queues.get(qid, account_id=A) is not None
    assert reader.queues.purge.status(qid, account_id=A) is not None
    with pytest.raises(cloudflare.PermissionDeniedError) as denied:
        reader.queues.messages.push(qid, account_id=A, body="x", content_type="text")
    assert error(denied.value)["code"] == 10000
    with pytest.raises(cloudflare.PermissionDeniedError):
        reader.queues.messages.pull(qid, account_id=A)
    purger = client_for(qstack, qstack.token((Permission.CACHE_PURGE,)))
    with pytest.raises(cloudflare.PermissionDeniedError):
        purger.queues.list(account_id=A)
    other = client_for(qstack, qstack.token(WRITE, account=LIMITED_ACCOUNT_ID))
    with pytest.raises(cloudflare.PermissionDeniedError):
        other.queues.get(qid, account_id=A)
    # The other account's own namespace does not see this account's queues.
    assert qid not in [q.queue_id for q in other.queues.list(account_id=LIMITED_ACCOUNT_ID)]
    with pytest.raises(cloudflare.NotFoundError):
        other.queues.get(qid, account_id=LIMITED_ACCOUNT_ID)
    metrics = cf.queues.get_metrics(qid, account_id=A)
    assert metrics is not None and metrics.backlog_count == 0


def test_messages_survive_a_restart(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    qid = new_queue(cf, consumer={})
    cf.queues.messages.bulk_push(
        qid, account_id=A, messages=[{"body": f"m{i}", "content_type": "text"} for i in range(5)]
    )
    qstack.restart()
    client = client_for(qstack, qstack.token(WRITE))
    assert [m.body for m in pull(client, qid, batch_size=10)] == [f"m{i}" for i in range(5)]


def test_metrics_per_queue(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    qid = new_queue(cf, consumer={"settings": {"max_retries": 0}})
    cf.queues.messages.bulk_push(
        qid, account_id=A, messages=[{"body": "m" * 10, "content_type": "text"} for _ in range(4)]
    )
    leases = [m.lease_id or "" for m in pull(cf, qid, batch_size=3)]
    cf.queues.messages.ack(
        qid, account_id=A, acks=[{"lease_id": leases[0]}], retries=[{"lease_id": leases[1]}]
    )
    qstack.run(qstack.node.queues.refresh_snapshot())
    conn = http.client.HTTPConnection("127.0.0.1", qstack.node.control_port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()

    def value(metric: str) -> float:
        for line in text.splitlines():
            if line.startswith(metric + "{") and f'queue_id="{qid}"' in line:
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{metric} for {qid} not exposed")

    assert value("edgecache_queue_pushed_total") == 4
    assert value("edgecache_queue_pulled_total") == 3
    assert value("edgecache_queue_acked_total") == 1
    # max_retries 0: the retried message was out of retries and, with no dead-letter queue, deleted.
    assert value("edgecache_queue_retried_total") == 1
    assert value("edgecache_queue_dead_lettered_total") == 1
    assert value("edgecache_queue_backlog_messages") == 2
    assert value("edgecache_queue_backlog_bytes") == 20
    assert 0 <= value("edgecache_queue_oldest_message_age_seconds") < 60


# -- event subscriptions --------------------------------------------------------------------------


def wait_for_messages(cf: cloudflare.Cloudflare, qid: str, timeout: float = 20.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pull(cf, qid, batch_size=10)
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"no message arrived in queue {qid} within {timeout} s")


def event_of(message: Any) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(message.body)))


def test_event_subscription_crud(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    qid = new_queue(cf)
    sub = cf.queues.subscriptions.create(
        account_id=A,
        name="deploys",
        source={"type": "edgecache.purge"},  # type: ignore[arg-type,misc]
        events=["purge.completed"],
        destination={"type": "queues.queue", "queue_id": qid},
    )
    assert sub is not None and sub.enabled is True and sub.destination.queue_id == qid
    assert sub.source.type == "edgecache.purge"  # type: ignore[union-attr]
    listed = [s.id for s in cf.queues.subscriptions.list(account_id=A, per_page=1)]
    assert sub.id in listed
    got = cf.queues.subscriptions.get(sub.id, account_id=A)
    assert got is not None and got.events == ["purge.completed"]
    updated = cf.queues.subscriptions.update(
        sub.id, account_id=A, enabled=False, events=["purge.completed", "purge.timedOut"]
    )
    assert updated is not None and updated.enabled is False and len(updated.events) == 2
    with pytest.raises(cloudflare.BadRequestError):
        cf.queues.subscriptions.update(sub.id, account_id=A, events=["queue.purgeCompleted"])
    with pytest.raises(cloudflare.BadRequestError):
        cf.queues.subscriptions.create(
            account_id=A,
            name="r2",
            source={"type": "r2"},
            events=["object.create"],
            destination={"type": "queues.queue", "queue_id": qid},
        )
    with pytest.raises(cloudflare.NotFoundError):
        cf.queues.subscriptions.create(
            account_id=A,
            name="nowhere",
            source={"type": "edgecache.purge"},  # type: ignore[arg-type,misc]
            events=["purge.completed"],
            destination={"type": "queues.queue", "queue_id": "0" * 32},
        )
    deleted = cf.queues.subscriptions.delete(sub.id, account_id=A)
    assert deleted is not None and deleted.id == sub.id
    with pytest.raises(cloudflare.NotFoundError):
        cf.queues.subscriptions.get(sub.id, account_id=A)


def test_queue_purge_completion_is_published(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    watched = new_queue(cf)
    events = new_queue(cf, consumer={})
    cf.queues.subscriptions.create(
        account_id=A,
        name="purges",
        source={"type": "edgecache.queues", "queue_id": watched},  # type: ignore[arg-type,misc]
        events=["queue.purgeCompleted"],
        destination={"type": "queues.queue", "queue_id": events},
    )
    cf.queues.messages.push(watched, account_id=A, body="x", content_type="text")
    cf.queues.purge.start(watched, account_id=A, delete_messages_permanently=True)
    [message] = wait_for_messages(cf, events)
    event = event_of(message)
    assert event["type"] == "edgecache.queue.purgeCompleted"
    assert event["payload"]["queue_id"] == watched


def test_purge_job_completion_is_published(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    events = new_queue(cf, consumer={})
    cf.queues.subscriptions.create(
        account_id=A,
        name="cache purges",
        source={"type": "edgecache.purge", "zone_id": ZONE_ID},  # type: ignore[arg-type,misc]
        events=["purge.completed"],
        destination={"type": "queues.queue", "queue_id": events},
    )
    purger = client_for(qstack, qstack.token((Permission.CACHE_PURGE,)))
    job = purger.cache.purge(zone_id=ZONE_ID, tags=["deploy-123"])
    assert job is not None
    found = [event_of(m) for m in wait_for_messages(cf, events)]
    assert any(e["payload"]["job_id"] == job.id for e in found), found
    assert all(e["type"] == "edgecache.purge.completed" for e in found)


def test_cache_reserve_clear_completion_is_published(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    events = new_queue(cf, consumer={})
    cf.queues.subscriptions.create(
        account_id=A,
        name="reserve clears",
        source={"type": "edgecache.reserve", "zone_id": ZONE_ID},  # type: ignore[arg-type,misc]
        events=["reserve.clearCompleted"],
        destination={"type": "queues.queue", "queue_id": events},
    )
    admin = client_for(qstack, qstack.token((Permission.ZONE_SETTINGS_WRITE, Permission.ZONE_SETTINGS_READ)))
    admin.cache.cache_reserve.edit(zone_id=ZONE_ID, value="off")
    started = admin.cache.cache_reserve.clear(zone_id=ZONE_ID)
    assert started is not None
    [message] = wait_for_messages(cf, events)
    event = event_of(message)
    assert event["type"] == "edgecache.reserve.clearCompleted"
    assert event["payload"]["zone_id"] == ZONE_ID and event["payload"]["end_ts"]


# -- http_push consumers --------------------------------------------------------------------------


def wait_until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_http_push_delivers_signed_batches(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    path = f"/hook/{uuid.uuid4().hex}"
    qstack.origin.routes[path] = Route(body=b"", headers={})
    qid = new_queue(cf)
    cf.queues.messages.bulk_push(
        qid, account_id=A, messages=[{"body": f"m{i}", "content_type": "text"} for i in range(5)]
    )
    dlq = name()
    peeked = cf.queues.messages.peek(qid, account_id=A, batch_size=10)
    assert peeked is not None and peeked.messages
    # The endpoint asks for the second message to be retried; the rest are acknowledged.
    retry_id = peeked.messages[1].id
    qstack.origin.routes[path] = Route(body=json.dumps({"retries": [{"id": retry_id}]}).encode(), headers={})
    created = cf.queues.consumers.create(
        qid,
        account_id=A,
        type="http_push",  # type: ignore[arg-type]
        dead_letter_queue=dlq,
        settings={  # type: ignore[typeddict-unknown-key]
            "endpoint": f"http://127.0.0.1:{qstack.origin.port}{path}",
            "batch_size": 10,
            "max_retries": 0,
            "max_concurrency": 2,
        },
    )
    assert created is not None
    secret = cast(dict[str, Any], created.model_extra)["signing_secret"]

    def batches() -> list[tuple[str, dict[str, str], bytes]]:
        return [(r[0], r[2], r[3]) for r in qstack.origin.requests if r[1] == path]

    def bodies() -> list[str]:
        return [m["body"] for _, _, body in batches() for m in json.loads(body)["messages"]]

    # Two workers lease concurrently (max_concurrency 2), so the five messages may arrive in one
    # batch or be split between two; every message arrives exactly once, in order within a batch.
    wait_until(lambda: len(bodies()) >= 5)
    assert sorted(bodies()) == [f"m{i}" for i in range(5)]
    for method, headers, body in batches():
        assert method == "POST"
        stamp = headers["X-Edgecache-Timestamp"]
        mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        assert headers["X-Edgecache-Signature"] == f"v1={mac}"
        sent = json.loads(body)
        got = [m["body"] for m in sent["messages"]]
        assert sent["queue_id"] == qid and got == sorted(got)

    def empty() -> bool:
        m = cf.queues.get_metrics(qid, account_id=A)
        return m is not None and m.backlog_count == 0

    wait_until(empty)
    # max_retries 0: the retried message was out of retries and went to the dead-letter queue.
    dlq_id = next(q.queue_id for q in cf.queues.list(account_id=A) if q.queue_name == dlq)
    assert dlq_id is not None
    dead = cf.queues.messages.peek(dlq_id, account_id=A, batch_size=10)
    assert dead is not None and [m.body for m in dead.messages or []] == ["m1"]


def test_http_push_failures_back_off_then_dead_letter(qstack: Stack, cf: cloudflare.Cloudflare) -> None:
    path = f"/hook/{uuid.uuid4().hex}"
    qstack.origin.routes[path] = Route(status=503, body=b"down", headers={})
    qid = new_queue(cf)
    dlq = name()
    cf.queues.consumers.create(
        qid,
        account_id=A,
        type="http_push",  # type: ignore[arg-type]
        dead_letter_queue=dlq,
        settings={  # type: ignore[typeddict-unknown-key]
            "endpoint": f"http://127.0.0.1:{qstack.origin.port}{path}",
            "max_retries": 1,
        },
    )
    cf.queues.messages.push(qid, account_id=A, body="x", content_type="text")
    wait_until(lambda: qstack.origin.hits[path] >= 1)
    # The failed batch waits out its backoff (at least a second) before the second attempt.
    time.sleep(0.3)
    assert qstack.origin.hits[path] == 1
    wait_until(lambda: qstack.origin.hits[path] >= 2, timeout=30)
    dlq_id = next(q.queue_id for q in cf.queues.list(account_id=A) if q.queue_name == dlq)

    def dead() -> bool:
        m = cf.queues.get_metrics(dlq_id or "", account_id=A)
        return m is not None and m.backlog_count == 1

    wait_until(dead)
    with pytest.raises(cloudflare.BadRequestError) as bad:
        cf.queues.consumers.create(
            new_queue(cf),
            account_id=A,
            type="http_push",  # type: ignore[arg-type]
            settings={"endpoint": "ftp://example.com/x"},  # type: ignore[typeddict-unknown-key]
        )
    assert error(bad.value)["code"] == 100127


# -- arbitrary input ------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "body": JSON,
        "content_type": st.sampled_from(["text", "json", "bytes", "v8", "zip"]) | JSON,
        "delay_seconds": JSON,
        "messages": st.lists(
            st.dictionaries(st.sampled_from(["body", "content_type", "delay_seconds"]), JSON)
        ),
        "batch_size": JSON,
        "visibility_timeout_ms": JSON,
        "acks": JSON,
        "retries": JSON,
        "refs": JSON,
        "queue_name": JSON,
        "settings": JSON,
        "type": JSON,
        "delete_messages_permanently": JSON,
    },
)


@pytest.fixture(scope="module")
def fuzz_queue(qstack: Stack) -> str:
    client = client_for(qstack, qstack.token(WRITE))
    try:
        return new_queue(client, consumer={})
    finally:
        client.close()


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=FIELDS | JSON, target=st.sampled_from(
    ["messages", "messages/batch", "messages/pull", "messages/ack", "messages/peek", "messages/purge",
     "purge", "consumers", ""]
))  # fmt: skip
def test_arbitrary_bodies_never_answer_5xx(qstack: Stack, fuzz_queue: str, body: Any, target: str) -> None:
    qid = fuzz_queue
    headers = {"Authorization": "Bearer " + qstack.token(WRITE), "Content-Type": "application/json"}
    path = f"/client/v4/accounts/{A}/queues/{qid}" + (f"/{target}" if target else "")
    if target == "":
        path = f"/client/v4/accounts/{A}/queues"
    code, answer = raw(qstack, "POST", path, json.dumps(body).encode(), headers)
    assert code < 500, answer
    assert answer["success"] is (code == 200)
