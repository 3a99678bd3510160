"""``edgecache queues``: queues, consumers and messages, straight on the node's control database
(chosen by ``--config``, ``--data-dir`` or ``--database-url``, see ``cli_common``).

Every command runs the same domain service as the API (limits, leases, dead letters, durable
commits). ``purge --wait`` deletes the purged messages itself, with a progress bar, instead of
waiting for a node's sweeper (a running node may work alongside; the deletions do not conflict).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.exc import IntegrityError

from edgecache.cli_common import ConfigFile, DatabaseUrl, DataDir, echo_table, fail, open_state, when
from edgecache.config import DEFAULT_ACCOUNT_ID
from edgecache.control.queue_rules import ConsumerSpec, Message, QueueRejected, QueueSettings, Retry
from edgecache.control.queues import QueueService
from edgecache.control.secrets import MasterKey
from edgecache.control.subscriptions import SOURCES, SubscriptionService, SubscriptionSpec
from edgecache.db.tasks import TaskStore
from edgecache.edge.zones import ZoneTable

T = TypeVar("T")

queues_app = typer.Typer(help="Queues: create, push, pull, ack, purge.", no_args_is_help=True)
consumers_app = typer.Typer(
    help="The consumer of a queue (http_pull, or http_push to an endpoint).", no_args_is_help=True
)
queues_app.add_typer(consumers_app, name="consumers")
subscriptions_app = typer.Typer(
    help="Event subscriptions: edgecache's own events (purge, prefetch, queue purge) into a queue.",
    no_args_is_help=True,
)
queues_app.add_typer(subscriptions_app, name="subscriptions")

Account = Annotated[str, typer.Option("--account", help="Account id (32 hex).")]
QueueArg = Annotated[str, typer.Argument(help="Queue name (or id).")]


def _run(
    config: Path | None,
    data_dir: Path | None,
    database_url: str | None,
    work: Callable[[QueueService], Coroutine[Any, Any, T]],
) -> T:
    return _run_with(config, data_dir, database_url, lambda queues, _subs: work(queues))


def _run_with(
    config: Path | None,
    data_dir: Path | None,
    database_url: str | None,
    work: Callable[[QueueService, SubscriptionService], Coroutine[Any, Any, T]],
) -> T:
    with open_state(config, data_dir, database_url) as state:
        service = QueueService(state.engine, master_key=MasterKey(state.data_dir))
        # Publishing needs the zones and the task timeout; managing subscriptions does not.
        subscriptions = SubscriptionService(
            state.engine, service, TaskStore(state.engine), ZoneTable(()), 0.0
        )
        try:
            return asyncio.run(work(service, subscriptions))
        except QueueRejected as exc:
            raise fail(exc.message) from exc
        except IntegrityError as exc:
            raise fail(
                "unknown account: pass --config FILE (the file `edgecache serve --config FILE` uses), "
                f"or start `edgecache serve` once with the data directory {state.data_dir}"
            ) from exc
        finally:
            service.close()


async def _id(service: QueueService, account: str, queue: str) -> str:
    return (await service.find_queue(account, queue)).row.id


@queues_app.command("list")
def list_(
    account: Account = DEFAULT_ACCOUNT_ID,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Every queue of the account, with its backlog and consumer."""

    async def work(service: QueueService) -> list[tuple[str, ...]]:
        _, queues = await service.list_queues(account, per_page=10_000)
        rows: list[tuple[str, ...]] = [("NAME", "ID", "BACKLOG", "BYTES", "CONSUMER", "PAUSED", "CREATED")]
        for q in queues:
            b = await service.backlog(account, q.row.id)
            consumer = q.consumers[0].type if q.consumers else "-"
            rows.append(
                (
                    q.row.name,
                    q.row.id,
                    str(b.count),
                    str(b.bytes),
                    consumer,
                    "yes" if q.row.delivery_paused else "no",
                    when(q.row.created_at),
                )
            )
        return rows

    echo_table(_run(config, data_dir, database_url, work))


@queues_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Queue name.")],
    delivery_delay: Annotated[
        int | None, typer.Option(help="Seconds before new messages are delivered.")
    ] = None,
    retention: Annotated[
        int | None, typer.Option(help="Message retention in seconds (60 to 1209600).")
    ] = None,
    account: Account = DEFAULT_ACCOUNT_ID,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a queue and print its id."""
    settings = QueueSettings(delivery_delay=delivery_delay, retention_seconds=retention)
    queue = _run(config, data_dir, database_url, lambda s: s.create_queue(account, name, settings))
    typer.echo(queue.row.id)


@queues_app.command("delete")
def delete(
    queue: QueueArg,
    account: Account = DEFAULT_ACCOUNT_ID,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete a queue, its consumer and its messages."""

    async def work(service: QueueService) -> None:
        await service.delete_queue(account, await _id(service, account, queue))

    _run(config, data_dir, database_url, work)


