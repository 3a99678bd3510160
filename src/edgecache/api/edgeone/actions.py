"""The content-management actions of the EdgeOne dialect: purge and prefetch tasks, and quotas.

Wire facts: reference ``edgeone-api.md`` §3 (CreatePurgeTask), §4 (DescribePurgeTasks), §5
(prefetch) and §6 (DescribeContentQuota). Each action translates onto the same ``control/``
services as the Cloudflare dialect, so a purge sent either way is a task visible both ways.

Decisions where the reference is silent or in conflict (§3.6):
- ``Method`` is documented for ``purge_prefix``, ``purge_host`` and ``purge_all``, whose default is
  ``invalidate``; URL and Cache-Tag purges delete by default, as the Chinese documentation's examples
  say ("直接清除", delete directly). An explicit ``Method`` is honoured for every type; the method
  used is stored on each task.
- ``CacheTag.Domains`` limits a tag purge to those hostnames of the zone (each must be one, else
  ``InvalidParameter.DomainNotFound``); without ``CacheTag`` the purge covers the whole zone, as the
  official example sends it.
- ``DescribePurgeTasks``/``DescribePrefetchTasks``: ``EndTime`` more than 7 days after ``StartTime``
  is ``InvalidParameter.ParameterError`` with the documented message; ``Offset`` must fit the
  database's 64-bit integers.
- Targets whose host is not one of the zone's are answered in ``FailedList`` with the reason
  ``domain not valid``; the task is created for the rest. If no target is left:
  ``InvalidParameter.DomainNotFound``.
- ``ZoneId`` ``*`` (several sites in one call) is not supported: name the zone.
- Prefix targets carry a scheme (``http://host/dir/``); the scheme is ignored, as for URLs.
- The Cloudflare plan's per-request item counts and token buckets do not apply here; the zone's
  quotas (``Batch``/``Daily``) and the 20 requests/second per action do.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from edgecache.api.edgeone.dispatch import (
    ActionContext,
    optional,
    register,
    reject_unknown,
    require,
    resolve_zone,
)
from edgecache.api.edgeone.envelope import EoError
from edgecache.control.credentials import Permission
from edgecache.control.prefetch import split_target
from edgecache.control.purges import FileTarget, PurgeRejected, PurgeRequest
from edgecache.control.quotas import QuotaExceeded
from edgecache.db.tasks import MAX_OFFSET, TaskQuery, TaskRow
from edgecache.purge.selectors import Mode

PURGE_TYPES = ("purge_url", "purge_prefix", "purge_host", "purge_all", "purge_cache_tag")
METHODS = {"invalidate": Mode.INVALIDATE, "delete": Mode.DELETE}
DEFAULT_METHOD = {
    "purge_url": "delete",
    "purge_cache_tag": "delete",
    "purge_prefix": "invalidate",
    "purge_host": "invalidate",
    "purge_all": "invalidate",
}
MAX_WINDOW = timedelta(days=7)
WINDOW_MESSAGE = (
    "Parameter error: Invalid \u201cEnd time\u201d. The interval between the start and end time cannot "
    "exceed 7 days."
)
"""The description of ``InvalidParameter.ParameterError`` on the DescribePurgeTasks page."""

STATUSES = ("processing", "success", "failed", "timeout", "canceled")
MAX_LIMIT = 1000
MAX_FILTER_VALUES = 20
DOMAIN_NOT_VALID = "domain not valid"
PURGE_ACTION = "CreatePurgeTask"
"""The action the control listener answers itself (decision 0027's addendum)."""


def _param_error(message: str) -> EoError:
    return EoError("InvalidParameter.ParameterError", message)


def _quota_error(exc: QuotaExceeded) -> EoError:
    if exc.kind == "batch":
        return EoError("LimitExceeded.BatchQuota", f"Reached the upper limit of resource number: {exc}")
    return EoError("LimitExceeded.DailyQuota", f"Reached the daily upper limit of resource number: {exc}")


def _encode(url: str, encode: bool) -> str:
    """``EncodeUrl``: percent-encode non-ASCII characters (RFC 3986), leaving the rest as sent."""
    return quote(url, safe="".join(chr(c) for c in range(0x21, 0x7F))) if encode else url


def _host_of(target: str, type_: str) -> str | None:
    if type_ == "purge_host":
        return target.strip().lower().rstrip(".")
    parsed = split_target(target if "://" in target else "http://" + target)
    return None if parsed is None else parsed[0]


@register(PURGE_ACTION)
async def create_purge_task(ctx: ActionContext) -> dict[str, Any]:
    """Reference §3: one job, one task per target; JobId and FailedList."""
    p = ctx.params
    reject_unknown(p, ("ZoneId", "Type", "Method", "Targets", "EncodeUrl", "CacheTag"))
    zone_id = require(p, "ZoneId", str)
    if zone_id == "*":
        raise EoError("InvalidParameterValue", "ZoneId `*` is not supported by this server; name one zone.")
    type_ = require(p, "Type", str)
    if type_ not in PURGE_TYPES:
        raise EoError("InvalidParameterValue", f"The value `{type_}` of parameter `Type` is not valid.")
    method = optional(p, "Method", str, DEFAULT_METHOD.get(type_, "invalidate"))
    if method not in METHODS:
        raise EoError("InvalidParameterValue", f"The value `{method}` of parameter `Method` is not valid.")
    targets: list[str] = optional(p, "Targets", list, [])
    if not all(isinstance(t, str) for t in targets):
        raise EoError("InvalidParameter", "The parameter `Targets` must be an array of strings.")
    encode = optional(p, "EncodeUrl", bool, False)
    cache_tag = optional(p, "CacheTag", dict, {})
    zone = resolve_zone(ctx, zone_id, Permission.CACHE_PURGE)
    if type_ == "purge_all":
        if targets:
            raise _param_error("Targets must be empty for purge_all.")
    elif not targets:
        raise EoError("MissingParameter", "The request is missing a required parameter `Targets`.")
    domains: list[str] = []
    if type_ == "purge_cache_tag" and cache_tag:
        reject_unknown(cache_tag, ("Domains",), where="CacheTag.")
        domains = require(cache_tag, "Domains", list, where="CacheTag.")
        if not domains:
            raise _param_error("CacheTag.Domains must name at least one domain; omit CacheTag for all.")
        for d in domains:
            if not isinstance(d, str) or d.strip().lower().rstrip(".") not in zone.hostnames:
                raise EoError(
                    "InvalidParameter.DomainNotFound",
                    f"The domain `{d}` does not exist or does not belong to this zone.",
                )
    valid: list[str] = []
    refused: list[str] = []
    for target in targets:
        host = None if type_ == "purge_cache_tag" else _host_of(target, type_)
        if type_ != "purge_cache_tag" and host not in zone.hostnames:
            refused.append(target)
        else:
            valid.append(target)
    if targets and not valid:
        raise EoError(
            "InvalidParameter.DomainNotFound",
            "No target belongs to a domain of this zone: " + ", ".join(refused),
        )
    if type_ == "purge_url":
        req = PurgeRequest(files=tuple(FileTarget(_encode(t, encode)) for t in valid))
    elif type_ == "purge_prefix":
        req = PurgeRequest(prefixes=tuple(_encode(t, encode).split("://", 1)[-1] for t in valid))
    elif type_ == "purge_host":
        req = PurgeRequest(hosts=tuple(valid))
    elif type_ == "purge_cache_tag":
        req = PurgeRequest(tags=tuple(valid), tag_hosts=tuple(d.strip().lower().rstrip(".") for d in domains))
    else:
        req = PurgeRequest(everything=True)
    purges = ctx.control.purges
    try:
        items = purges.items(zone, req, plan_limits=False)
        if type_ == "purge_prefix":
            # The task names the target as the user sent it, scheme included.
            items = tuple(replace(item, target=t) for t, item in zip(valid, items, strict=True))
        accepted = await purges.submit(
            zone, METHODS[method], items, req, principal=ctx.principal.ref, dialect="edgeone"
        )
    except PurgeRejected as exc:
        raise EoError("InvalidParameter.Target", exc.message) from exc
    except QuotaExceeded as exc:
        raise _quota_error(exc) from exc
    failed = [{"Reason": DOMAIN_NOT_VALID, "Targets": refused}] if refused else []
    return {"JobId": accepted.job_id, "FailedList": failed}


@register("CreatePrefetchTask")
async def create_prefetch_task(ctx: ActionContext) -> dict[str, Any]:
    """Reference §5.1: warm each target through the data plane with the given headers."""
    p = ctx.params
    reject_unknown(p, ("ZoneId", "Targets", "Mode", "EncodeUrl", "Headers", "PrefetchMediaSegments"))
    zone = resolve_zone(ctx, require(p, "ZoneId", str), Permission.CACHE_PURGE)
    targets = require(p, "Targets", list)
    if not targets or not all(isinstance(t, str) for t in targets):
        raise EoError("InvalidParameter.Target", "Targets must be a non-empty array of URLs.")
    mode = optional(p, "Mode", str, "default")
    if mode not in ("default", "edge"):
        raise EoError("InvalidParameterValue", f"The value `{mode}` of parameter `Mode` is not valid.")
    if optional(p, "PrefetchMediaSegments", str, "off") != "off":
        raise EoError("InvalidParameterValue", "PrefetchMediaSegments `on` is not supported by this server.")
    encode = optional(p, "EncodeUrl", bool, False)
    headers: dict[str, str] = {}
    for i, h in enumerate(optional(p, "Headers", list, [])):
        if not isinstance(h, dict):
            raise EoError("InvalidParameter", f"The parameter `Headers.{i}` must be an object.")
        headers[require(h, "Name", str, where=f"Headers.{i}.")] = require(
            h, "Value", str, where=f"Headers.{i}."
        )
    try:
        job = await ctx.control.prefetch.submit(
            zone,
            [_encode(t, encode) for t in targets],
            headers,
            principal=ctx.principal.ref,
            dialect="edgeone",
        )
    except ValueError as exc:
        raise EoError("InvalidParameter.Target", str(exc)) from exc
    except QuotaExceeded as exc:
        raise _quota_error(exc) from exc
    if len(job.refused) == len(targets):
        raise EoError("InvalidParameter.DomainNotFound", "No target belongs to a domain of this zone.")
    failed = [{"Reason": DOMAIN_NOT_VALID, "Targets": list(job.refused)}] if job.refused else []
    return {"JobId": job.job_id, "FailedList": failed}


def _time(value: str, name: str) -> datetime:
    """An ISO 8601 time as UTC (no offset: UTC); the database compares instants in UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    except ValueError as exc:
        raise _param_error(f"`{name}` is not an ISO 8601 time: {value}") from exc
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+01:00, before the calendar's first instant
        raise _param_error(f"`{name}` is outside the years 1 to 9999 in UTC: {value}") from exc


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _task(row: TaskRow) -> dict[str, Any]:
    out: dict[str, Any] = {
        "JobId": row.job_id,
        "Target": row.target,
        "Type": row.type,
        "Status": row.status,
        "CreateTime": _iso(row.created_at),
        "UpdateTime": _iso(row.updated_at),
    }
    if row.method is not None:
        out["Method"] = row.method
    if row.fail_type is not None:
        out["FailType"] = row.fail_type
        out["FailMessage"] = row.fail_message or ""
    return out


async def _describe(ctx: ActionContext, kind: str) -> dict[str, Any]:
    """Reference §4.1 / §5.2: time range or job id, paging, ANDed filters of ORed values."""
    p = ctx.params
    reject_unknown(p, ("ZoneId", "StartTime", "EndTime", "Offset", "Limit", "Filters"))
    zone = resolve_zone(ctx, require(p, "ZoneId", str), Permission.CACHE_PURGE)
    start_s = optional(p, "StartTime", str, "")
    end_s = optional(p, "EndTime", str, "")
    start = _time(start_s, "StartTime") if start_s else None
    end = _time(end_s, "EndTime") if end_s else None
    if start is not None and end is not None:
        if end < start:
            raise _param_error("EndTime is earlier than StartTime.")
        if end - start > MAX_WINDOW:
            raise _param_error(WINDOW_MESSAGE)
    offset = optional(p, "Offset", int, 0)
    limit = optional(p, "Limit", int, 20)
    if not 0 <= offset <= MAX_OFFSET:
        raise _param_error(f"Offset must be between 0 and {MAX_OFFSET}.")
    if not 1 <= limit <= MAX_LIMIT:
        raise _param_error(f"Limit must be between 1 and {MAX_LIMIT}.")
    filters: dict[str, list[str]] = {}
    fuzzy_target = False
    allowed = ("job-id", "target", "domains", "statuses") + (("type",) if kind == "purge" else ())
    for i, f in enumerate(optional(p, "Filters", list, [])):
        if not isinstance(f, dict):
            raise EoError("InvalidParameter", f"The parameter `Filters.{i}` must be an object.")
        reject_unknown(f, ("Name", "Values", "Fuzzy"), where=f"Filters.{i}.")
        name = require(f, "Name", str, where=f"Filters.{i}.")
        values = require(f, "Values", list, where=f"Filters.{i}.")
        if name not in allowed:
            raise _param_error(f"Unknown filter name `{name}`; supported: {', '.join(allowed)}.")
        if not values or len(values) > MAX_FILTER_VALUES or not all(isinstance(v, str) for v in values):
            raise _param_error(f"Filter `{name}` needs 1 to {MAX_FILTER_VALUES} string values.")
        if name in ("job-id", "target", "type") and len(values) > 1:
            raise _param_error(f"Filter `{name}` takes one value.")
        if optional(f, "Fuzzy", bool, False):
            if name != "target" or kind != "purge":
                raise _param_error(f"Filter `{name}` does not support Fuzzy.")
            fuzzy_target = True
        filters[name] = values
    statuses = tuple(filters.get("statuses", ()))
    known = STATUSES + (("invalid",) if kind == "prefetch" else ())
    if any(s not in known for s in statuses):
        raise _param_error(f"Unknown status; supported: {', '.join(known)}.")
    job_id = filters.get("job-id", [None])[0]
    if start is None and end is None and job_id is None:
        raise _param_error("Either a time range (StartTime, EndTime) or a job-id filter is required.")
    query = TaskQuery(
        zone_id=zone.config.id,
        kind=kind,
        start=start,
        end=end,
        job_id=job_id,
        target=filters.get("target", [None])[0],
        target_fuzzy=fuzzy_target,
        domains=tuple(d.lower() for d in filters.get("domains", ())),
        statuses=statuses,
        types=tuple(filters.get("type", ())),
        offset=offset,
        limit=limit,
    )
    total, rows = await asyncio.to_thread(ctx.control.tasks.query, query)
    return {"TotalCount": total, "Tasks": [_task(r) for r in rows]}


@register("DescribePurgeTasks")
async def describe_purge_tasks(ctx: ActionContext) -> dict[str, Any]:
    """Reference §4."""
    return await _describe(ctx, "purge")


@register("DescribePrefetchTasks")
async def describe_prefetch_tasks(ctx: ActionContext) -> dict[str, Any]:
    """Reference §5.2."""
    return await _describe(ctx, "prefetch")
