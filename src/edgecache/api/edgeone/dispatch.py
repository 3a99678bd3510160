"""The API 3.0 endpoint: ``POST /`` on the control listener, routed by ``X-TC-Action`` to the
registered action handlers.

Order of checks (reference ``edgeone-api.md`` §2.4; the first failure answers):
1. method POST, else ``UnsupportedProtocol`` (GET/form signing is not supported);
2. :func:`tc3.prepare`: Authorization syntax, ``X-TC-Timestamp``, ±300 s skew;
3. ``X-TC-Action`` and ``X-TC-Version`` present (``MissingParameter``);
4. SecretId shape (``AuthFailure.InvalidSecretId``), then known and not revoked
   (``AuthFailure.SecretIdNotFound``; a revoked secret is "disabled", reference §2.6);
5. :func:`tc3.verify`: ``X-TC-Token``, scope, signature;
6. ``Content-Type: application/json`` (``InvalidParameter``), action registered (``InvalidAction``),
   version ``2022-09-01`` (``NoSuchVersion``), ``X-TC-Language`` (``InvalidParameterValue``);
7. rate limit per (account, action), 20/s by default (``RequestLimitExceeded``);
8. the body is a JSON object (``InvalidParameter``), then the action's own validation.
Authentication comes before routing, so an unauthenticated caller learns nothing about actions.

Rules:
- Only the exact path ``/`` is EdgeOne's (the Cloudflare dialect also lives at the root, under
  ``/zones/...``), and every method there gets the EdgeOne envelope, errors included.
- :func:`answer` is the endpoint's one decision, from the method, query, fields and body to the
  envelope's bytes: the aiohttp route (:func:`handle`) and the control listener's own route for
  ``CreatePurgeTask`` (``api/control_listener.py``, decision 0027's addendum) both call it, so
  either gives the same answer.
- Action handlers raise :class:`EoError` (use :func:`require`, :func:`optional`,
  :func:`reject_unknown`, :func:`resolve_zone`); any other exception is logged and answered with
  ``InternalError`` and the request id, so the envelope never breaks.
- The rate limiter lives on the event loop (no lock); each worker process limits on its own, like
  ``control.ratelimit``. The scope "per account" is the reference's suggestion (§2.7): creating more
  secrets must not multiply an account's allowance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict, TypeVar

from aiohttp import web
from aiohttp.helpers import parse_content_type
from multidict import MultiMapping

from edgecache.api.context import CONTEXT_KEY, ControlContext
from edgecache.api.edgeone import tc3
from edgecache.api.edgeone.envelope import (
    EoError,
    failure_payload,
    invalid_parameter,
    invalid_parameter_value,
    missing_parameter,
    new_request_id,
    response,
    success_payload,
    unknown_parameter,
)
from edgecache.api.expectations import CONTINUE, routes
from edgecache.api.jsonbody import BadJson, load_json
from edgecache.config import TASK_TYPES
from edgecache.control.credentials import Permission, Principal
from edgecache.control.quotas import QuotaService
from edgecache.control.ratelimit import Rate, TokenBucket
from edgecache.control.secrets import SecretService, is_well_formed_secret_id
from edgecache.edge.zones import ZoneRuntime, ZoneTable

log = logging.getLogger(__name__)

API_VERSION = "2022-09-01"
JSON = "application/json"
"""The only body type the endpoint takes."""
LANGUAGES = ("zh-CN", "en-US")
DEFAULT_LANGUAGE = "zh-CN"
"""The SDK's default, used when ``X-TC-Language`` is absent."""
DEFAULT_RATE = Rate(per_second=20, burst=20)
"""Reference §1: "A maximum of 20 requests can be initiated per second for this API"."""

T = TypeVar("T")


class Quota(TypedDict):
    """One entry of ``DescribeContentQuota`` (reference §6)."""

    Type: str
    """``purge_url``, ``purge_prefix``, ``purge_host``, ``purge_all``, ``purge_cache_tag`` or
    ``prefetch_url``."""
    Batch: int
    Daily: int
    DailyAvailable: int


