"""The EdgeOne API 3.0 transport: TC3-HMAC-SHA256 (unit and property tests), then the dispatcher on a
real aiohttp server driven by the official ``tencentcloud-sdk-python-teo`` package, unmodified.

The server is a minimal control app (SQLite in tmp_path, the Cloudflare routes mounted beside ours to
check that they coexist), not the full node.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.common.sign import Sign
from tencentcloud.teo.v20220106 import teo_client as teo_client_v20220106
from tencentcloud.teo.v20220901 import models, teo_client

from edgecache.api.cloudflare.routes import add_routes as add_cloudflare_routes
from edgecache.api.cloudflare.routes import envelope_errors
from edgecache.api.context import CONTEXT_KEY, ControlContext
from edgecache.api.edgeone import tc3
from edgecache.api.edgeone.dispatch import (
    ACTIONS,
    ActionContext,
    ActionLimiter,
    EdgeOneServices,
    Quota,
    add_routes,
    optional,
    reject_unknown,
    require,
)
from edgecache.api.edgeone.envelope import EoError
from edgecache.config import Zone
from edgecache.control.credentials import CredentialService, Permission
from edgecache.control.prefetch import PrefetchService
from edgecache.control.purges import PurgeService
from edgecache.control.queues import QueueService
from edgecache.control.quotas import QuotaService
from edgecache.control.ratelimit import PLAN_LIMITS, Rate, RateLimiter
from edgecache.control.secrets import MasterKey, SecretService
from edgecache.control.subscriptions import SubscriptionService
from edgecache.db.engine import open_database, sqlite_url
from edgecache.db.ledger import LedgerStore
from edgecache.db.tasks import TaskStore
from edgecache.edge.zones import ZoneTable

ACCOUNT = "a" * 32
OTHER_ACCOUNT = "b" * 32
ZONE = "1" * 32
SCOPED_ZONE = "2" * 32
OTHER_ZONE = "3" * 32
EO_ZONE = "zone-2o3h21ed8bpu"
NOW = 1795354593  # 2026-11-22T10:56:33Z

QUOTAS: list[Quota] = [
    {"Type": "purge_url", "Batch": 2000, "Daily": 10000, "DailyAvailable": 9990},
    {"Type": "purge_prefix", "Batch": 1000, "Daily": 10000, "DailyAvailable": 10000},
    {"Type": "purge_host", "Batch": 1000, "Daily": 10000, "DailyAvailable": 10000},
    {"Type": "purge_all", "Batch": 1, "Daily": 100, "DailyAvailable": 99},
    {"Type": "purge_cache_tag", "Batch": 100, "Daily": 10000, "DailyAvailable": 10000},
    {"Type": "prefetch_url", "Batch": 5000, "Daily": 10000, "DailyAvailable": 8000},
]

# The reference's test vector (§2.3), produced by the SDK's own signing path.
VECTOR_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
VECTOR_KEY = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"
VECTOR_TS = 1551113065
VECTOR_BODY = (
    b'{"ZoneId": "zone-ajj243dwrew", "Type": "purge_url", "Targets": ["http://www.example.com/a.txt"]}'
)
VECTOR_SIGNATURE = "6a0afb0449b1e85ada7a7e2a6235010d54404cafadeaab2bd4d03b74a7ea3b7b"


# A signer written from the reference's steps (§2.3); the key derivation and the final HMAC are the
# SDK's own ``Sign.sign_tc3``, so only the canonical request is re-implemented here.


def sign(
    secret_id: str,
    secret_key: str,
    *,
    body: bytes,
    timestamp: int,
    headers: dict[str, str],
    signed: Sequence[str] = ("content-type", "host"),
    date: str | None = None,
    service: str = "teo",
) -> str:
    """The Authorization header value for a POST / carrying ``headers`` (lower-case names)."""
    date = date or tc3.utc_date(timestamp)
    canonical = "\n".join(
        [
            "POST",
            "/",
            "",
            "".join(f"{n}:{headers[n]}\n" for n in signed),
            ";".join(signed),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{date}/{service}/tc3_request"
    sts = "\n".join(
        ["TC3-HMAC-SHA256", str(timestamp), scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    sig = Sign.sign_tc3(secret_key, date, service, sts)
    return (
        f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders={';'.join(signed)}, Signature={sig}"
    )


def signed_headers(
    secret_id: str,
    secret_key: str,
    body: bytes,
    timestamp: int,
    *,
    action: str = "DescribeContentQuota",
    host: str = "teo.tencentcloudapi.com",
    signed: Sequence[str] = ("content-type", "host"),
    **kw: Any,
) -> dict[str, str]:
    headers = {
        "content-type": "application/json",
        "host": host,
        "x-tc-action": action,
        "x-tc-version": "2022-09-01",
        "x-tc-timestamp": str(timestamp),
    }
    headers["authorization"] = sign(
        secret_id, secret_key, body=body, timestamp=timestamp, headers=headers, signed=signed, **kw
    )
    return headers


def verify(headers: dict[str, str], body: bytes, key: str, now: float) -> None:
    signed = tc3.prepare(method="POST", query="", headers=headers.items(), body=body, now=now)
    tc3.verify(signed, key)


def raised(fn: Any, *args: Any, **kw: Any) -> EoError:
    with pytest.raises(EoError) as info:
        fn(*args, **kw)
    return info.value


def code_of(fn: Any, *args: Any, **kw: Any) -> str:
    return raised(fn, *args, **kw).code


# tc3 ----------------------------------------------------------------------------------------------


def test_reference_vector_verifies() -> None:
    headers = {
        "Host": "teo.tencentcloudapi.com",
        "Content-Type": "application/json",
        "X-TC-Action": "CreatePurgeTask",
        "X-TC-Timestamp": str(VECTOR_TS),
        "Authorization": f"TC3-HMAC-SHA256 Credential={VECTOR_ID}/2019-02-25/teo/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={VECTOR_SIGNATURE}",
    }
    assert hashlib.sha256(VECTOR_BODY).hexdigest() == (
        "8ca53a49092f09d3ec972a8d84bb670f758dc0bf9c0d0534b9592623e83510aa"
    )
    signed = tc3.prepare(
        method="POST", query="", headers=headers.items(), body=VECTOR_BODY, now=VECTOR_TS + 5
    )
    assert signed.authorization.secret_id == VECTOR_ID
    assert signed.strings_to_sign[0].splitlines()[-1] == (
        "495a10ff286676f23bae6c315c324ba40f97178b7bd409c9385904154af2f462"
    )
    tc3.verify(signed, VECTOR_KEY)
    assert code_of(tc3.verify, signed, VECTOR_KEY + "x") == "AuthFailure.SignatureFailure"
    assert sign(
        VECTOR_ID,
        VECTOR_KEY,
        body=VECTOR_BODY,
        timestamp=VECTOR_TS,
        headers={"content-type": "application/json", "host": "teo.tencentcloudapi.com"},
    ).endswith(VECTOR_SIGNATURE)  # the test's signer agrees with the vector too


GOOD = f"TC3-HMAC-SHA256 Credential={VECTOR_ID}/2019-02-25/teo/tc3_request, SignedHeaders=content-type;host, "


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Bearer abc",
        "HMAC-SHA256 Credential=x",
        GOOD.replace("TC3-HMAC-SHA256", "TC3-HMAC-SHA1") + "Signature=" + "0" * 64,
        GOOD + "Signature=" + "0" * 63,  # too short
        GOOD + "Signature=" + "A" * 64,  # upper-case hex
        GOOD,  # no Signature
        GOOD + "Signature=" + "0" * 64 + ", Signature=" + "0" * 64,  # repeated field
        GOOD + "Signature=" + "0" * 64 + ", Extra=1",
        GOOD.replace("/tc3_request", "/tc4_request") + "Signature=" + "0" * 64,
        GOOD.replace("/2019-02-25", "/20190225") + "Signature=" + "0" * 64,
        GOOD.replace("/teo/", "/") + "Signature=" + "0" * 64,
        GOOD.replace(f"{VECTOR_ID}/", "/") + "Signature=" + "0" * 64,
        GOOD.replace("content-type;host", "host") + "Signature=" + "0" * 64,
        GOOD.replace("content-type;host", "content-type") + "Signature=" + "0" * 64,
        GOOD.replace("content-type;host", "Content-Type;host") + "Signature=" + "0" * 64,
        GOOD.replace("content-type;host", "content-type;host;host") + "Signature=" + "0" * 64,
    ],
)
def test_malformed_authorization_is_invalid_authorization(value: str) -> None:
    assert code_of(tc3.parse_authorization, value) == "AuthFailure.InvalidAuthorization"


def test_authorization_fields_in_any_order_and_spacing() -> None:
    a = tc3.parse_authorization(
        f"TC3-HMAC-SHA256 Signature={'0' * 64},SignedHeaders=content-type;host;x-tc-action,"
        f"Credential={VECTOR_ID}/2019-02-25/teo/tc3_request"
    )
    assert (a.secret_id, a.date, a.service) == (VECTOR_ID, "2019-02-25", "teo")
    assert a.signed_headers == ("content-type", "host", "x-tc-action")


def test_header_checks_in_order() -> None:
    body = b"{}"
    h = signed_headers(VECTOR_ID, VECTOR_KEY, body, NOW)
    del h["authorization"]
    assert code_of(verify, h, body, VECTOR_KEY, NOW) == "AuthFailure.InvalidAuthorization"
    h = signed_headers(VECTOR_ID, VECTOR_KEY, body, NOW)
    del h["x-tc-timestamp"]
    assert code_of(verify, h, body, VECTOR_KEY, NOW) == "MissingParameter"
    h = signed_headers(VECTOR_ID, VECTOR_KEY, body, NOW)
    h["x-tc-timestamp"] = "1795354593.5"
    assert code_of(verify, h, body, VECTOR_KEY, NOW) == "InvalidParameter"
    h = signed_headers(VECTOR_ID, VECTOR_KEY, body, NOW)
    verify(h, body, VECTOR_KEY, NOW + 300)
    verify(h, body, VECTOR_KEY, NOW - 300)
    assert code_of(verify, h, body, VECTOR_KEY, NOW + 301) == "AuthFailure.SignatureExpire"
    assert code_of(verify, h, body, VECTOR_KEY, NOW - 301) == "AuthFailure.SignatureExpire"
    h["x-tc-token"] = "sts-token"
    assert code_of(verify, h, body, VECTOR_KEY, NOW) == "AuthFailure.TokenFailure"


def test_scope_date_and_service_must_match() -> None:
    body = b"{}"
    h = signed_headers(VECTOR_ID, VECTOR_KEY, body, NOW, date="2026-11-23")  # local time east of UTC
    assert code_of(verify, h, body, VECTOR_KEY, NOW) == "AuthFailure.SignatureFailure"
    h = signed_headers(VECTOR_ID, VECTOR_KEY, body, NOW, service="cvm")
    assert code_of(verify, h, body, VECTOR_KEY, NOW) == "AuthFailure.SignatureFailure"


def test_signed_headers_must_be_present_once() -> None:
    body = b"{}"
    h = signed_headers(VECTOR_ID, VECTOR_KEY, body, NOW, signed=("content-type", "host", "x-tc-action"))
    del h["x-tc-action"]
    assert code_of(verify, h, body, VECTOR_KEY, NOW) == "AuthFailure.InvalidAuthorization"
    h = signed_headers(VECTOR_ID, VECTOR_KEY, body, NOW)
    pairs = [*h.items(), ("Host", "evil.example")]
    err = raised(tc3.prepare, method="POST", query="", headers=pairs, body=body, now=NOW)
    assert err.code == "AuthFailure.InvalidAuthorization"


def test_header_values_as_sent_or_lower_cased() -> None:
    body = b"{}"
    raw = signed_headers(VECTOR_ID, VECTOR_KEY, body, NOW, host="EdgeCache.Example:8080")
    verify(raw, body, VECTOR_KEY, NOW)  # the SDK signs the value as sent
    lowered = dict(raw, host="edgecache.example:8080")
    lowered["authorization"] = sign(VECTOR_ID, VECTOR_KEY, body=body, timestamp=NOW, headers=lowered)
    lowered["host"] = "EdgeCache.Example:8080"
    verify(lowered, body, VECTOR_KEY, NOW)  # the signature doc lower-cases values


def test_unsigned_payload_option() -> None:
    h = signed_headers(VECTOR_ID, VECTOR_KEY, b"UNSIGNED-PAYLOAD", NOW)
    h["x-tc-content-sha256"] = "UNSIGNED-PAYLOAD"
    verify(h, b'{"ZoneId": "anything"}', VECTOR_KEY, NOW)


@dataclass(frozen=True)
class Signed:
    key: str
    body: bytes
    timestamp: int


def _signed_requests() -> st.SearchStrategy[Signed]:
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=10,
    )
    return st.builds(
        Signed,
        key=st.text(
            st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"), min_size=1
        ),
        # The SDK's json.dumps(params) with its default separators and ASCII escapes.
        body=st.dictionaries(st.text(max_size=10), json_values, max_size=5).map(
            lambda d: json.dumps(d).encode()
        ),
        timestamp=st.integers(1_500_000_000, 4_000_000_000),
    )


@settings(max_examples=200, deadline=None)
@given(req=_signed_requests(), data=st.data())
def test_property_signed_requests_verify_and_any_byte_change_fails(req: Signed, data: st.DataObject) -> None:
    h = signed_headers(VECTOR_ID, req.key, req.body, req.timestamp)
    verify(h, req.body, req.key, req.timestamp)

    i = data.draw(st.integers(0, len(req.body) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != req.body[i]))
    body = req.body[:i] + bytes([byte]) + req.body[i + 1 :]
    assert code_of(verify, h, body, req.key, req.timestamp) == "AuthFailure.SignatureFailure"

    ts = h["x-tc-timestamp"]
    j = data.draw(st.integers(0, len(ts) - 1))
    ch = data.draw(st.characters(codec="ascii", exclude_characters="\r\n").filter(lambda c: c != ts[j]))
    changed = dict(h, **{"x-tc-timestamp": ts[:j] + ch + ts[j + 1 :]})
    assert code_of(verify, changed, req.body, req.key, req.timestamp) in {
        "AuthFailure.SignatureFailure",
        "AuthFailure.SignatureExpire",
        "InvalidParameter",
    }

    auth = h["authorization"]
    k = data.draw(st.integers(len(auth) - 64, len(auth) - 1))
    ch = data.draw(st.characters(codec="ascii", exclude_characters="\r\n,").filter(lambda c: c != auth[k]))
    changed = dict(h, authorization=auth[:k] + ch + auth[k + 1 :])
    assert code_of(verify, changed, req.body, req.key, req.timestamp) in {
        "AuthFailure.SignatureFailure",
        "AuthFailure.InvalidAuthorization",
    }

    # X-TC-Action is covered only when the client signs it: the SDK does not (content-type;host).
    with_action = signed_headers(
        VECTOR_ID, req.key, req.body, req.timestamp, signed=("content-type", "host", "x-tc-action")
    )
    verify(with_action, req.body, req.key, req.timestamp)
    a = data.draw(st.integers(0, len("DescribeContentQuota") - 1))
    action = with_action["x-tc-action"]
    changed = dict(
        with_action, **{"x-tc-action": action[:a] + ("X" if action[a] != "X" else "Y") + action[a + 1 :]}
    )
    assert code_of(verify, changed, req.body, req.key, req.timestamp) == "AuthFailure.SignatureFailure"
    verify(dict(h, **{"x-tc-action": "CreatePurgeTask"}), req.body, req.key, req.timestamp)


# Parameter helpers --------------------------------------------------------------------------------


def test_require_optional_and_unknown() -> None:
    params = {"ZoneId": "z", "Limit": 5, "On": True, "Ratio": 1, "Targets": ["a"], "Nil": None}
    assert require(params, "ZoneId", str) == "z"
    assert require(params, "Targets", list) == ["a"]
    assert require(params, "Ratio", float) == 1.0
    assert optional(params, "Offset", int, 0) == 0
    assert optional(params, "Nil", int, 7) == 7
    assert optional(params, "Limit", int, 0) == 5
    err = raised(require, params, "Type", str)
    assert (err.code, err.message) == (
        "MissingParameter",
        "The request is missing a required parameter `Type`.",
    )
    assert raised(require, params, "Nil", str).code == "MissingParameter"
    err = raised(require, params, "On", int)  # a JSON boolean is not an integer
    assert err.code == "InvalidParameter" and "`On`" in err.message
    err = raised(require, {"Name": 1}, "Name", str, where="Filters.0.")
    assert err.code == "InvalidParameter" and "`Filters.0.Name`" in err.message
    reject_unknown(params, params.keys())
    err = raised(reject_unknown, {"ZoneId": "z", "Zoneid": "z"}, ("ZoneId",))
    assert (err.code, err.message) == ("UnknownParameter", "The parameter `Zoneid` is not recognized.")


# The dispatcher over HTTP, driven by the SDK --------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Server:
    """A control app on 127.0.0.1:<free port>, on its own event loop in a thread."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        # A refused oversized body leaves a connection open; do not wait for it at shutdown.
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> int:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return int(self.runner.addresses[0][1])

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Env:
    server: Server
    secrets: SecretService
    clock: Clock
    quota_calls: list[str]
    full: tuple[str, str]
    """cache_purge on every zone of ACCOUNT."""
    scoped: tuple[str, str]
    """cache_purge on SCOPED_ZONE only."""
    reader: tuple[str, str]
    """zone_settings_read only."""

    def client(self, ident: tuple[str, str] | None = None, *, token: str | None = None) -> Any:
        sid, key = ident or self.full
        profile = ClientProfile(
            httpProfile=HttpProfile(protocol="http", endpoint=f"127.0.0.1:{self.server.port}", reqTimeout=10),
            language="en-US",
        )
        return teo_client.TeoClient(credential.Credential(sid, key, token), "", profile)

    def raw(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type", ""), json.loads(resp.read())
        finally:
            conn.close()


def _zone(zone_id: str, account_id: str, host: str) -> Zone:
    return Zone(id=zone_id, name=host, account_id=account_id, hostnames=(host,), origin="http://127.0.0.1:9")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    # The SDK and requests honour proxy variables; the reference §9.2 needs both NO_PROXY forms.
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("EDGECACHE_MASTER_KEY", raising=False)
    engine = open_database(sqlite_url(tmp_path))
    credentials = CredentialService(engine)
    credentials.ensure_account(ACCOUNT, "Acme")
    credentials.ensure_account(OTHER_ACCOUNT, "Other")
    zones = (
        _zone(ZONE, ACCOUNT, "one.example").model_copy(update={"edgeone_id": EO_ZONE}),
        _zone(SCOPED_ZONE, ACCOUNT, "two.example"),
        _zone(OTHER_ZONE, OTHER_ACCOUNT, "other.example"),
    )
    for z in zones:
        credentials.ensure_zone(z.id, z.account_id, z.name)
    secrets = SecretService(engine, MasterKey(tmp_path))
    full = secrets.create(ACCOUNT, "deploy", [Permission.CACHE_PURGE])
    scoped = secrets.create(ACCOUNT, "two only", [Permission.CACHE_PURGE], [SCOPED_ZONE])
    reader = secrets.create(ACCOUNT, "reader", [Permission.ZONE_SETTINGS_READ])
    limits = PLAN_LIMITS["enterprise"]
    purges = PurgeService(
        ledger_store=LedgerStore(engine),
        task_store=TaskStore(engine),
        quotas=QuotaService(TaskStore(engine).count_since),
        limiter=RateLimiter(lambda _: limits),
        limits_for=lambda _: limits,
        apply=lambda _: None,
    )
    # The SDK signs with time.time(), so the server's clock starts at the real time.
    clock = Clock(time.time())
    calls: list[str] = []

    def quota_for(zone_id: str) -> list[Quota]:
        calls.append(zone_id)
        if zone_id == SCOPED_ZONE:
            raise RuntimeError("quota backend down")
        return QUOTAS

    app = web.Application(middlewares=[envelope_errors])
    queues = QueueService(engine)
    tasks = TaskStore(engine)
    quotas = QuotaService(tasks.count_since)

    async def no_warm(host: str, path: str, headers: Mapping[str, str]) -> int:
        raise AssertionError("this transport test does not prefetch")

    app[CONTEXT_KEY] = ControlContext(
        zones=ZoneTable(zones),
        credentials=credentials,
        purges=purges,
        tasks=tasks,
        quotas=quotas,
        prefetch=PrefetchService(task_store=tasks, quotas=quotas, warm=no_warm, concurrency=1, timeout=1.0),
        queues=queues,
        subscriptions=SubscriptionService(engine, queues, tasks, ZoneTable(zones), 60.0),
    )
    add_cloudflare_routes(app)
    add_routes(
        app,
        EdgeOneServices(
            secrets=secrets,
            quota_for=quota_for,
            limiter=ActionLimiter(Rate(20, 20), clock=clock),  # frozen: no refill during a test
            clock=clock,
        ),
    )
    server = Server(app)
    monkeypatch.setenv("NO_PROXY", f"127.0.0.1,127.0.0.1:{server.port}")
    try:
        yield Env(server, secrets, clock, calls, full, scoped, reader)
    finally:
        server.close()
        purges.close()
        queues.close()
        engine.dispose()


def quota_request(zone_id: str | None = EO_ZONE) -> models.DescribeContentQuotaRequest:
    req = models.DescribeContentQuotaRequest()
    if zone_id is not None:
        req.ZoneId = zone_id
    return req


def sdk_error(fn: Any, *args: Any) -> TencentCloudSDKException:
    with pytest.raises(TencentCloudSDKException) as info:
        fn(*args)
    err = info.value
    uuid.UUID(err.requestId)  # every answer carries the server's RequestId
    return err


def test_describe_content_quota_through_the_sdk(env: Env) -> None:
    resp = env.client().DescribeContentQuota(quota_request())
    uuid.UUID(resp.RequestId)
    assert [(q.Type, q.Batch, q.Daily, q.DailyAvailable) for q in resp.PurgeQuota] == [
        (q["Type"], q["Batch"], q["Daily"], q["DailyAvailable"]) for q in QUOTAS[:5]
    ]
    assert [(q.Type, q.DailyAvailable) for q in resp.PrefetchQuota] == [("prefetch_url", 8000)]
    # Our own 32-hex id works too; both name the same zone.
    env.client().DescribeContentQuota(quota_request(ZONE))
    assert env.quota_calls == [ZONE, ZONE]


def test_zone_errors(env: Env) -> None:
    for zone_id in ("zone-unknown00000", OTHER_ZONE, "*"):
        err = sdk_error(env.client().DescribeContentQuota, quota_request(zone_id))
        assert err.code == "ResourceNotFound.ZoneNotFound", zone_id
    err = sdk_error(env.client(env.scoped).DescribeContentQuota, quota_request(EO_ZONE))
    assert err.code == "UnauthorizedOperation.NoPermission"
    err = sdk_error(env.client(env.reader).DescribeContentQuota, quota_request(EO_ZONE))
    assert err.code == "UnauthorizedOperation.NoPermission"
    err = sdk_error(env.client().DescribeContentQuota, quota_request(None))
    assert (err.code, err.message) == (
        "MissingParameter",
        "The request is missing a required parameter `ZoneId`.",
    )
    assert env.quota_calls == []


def test_internal_error_keeps_the_envelope(env: Env) -> None:
    err = sdk_error(env.client(env.scoped).DescribeContentQuota, quota_request(SCOPED_ZONE))
    assert err.code == "InternalError"


def test_wrong_key_is_signature_failure(env: Env) -> None:
    secret = env.full[1]
    wrong = secret[:-1] + ("y" if secret.endswith("x") else "x")
    err = sdk_error(env.client((env.full[0], wrong)).DescribeContentQuota, quota_request())
    assert err.code == "AuthFailure.SignatureFailure"
    assert err.message.startswith("The provided credentials could not be validated.")


def test_unknown_malformed_and_revoked_secret_ids(env: Env) -> None:
    unknown = ("AKID" + "x" * 32, env.full[1])
    assert sdk_error(env.client(unknown).DescribeContentQuota, quota_request()).code == (
        "AuthFailure.SecretIdNotFound"
    )
    malformed = ("AKIDtest", env.full[1])
    assert sdk_error(env.client(malformed).DescribeContentQuota, quota_request()).code == (
        "AuthFailure.InvalidSecretId"
    )
    env.client().DescribeContentQuota(quota_request())
    assert env.secrets.revoke(env.full[0])
    assert (
        sdk_error(env.client().DescribeContentQuota, quota_request()).code == "AuthFailure.SecretIdNotFound"
    )


def test_expired_timestamp_via_server_clock(env: Env) -> None:
    # The SDK stamps requests with the real time; the server's clock is moved instead.
    env.clock.now = time.time() + 301
    assert sdk_error(env.client().DescribeContentQuota, quota_request()).code == "AuthFailure.SignatureExpire"
    env.clock.now = time.time() - 301
    assert sdk_error(env.client().DescribeContentQuota, quota_request()).code == "AuthFailure.SignatureExpire"
    env.clock.now = time.time() + 200
    env.client().DescribeContentQuota(quota_request())


def test_temporary_credentials_are_token_failure(env: Env) -> None:
    err = sdk_error(env.client(token="sts-session-token").DescribeContentQuota, quota_request())
    assert err.code == "AuthFailure.TokenFailure"


def test_wrong_version_and_unknown_action(env: Env) -> None:
    sid, key = env.full
    profile = ClientProfile(
        httpProfile=HttpProfile(protocol="http", endpoint=f"127.0.0.1:{env.server.port}", reqTimeout=10)
    )
    old = teo_client_v20220106.TeoClient(credential.Credential(sid, key), "", profile)
    err = sdk_error(old.call_json, "DescribeContentQuota", {"ZoneId": EO_ZONE})
    assert err.code == "NoSuchVersion"
    err = sdk_error(env.client().call_json, "DescribeNothing", {})
    assert err.code == "InvalidAction"
    err = sdk_error(env.client().call_json, "DescribeContentQuota", {"ZoneId": EO_ZONE, "Zone": "x"})
    assert err.code == "UnknownParameter"
    err = sdk_error(env.client().call_json, "DescribeContentQuota", {"ZoneId": 5})
    assert err.code == "InvalidParameter"


async def _echo(ctx: ActionContext) -> dict[str, Any]:
    return {
        "Action": ctx.action,
        "Params": ctx.params,
        "Principal": ctx.principal.ref,
        "RequestIdSeen": ctx.request_id,
        "Language": ctx.language,
        "Region": ctx.region,
        "Zones": sorted(ctx.control.zones.by_id),
    }


@pytest.fixture(autouse=True)
def _echo_action(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ACTIONS, "EdgecacheTestEcho", _echo)


def test_action_context(env: Env) -> None:
    sid, key = env.full
    profile = ClientProfile(
        httpProfile=HttpProfile(protocol="http", endpoint=f"127.0.0.1:{env.server.port}", reqTimeout=10)
    )
    client = teo_client.TeoClient(credential.Credential(sid, key), "ap-guangzhou", profile)
    answer = client.call_json("EdgecacheTestEcho", {"A": [1, "\u00e9"]})["Response"]
    assert answer == {
        "Action": "EdgecacheTestEcho",
        "Params": {"A": [1, "\u00e9"]},
        "Principal": f"secret:{sid}",
        "RequestIdSeen": answer["RequestId"],
        "Language": "zh-CN",
        "Region": "ap-guangzhou",
        "Zones": sorted([ZONE, SCOPED_ZONE, OTHER_ZONE]),
        "RequestId": answer["RequestId"],
    }


def test_rate_limit_per_account_and_action(env: Env) -> None:
    client = env.client()
    for _ in range(20):
        client.DescribeContentQuota(quota_request())
    err = sdk_error(client.DescribeContentQuota, quota_request())
    assert err.code == "RequestLimitExceeded"
    assert "frequency limit `20`" in err.message
    # Another secret of the same account shares the allowance; the action is what counts.
    assert (
        sdk_error(env.client(env.scoped).DescribeContentQuota, quota_request()).code == "RequestLimitExceeded"
    )
    # Each action has its own bucket.
    assert client.call_json("EdgecacheTestEcho", {})["Response"]["Action"] == "EdgecacheTestEcho"
    env.clock.now += 1  # a second later the bucket has 20 tokens again
    client.DescribeContentQuota(quota_request())


def _raw_signed(env: Env, body: bytes, **kw: Any) -> tuple[int, str, Any]:
    sid, key = env.full
    host = f"127.0.0.1:{env.server.port}"
    headers = signed_headers(sid, key, body, int(env.clock.now), host=host, **kw)
    return env.raw("POST", "/", body, {k.title(): v for k, v in headers.items()})


def test_invalid_json_and_non_object_bodies(env: Env) -> None:
    for body, fragment in ((b'{"ZoneId": ', "not valid JSON"), (b"[1, 2]", "JSON object")):
        status, ctype, answer = _raw_signed(env, body)
        assert (status, ctype) == (200, "application/json")
        assert answer["Response"]["Error"]["Code"] == "InvalidParameter"
        assert fragment in answer["Response"]["Error"]["Message"]
        uuid.UUID(answer["Response"]["RequestId"])


def test_language_header(env: Env) -> None:
    sid, key = env.full
    body = json.dumps({"ZoneId": EO_ZONE}).encode()
    headers = signed_headers(sid, key, body, int(env.clock.now), host=f"127.0.0.1:{env.server.port}")
    headers["x-tc-language"] = "fr-FR"
    _, _, answer = env.raw("POST", "/", body, headers)
    assert answer["Response"]["Error"]["Code"] == "InvalidParameterValue"
    headers["x-tc-language"] = "zh-CN"
    _, _, answer = env.raw("POST", "/", body, headers)
    assert "PurgeQuota" in answer["Response"]


def test_other_methods_and_paths(env: Env) -> None:
    for method in ("GET", "PUT", "DELETE"):
        status, ctype, answer = env.raw(method, "/", b"", {})
        assert (status, ctype) == (200, "application/json")
        assert answer["Response"]["Error"]["Code"] == "UnsupportedProtocol"
    status, _, answer = env.raw("POST", "/", b"{}", {"Content-Type": "application/json"})
    assert (status, answer["Response"]["Error"]["Code"]) == (200, "AuthFailure.InvalidAuthorization")
    # Signature v1 (form body, no Authorization header): only TC3 is served.
    status, _, answer = env.raw(
        "POST", "/", b"Action=DescribeContentQuota", {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert answer["Response"]["Error"]["Code"] == "AuthFailure.InvalidAuthorization"
    # The Cloudflare dialect keeps its paths at the root, with its own envelope.
    status, _, answer = env.raw("POST", f"/zones/{ZONE}/purge_cache", b"{}", {})
    assert status == 400 and answer["success"] is False
    status, _, answer = env.raw("GET", "/openapi.json", b"", {})
    assert status == 200 and "paths" in answer


def test_missing_action_header(env: Env) -> None:
    sid, key = env.full
    headers = signed_headers(sid, key, b"{}", int(env.clock.now), host=f"127.0.0.1:{env.server.port}")
    del headers["x-tc-action"]
    _, _, answer = env.raw("POST", "/", b"{}", headers)
    assert answer["Response"]["Error"] == {
        "Code": "MissingParameter",
        "Message": "The request is missing a required parameter `Action`.",
    }


def test_content_type_and_body_size(env: Env) -> None:
    sid, key = env.full
    body = json.dumps({"ZoneId": EO_ZONE}).encode()
    headers = signed_headers(sid, key, body, int(env.clock.now), host=f"127.0.0.1:{env.server.port}")
    headers["content-type"] = "text/plain"
    headers["authorization"] = sign(sid, key, body=body, timestamp=int(env.clock.now), headers=headers)
    _, _, answer = env.raw("POST", "/", body, headers)
    assert answer["Response"]["Error"]["Code"] == "InvalidParameter"
    assert "`Content-Type`" in answer["Response"]["Error"]["Message"]
    big = b" " * (2 * 1024 * 1024)  # over aiohttp's default client_max_size of 1 MiB
    status, ctype, answer = env.raw("POST", "/", big, {"Content-Type": "application/json"})
    assert (status, ctype, answer["Response"]["Error"]["Code"]) == (
        200,
        "application/json",
        "InvalidParameter",
    )