def _pause(
    queue: str,
    paused: bool,
    account: str,
    config: Path | None,
    data_dir: Path | None,
    database_url: str | None,
) -> None:
    async def work(service: QueueService) -> None:
        await service.update_queue(
            account,
            await _id(service, account, queue),
            name=None,
            settings=QueueSettings(delivery_paused=paused),
            replace_all=False,
        )

    _run(config, data_dir, database_url, work)


@queues_app.command("pause")
def pause(
    queue: QueueArg,
    account: Account = DEFAULT_ACCOUNT_ID,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Stop deliveries (pulls answer queue_delivery_paused); pushes are still accepted."""
    _pause(queue, True, account, config, data_dir, database_url)


@queues_app.command("resume")
def resume(
    queue: QueueArg,
    account: Account = DEFAULT_ACCOUNT_ID,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Resume deliveries."""
    _pause(queue, False, account, config, data_dir, database_url)


@queues_app.command("push")
def push(
    queue: QueueArg,
    body: Annotated[list[str], typer.Argument(help="Message bodies (one message each).")],
    content_type: Annotated[str, typer.Option(help="text or json (the body is parsed as JSON).")] = "text",
    delay: Annotated[int | None, typer.Option(help="Seconds before delivery.")] = None,
    account: Account = DEFAULT_ACCOUNT_ID,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Push messages (durable when this returns)."""
    if content_type not in ("text", "json"):
        raise fail("--content-type must be text or json")
    messages: list[Message] = []
    for b in body:
        if content_type == "json":
            try:
                data = json.dumps(json.loads(b), separators=(",", ":")).encode()
            except ValueError as exc:
                raise fail(f"not JSON: {b!r}") from exc
        else:
            data = b.encode()
        messages.append(Message(data, content_type, delay))

    async def work(service: QueueService) -> None:
        await service.push(account, await _id(service, account, queue), messages)

    _run(config, data_dir, database_url, work)


@queues_app.command("pull")
def pull(
    queue: QueueArg,
    batch_size: Annotated[
        int | None, typer.Option(help="At most this many (default: the consumer's).")
    ] = None,
    visibility_timeout_ms: Annotated[int | None, typer.Option(help="Lease length.")] = None,
    account: Account = DEFAULT_ACCOUNT_ID,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Lease messages; prints one JSON object per message (ack them with their lease_id)."""

    async def work(service: QueueService) -> list[dict[str, object]]:
        delivered, _ = await service.pull(
            account, await _id(service, account, queue), batch_size, visibility_timeout_ms
        )
        out: list[dict[str, object]] = []
        for d in delivered:
            m = d.message
            text = m.content_type == "text"
            body = m.body.decode() if text else base64.b64encode(m.body).decode()
            out.append(
                {
                    "id": d.id,
                    "lease_id": d.lease_id,
                    "attempts": m.attempts,
                    "content_type": m.content_type,
                    "body": body,
                }
            )
        return out

    for line in _run(config, data_dir, database_url, work):
        typer.echo(json.dumps(line))


@queues_app.command("ack")
def ack(
    queue: QueueArg,
    lease_ids: Annotated[list[str] | None, typer.Argument(help="Lease ids to acknowledge.")] = None,
    retry: Annotated[
        list[str] | None, typer.Option("--retry", help="Lease id to retry (repeatable).")
    ] = None,
    retry_delay: Annotated[int | None, typer.Option(help="Seconds before retried messages return.")] = None,
    account: Account = DEFAULT_ACCOUNT_ID,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Acknowledge and retry leased messages."""

    async def work(service: QueueService) -> None:
        result = await service.ack(
            account,
            await _id(service, account, queue),
            list(lease_ids or ()),
            [Retry(r, retry_delay) for r in retry or ()],
        )
        typer.echo(f"acked {result.acked}, retried {result.retried}")
        for lease, why in result.warnings.items():
            typer.echo(f"warning: {lease}: {why}", err=True)

    _run(config, data_dir, database_url, work)


@queues_app.command("purge")
def purge(
    queue: QueueArg,
    wait: Annotated[
        bool, typer.Option("--wait", help="Delete the messages now, with a progress bar.")
    ] = False,
    account: Account = DEFAULT_ACCOUNT_ID,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Purge every message stored now; messages pushed afterwards are kept."""

    async def work(service: QueueService) -> None:
        queue_id = await _id(service, account, queue)
        started = await service.start_purge(account, queue_id)
        if not wait:
            typer.echo(f"purge started at {when(started.row.purge_started_at)}; a running node completes it")
            return
        status = await service.purge_status(account, queue_id)
        with typer.progressbar(length=status.remaining, label="purging") as bar:
            await service.finish_purge(started.row, progress=bar.update)
        typer.echo("purge completed")

    _run(config, data_dir, database_url, work)


@consumers_app.command("list")
def consumers_list(
    queue: QueueArg,
    account: Account = DEFAULT_ACCOUNT_ID,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """The queue's consumer and its settings."""

    async def work(service: QueueService) -> list[tuple[str, ...]]:
        q = await service.find_queue(account, queue)
        rows: list[tuple[str, ...]] = [
            ("ID", "TYPE", "BATCH", "RETRIES", "RETRY DELAY", "VISIBILITY MS", "DEAD LETTERS", "ENDPOINT")
        ]
        for c in q.consumers:
            rows.append(
                (
                    c.id,
                    c.type,
                    str(c.batch_size),
                    str(c.max_retries),
                    str(c.retry_delay),
                    str(c.visibility_timeout_ms),
                    c.dead_letter_queue or "-",
                    c.endpoint or "-",
                )
            )
        return rows

    echo_table(_run(config, data_dir, database_url, work))


@consumers_app.command("add")
def consumers_add(
    queue: QueueArg,
    batch_size: Annotated[int | None, typer.Option(help="Default pull batch (1 to 100).")] = None,
    max_retries: Annotated[int | None, typer.Option(help="Retries before dead-lettering (0 to 100).")] = None,
    retry_delay: Annotated[int | None, typer.Option(help="Seconds before a retried message returns.")] = None,
    visibility_timeout_ms: Annotated[int | None, typer.Option(help="Lease length.")] = None,
    dead_letter_queue: Annotated[str, typer.Option(help="Queue name for messages out of retries.")] = "",
    endpoint: Annotated[
        str | None, typer.Option(help="http_push: POST batches to this URL instead of waiting for pulls.")
    ] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="http_push: batches in flight at once.")] = None,
    account: Account = DEFAULT_ACCOUNT_ID,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Attach a consumer (http_pull, or http_push with --endpoint); prints its id, and for
    http_push the signing secret (shown once)."""
    kind = "http_push" if endpoint is not None else "http_pull"
    spec = ConsumerSpec(
        kind,
        dead_letter_queue,
        batch_size,
        max_retries,
        retry_delay,
        visibility_timeout_ms,
        endpoint=endpoint,
        max_concurrency=max_concurrency,
    )

    async def work(service: QueueService) -> str:
        row = await service.create_consumer(account, await _id(service, account, queue), spec)
        secret = service.secret_of(row)
        return row.id if secret is None else f"{row.id}\nsigning secret (shown once): {secret}"

    typer.echo(_run(config, data_dir, database_url, work))


@consumers_app.command("remove")
def consumers_remove(
    queue: QueueArg,
    account: Account = DEFAULT_ACCOUNT_ID,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Detach the queue's consumer (its messages stay)."""

    async def work(service: QueueService) -> None:
        q = await service.find_queue(account, queue)
        if not q.consumers:
            raise QueueRejected(f"queue {q.row.name!r} has no consumer")
        await service.delete_consumer(account, q.row.id, q.consumers[0].id)

    _run(config, data_dir, database_url, work)


@subscriptions_app.command("create")
def subscriptions_create(
    queue: Annotated[str, typer.Argument(help="Destination queue name (or id).")],
    source: Annotated[str, typer.Option(help=f"One of {', '.join(SOURCES)}.")],
    event: Annotated[
        list[str], typer.Option("--event", help="Event name (repeatable), e.g. purge.completed.")
    ],
    name: Annotated[str, typer.Option(help="Subscription name.")] = "edgecache events",
    zone: Annotated[str | None, typer.Option(help="Only this zone (purge, prefetch sources).")] = None,
    source_queue: Annotated[str | None, typer.Option(help="Only this queue id (queues source).")] = None,
    account: Account = DEFAULT_ACCOUNT_ID,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Subscribe a queue to edgecache events; prints the subscription id."""
    src: dict[str, Any] = {"type": source}
    if zone is not None:
        src["zone_id"] = zone
    if source_queue is not None:
        src["queue_id"] = source_queue

    async def work(queues: QueueService, subs: SubscriptionService) -> str:
        queue_id = await _id(queues, account, queue)
        spec = SubscriptionSpec(name=name, source=src, events=tuple(event), queue_id=queue_id)
        return (await subs.create(account, spec)).id

    typer.echo(_run_with(config, data_dir, database_url, work))


@subscriptions_app.command("list")
def subscriptions_list(
    account: Account = DEFAULT_ACCOUNT_ID,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """The account's event subscriptions."""

    async def work(_queues: QueueService, subs: SubscriptionService) -> list[tuple[str, ...]]:
        _, found = await subs.list(account, None, 1, 10_000)
        rows: list[tuple[str, ...]] = [("ID", "NAME", "SOURCE", "EVENTS", "QUEUE", "ENABLED")]
        for s in found:
            source = ",".join(f"{k}={v}" for k, v in sorted(s.source.items()))
            rows.append((s.id, s.name, source, ",".join(s.events), s.queue_id, "yes" if s.enabled else "no"))
        return rows

    echo_table(_run_with(config, data_dir, database_url, work))


@subscriptions_app.command("delete")
def subscriptions_delete(
    subscription_id: Annotated[str, typer.Argument(help="Subscription id.")],
    account: Account = DEFAULT_ACCOUNT_ID,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Remove an event subscription."""

    async def work(_queues: QueueService, subs: SubscriptionService) -> None:
        await subs.delete(account, subscription_id)

    _run_with(config, data_dir, database_url, work)