class QuotaSource(Protocol):
    """The quotas of one zone (our 32-hex id), purge and prefetch types together. Called in a worker
    thread, so it may query the database."""

    def __call__(self, zone_id: str) -> Sequence[Quota]: ...


def quota_source(quotas: QuotaService, zones: ZoneTable) -> QuotaSource:
    """The quotas of one zone as ``DescribeContentQuota`` reports them: every task type's state."""

    def quota_for(zone_id: str) -> list[Quota]:
        zone = zones.by_id[zone_id].config
        out: list[Quota] = []
        for task_type in TASK_TYPES:
            st = quotas.state(zone, task_type)
            out.append(Quota(Type=st.type, Batch=st.batch, Daily=st.daily, DailyAvailable=st.daily_available))
        return out

    return quota_for


class ActionLimiter:
    """Token buckets per (account, action)."""

    def __init__(self, rate: Rate = DEFAULT_RATE, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def allow(self, account_id: str, action: str) -> bool:
        """Count one request and say whether it is within the rate."""
        now = self._clock()
        bucket = self._buckets.get((account_id, action))
        if bucket is None:
            bucket = self._buckets[(account_id, action)] = TokenBucket(
                self.rate.per_second, self.rate.burst, now
            )
        return bucket.take(1, now) is None


@dataclass(frozen=True, slots=True)
class EdgeOneServices:
    """What the EdgeOne dialect needs beyond :class:`ControlContext`."""

    secrets: SecretService
    quota_for: QuotaSource
    limiter: ActionLimiter = field(default_factory=ActionLimiter)
    clock: Callable[[], float] = time.time
    """Unix time, for the signature's ±300 s window."""


EDGEONE_KEY = web.AppKey("edgeone", EdgeOneServices)


@dataclass(frozen=True, slots=True)
class ActionContext:
    """One authenticated, rate-limited call of an action."""

    action: str
    params: dict[str, Any]
    principal: Principal
    request_id: str
    language: str
    region: str | None
    app: web.Application

    @property
    def control(self) -> ControlContext:
        return self.app[CONTEXT_KEY]

    @property
    def edgeone(self) -> EdgeOneServices:
        return self.app[EDGEONE_KEY]


ActionHandler = Callable[[ActionContext], Awaitable[dict[str, Any]]]

ACTIONS: dict[str, ActionHandler] = {}
"""Action name → handler; the handler returns the ``Response`` fields without ``RequestId``."""


def register(name: str) -> Callable[[ActionHandler], ActionHandler]:
    """Decorator: make ``name`` (e.g. ``CreatePurgeTask``) an action answered by the function."""

    def add(handler: ActionHandler) -> ActionHandler:
        if name in ACTIONS:
            raise ValueError(f"the EdgeOne action {name} is registered twice")
        ACTIONS[name] = handler
        return handler

    return add


def add_routes(app: web.Application, services: EdgeOneServices) -> None:
    """Serve the EdgeOne dialect at ``/`` of ``app`` (which must also carry ``CONTEXT_KEY``)."""
    app[EDGEONE_KEY] = services
    routes(app).add_route("*", "/", handle)


def expectation_failed(request: web.Request) -> web.Response:
    """417 in the error envelope: the request's ``Expect`` cannot be met (decision 0030)."""
    return response(failure_payload(new_request_id(), invalid_parameter("Expect", CONTINUE)), status=417)


# Parameter validation -----------------------------------------------------------------------------

_TYPE_NAMES: dict[type, str] = {
    str: "String",
    int: "Integer",
    float: "Float",
    bool: "Boolean",
    list: "Array",
    dict: "Object",
}


def _typed(value: Any, name: str, kind: type[T]) -> T:
    # bool is an int in Python but not in JSON; a float parameter accepts JSON integers.
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # type: ignore[return-value]
    if not ok:
        raise invalid_parameter(name, _TYPE_NAMES.get(kind, kind.__name__))
    return value  # type: ignore[no-any-return]


def require(params: Mapping[str, Any], name: str, kind: type[T], *, where: str = "") -> T:
    """``params[name]`` as a ``kind`` (str, int, float, bool, list or dict); ``MissingParameter`` when
    absent or null, ``InvalidParameter`` when of another JSON type. ``where`` prefixes the name in
    messages for nested objects, e.g. ``where="Filters.0."``."""
    value = params.get(name)
    if value is None:
        raise missing_parameter(where + name)
    return _typed(value, where + name, kind)


def optional(params: Mapping[str, Any], name: str, kind: type[T], default: T, *, where: str = "") -> T:
    """Like :func:`require`, but ``default`` when absent or null."""
    value = params.get(name)
    return default if value is None else _typed(value, where + name, kind)


def reject_unknown(params: Mapping[str, Any], known: Collection[str], *, where: str = "") -> None:
    """``UnknownParameter`` for the first parameter not in ``known`` (the SDK never sends one, so
    it is a hand-written client's typo, better reported than ignored)."""
    for name in params:
        if name not in known:
            raise unknown_parameter(where + name)


def resolve_zone(ctx: ActionContext, zone_id: str, permission: Permission) -> ZoneRuntime:
    """The zone named by ``zone_id`` (our 32-hex id or an EdgeOne-style id) if the caller may use
    ``permission`` on it.

    A zone of another account is reported as not found, exactly like a zone that does not exist,
    so ids cannot be probed across accounts; a zone of the caller's account outside its scope or
    permissions is ``UnauthorizedOperation.NoPermission``.
    """
    zone = ctx.control.zones.lookup(zone_id)
    if zone is None or zone.config.account_id != ctx.principal.account_id:
        raise EoError("ResourceNotFound.ZoneNotFound", f"The zone `{zone_id}` does not exist.")
    if not ctx.principal.allows(permission, zone.config.id, zone.config.account_id):
        raise EoError(
            "UnauthorizedOperation.NoPermission",
            f"The SecretId {ctx.principal.id} lacks the permission {permission.value} on zone `{zone_id}`.",
        )
    return zone


# The pipeline -------------------------------------------------------------------------------------


async def handle(request: web.Request) -> web.Response:
    """Answer one request at ``/``, any method: always HTTP 200 and the API 3.0 envelope."""
    payload = await answer(
        request.app, request.method, request.rel_url.raw_query_string, request.headers, request.read
    )
    return response(payload)


async def answer(
    app: web.Application,
    method: str,
    query: str,
    headers: MultiMapping[str],
    read_body: Callable[[], Awaitable[bytes]],
) -> bytes:
    """The envelope's bytes for one request at ``/`` (answered with HTTP 200 whatever they say).

    The one decision for both listeners of the endpoint: :func:`handle` and the control listener's
    own route for ``CreatePurgeTask`` (``api/control_listener.py``, decision 0027's addendum).
    ``headers`` are the request's fields in order, repeats included (the signature covers them as
    received), ``query`` the raw query string. An accepted purge is durably written before this
    returns. Raises nothing but cancellation: an unexpected error is logged and answered
    ``InternalError`` with the request id."""
    request_id = new_request_id()
    try:
        fields = await _dispatch(app, method, query, headers, read_body, request_id)
        return success_payload(request_id, fields)
    except EoError as err:
        return failure_payload(request_id, err)
    except Exception:
        log.exception("EdgeOne request %s (%s) failed", request_id, headers.get("X-TC-Action"))
        return failure_payload(
            request_id,
            EoError(
                "InternalError", "An internal error has occurred; the server log has it under this RequestId."
            ),
        )


def content_type(headers: MultiMapping[str]) -> str:
    """The media type of the request's body, as aiohttp's ``Request.content_type`` reads it from the
    first ``Content-Type`` (lower-cased, parameters dropped; ``application/octet-stream`` without
    one)."""
    raw = headers.get("Content-Type")
    if raw is None:
        return "application/octet-stream"
    if raw == JSON:
        # The SDK's value, whose parse is itself: no email parser on the purge's path.
        return JSON
    return parse_content_type(raw)[0]


async def _dispatch(
    app: web.Application,
    method: str,
    query: str,
    headers: MultiMapping[str],
    read_body: Callable[[], Awaitable[bytes]],
    request_id: str,
) -> dict[str, Any]:
    if method != "POST":
        raise EoError(
            "UnsupportedProtocol",
            f"The HTTP method {method} is not supported: send POST with an application/json body.",
        )
    services = app[EDGEONE_KEY]
    try:
        body = await read_body()
    except web.HTTPRequestEntityTooLarge:
        raise EoError("InvalidParameter", "The request body is too large.") from None
    except web.RequestPayloadError:
        # aiohttp decodes a Content-Encoding as it reads the body: bytes that are not what the field
        # names are the caller's error, not an InternalError.
        raise EoError(
            "InvalidParameter", "The request body cannot be decoded as its encoding says."
        ) from None
    signed = tc3.prepare(method=method, query=query, headers=headers.items(), body=body, now=services.clock())
    action = headers.get("X-TC-Action", "").strip()
    if not action:
        raise missing_parameter("Action")
    version = headers.get("X-TC-Version", "").strip()
    if not version:
        raise missing_parameter("Version")
    secret_id = signed.authorization.secret_id
    if not is_well_formed_secret_id(secret_id):
        raise tc3.invalid_secret_id()
    found = await asyncio.to_thread(services.secrets.lookup, secret_id)
    if found is None:
        raise tc3.secret_id_not_found()
    secret_key, principal = found
    tc3.verify(signed, secret_key)

    if content_type(headers) != JSON:
        raise invalid_parameter("Content-Type", JSON)
    handler = ACTIONS.get(action)
    if handler is None:
        raise EoError("InvalidAction", f"The requested action `{action}` is invalid or not found.")
    if version != API_VERSION:
        raise EoError(
            "NoSuchVersion", f"The requested version `{version}` does not exist; this API is {API_VERSION}."
        )
    language = headers.get("X-TC-Language", DEFAULT_LANGUAGE).strip()
    if language not in LANGUAGES:
        raise invalid_parameter_value("Language", f"must be one of {', '.join(LANGUAGES)}")
    if not services.limiter.allow(principal.account_id, action):
        raise EoError(
            "RequestLimitExceeded",
            f"Your current request times exceed the frequency limit `{services.limiter.rate.per_second:g}` "
            "for a second. Please reduce the frequency of calls.",
        )
    try:
        # An empty body is "no parameters"; the SDK sends "{}" but hand-written clients may not.
        params = load_json(body)
    except BadJson as exc:
        raise EoError("InvalidParameter", f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(params, dict):
        raise EoError("InvalidParameter", "The request body must be a JSON object.")
    ctx = ActionContext(
        action=action,
        params=params,
        principal=principal,
        request_id=request_id,
        language=language,
        region=headers.get("X-TC-Region"),
        app=app,
    )
    return await handler(ctx)


# Actions ------------------------------------------------------------------------------------------


@register("DescribeContentQuota")
async def describe_content_quota(ctx: ActionContext) -> dict[str, Any]:
    """Reference §6: the zone's per-type ``Batch``/``Daily``/``DailyAvailable``, split into
    ``PurgeQuota`` and ``PrefetchQuota`` (empty lists, not null, when there are none)."""
    reject_unknown(ctx.params, ("ZoneId",))
    zone = resolve_zone(ctx, require(ctx.params, "ZoneId", str), Permission.CACHE_PURGE)
    quotas = await asyncio.to_thread(ctx.edgeone.quota_for, zone.config.id)
    purge: list[dict[str, Any]] = []
    prefetch: list[dict[str, Any]] = []
    for q in quotas:
        entry = {
            "Type": q["Type"],
            "Batch": q["Batch"],
            "Daily": q["Daily"],
            "DailyAvailable": q["DailyAvailable"],
        }
        if q["Type"].startswith("purge_"):
            purge.append(entry)
        elif q["Type"].startswith("prefetch_"):
            prefetch.append(entry)
        else:
            raise ValueError(f"quota_for returned an unknown quota type {q['Type']!r}")
    return {"PurgeQuota": purge, "PrefetchQuota": prefetch}
