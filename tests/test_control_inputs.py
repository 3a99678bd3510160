"""Control-plane inputs from outside: whatever a client sends to a control route gets the dialect's own
error (never a 5xx) and changes nothing (no ledger row, no task, no quota, no rate-limit token), or is
accepted whole.

Everything goes over loopback to a real node: through the official SDKs where they can carry the input,
raw HTTP where they cannot (deep nesting and lone surrogates in a v4 body, arbitrary bytes, EdgeOne
bodies signed here with TC3).
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import cloudflare
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.teo.v20220901 import models, teo_client

from conftest import LIMITED_ACCOUNT_ID, LIMITED_ZONE_ID, VARIANT_ZONE_ID, ZONE_ID, Stack
from edgecache.api.edgeone.dispatch import EDGEONE_KEY
from edgecache.config import TASK_TYPES, Quota, Zone
from edgecache.control.credentials import Permission
from edgecache.control.quotas import QuotaExceeded, QuotaService
from edgecache.control.ratelimit import Rate
from edgecache.db.engine import read_transaction
from edgecache.db.schema import purge_ledger, tasks
from test_edgeone_transport import signed_headers

QUOTA_ZONE_ID = "cccc0000cccc0000cccc0000cccc0000"
QUOTA_ZONE = Zone(
    id=QUOTA_ZONE_ID,
    name="quota.example",
    hostnames=("quota.example",),
    origin="http://127.0.0.1:1",
    account_id=LIMITED_ACCOUNT_ID,
    plan="free",
    quotas={"purge_host": Quota(batch=5, daily=1)},
)
SURROGATES = ("\ud800", "\udfff", "\udc80")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(extra_zones=(QUOTA_ZONE,))
    # Arbitrary requests arrive faster than EdgeOne's 20 per second and action; that limit is
    # tested in test_edgeone_transport.py.
    assert s.node._control is not None
    s.node._control.app[EDGEONE_KEY].limiter.rate = Rate(10_000, 10_000)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def token(stack: Stack) -> str:
    return stack.token((Permission.CACHE_PURGE, Permission.ZONE_SETTINGS_READ))


@pytest.fixture(scope="module")
def secret(stack: Stack, direct_to_loopback: None) -> tuple[str, str]:
    return stack.node.secrets.create(stack.node.config.accounts[0].id, "inputs", [Permission.CACHE_PURGE])


def send(
    stack: Stack, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.node.control_port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def cf_post(stack: Stack, token: str, path: str, body: bytes, method: str = "POST") -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    status, got, raw = send(stack, method, path, body, headers)
    assert got["content-type"].startswith("application/json"), (status, raw[:200])
    return status, json.loads(raw)


def eo_post(stack: Stack, secret: tuple[str, str], action: str, body: bytes) -> dict[str, Any]:
    host = f"127.0.0.1:{stack.node.control_port}"
    headers = signed_headers(*secret, body, int(time.time()), action=action, host=host)
    status, got, raw = send(stack, "POST", "/", body, headers)
    assert status == 200 and got["content-type"] == "application/json", (status, got, raw[:200])
    response: dict[str, Any] = json.loads(raw)["Response"]
    assert isinstance(response["RequestId"], str) and response["RequestId"]
    return response


def teo(stack: Stack, secret: tuple[str, str]) -> Any:
    profile = ClientProfile(
        httpProfile=HttpProfile(
            protocol="http", endpoint=f"127.0.0.1:{stack.node.control_port}", reqTimeout=10
        )
    )
    return teo_client.TeoClient(credential.Credential(*secret), "", profile)


def snapshot(stack: Stack) -> tuple[int, int, tuple[int, ...]]:
    """What an accepted request changes: ledger rows, task rows, and every zone's quota left today."""
    with read_transaction(stack.node.database) as conn:
        ledger = int(conn.execute(select(func.count()).select_from(purge_ledger)).scalar_one())
        rows = int(conn.execute(select(func.count()).select_from(tasks)).scalar_one())
    quotas = tuple(
        stack.node.quotas.state(z.config, t).daily_available
        for z in stack.node.zones.by_id.values()
        for t in TASK_TYPES
    )
    return ledger, rows, quotas


PURGE_PATHS = [
    f"{prefix}/zones/{ZONE_ID}/{route}"
    for prefix in ("/client/v4", "")
    for route in ("purge_cache", "invalidate_cache")
]


# -- deep nesting ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"tags": ' + b"[" * 500 + b'"x"' + b"]" * 500 + b"}",
        b'{"files": [{"url": "http://test.example/a", "headers": '
        + b'{"a":' * 100
        + b"1"
        + b"}" * 101
        + b"]}",
    ],
)
def test_deeply_nested_json_is_a_400_in_each_dialect(
    stack: Stack, token: str, secret: tuple[str, str], body: bytes
) -> None:
    before = snapshot(stack)
    for path in PURGE_PATHS:
        status, answer = cf_post(stack, token, path, body)
        assert status == 400 and answer["success"] is False, answer
        assert answer["errors"][0]["code"] == 6007 and "nested" in answer["errors"][0]["message"]
    for action in ("CreatePurgeTask", "CreatePrefetchTask", "DescribePurgeTasks"):
        error = eo_post(stack, secret, action, body)["Error"]
        assert error["Code"] == "InvalidParameter" and "nested" in error["Message"]
    assert snapshot(stack) == before


# -- lone surrogates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"files": ["http://test.example/\ud800"]},
        {"files": [{"url": "http://test.example/a", "headers": {"CF-Device-Type": "\udfff"}}]},
        {"prefixes": ["test.example/\ud800/"]},
        {"tags": ["ok", "\udc80"]},
        {"hosts": ["test.example\ud800"]},
    ],
)
def test_lone_surrogate_in_a_v4_purge_is_a_400_and_charges_nothing(
    stack: Stack, token: str, payload: dict[str, Any]
) -> None:
    before = snapshot(stack)
    # json.dumps escapes the surrogate (\ud800): valid JSON text, not a Unicode character. The
    # cloudflare SDK cannot send it (it encodes the body as UTF-8 first), so this goes raw.
    status, answer = cf_post(stack, token, PURGE_PATHS[0], json.dumps(payload).encode())
    assert status == 400 and answer["errors"][0]["code"] == 6007, answer
    assert "surrogate" in answer["errors"][0]["message"]
    assert snapshot(stack) == before


def test_lone_surrogate_through_the_edgeone_sdk_charges_nothing(
    stack: Stack, secret: tuple[str, str]
) -> None:
    client = teo(stack, secret)
    eo_zone = stack.node.zones.by_id[ZONE_ID].config.eo_id
    before = snapshot(stack)
    for type_, target in (
        ("purge_url", "http://test.example/\ud800"),
        ("purge_prefix", "http://test.example/\ud800/"),
        ("purge_cache_tag", "\udfff"),
    ):
        req = models.CreatePurgeTaskRequest()
        req.ZoneId, req.Type, req.Targets = eo_zone, type_, [target]
        with pytest.raises(TencentCloudSDKException) as err:
            client.CreatePurgeTask(req)
        assert err.value.code == "InvalidParameter" and "surrogate" in err.value.message
    prefetch = models.CreatePrefetchTaskRequest()
    prefetch.ZoneId, prefetch.Targets = eo_zone, ["http://test.example/\ud800"]
    with pytest.raises(TencentCloudSDKException) as err:
        client.CreatePrefetchTask(prefetch)
    assert err.value.code == "InvalidParameter"
    assert snapshot(stack) == before


# -- rate limits and quotas: charged with the write, or not at all ---------------------------------


def test_purges_refused_for_their_quota_keep_the_accounts_rate_limit_tokens(stack: Stack) -> None:
    # The free plan's flex bucket holds 25 purges and refills 5 a minute: 40 refusals that each took
    # a token would leave none for the purge at the end.
    cf = cloudflare.Cloudflare(
        api_token=stack.token(account=LIMITED_ACCOUNT_ID),
        base_url=f"http://127.0.0.1:{stack.node.control_port}/client/v4",
        max_retries=0,
    )
    assert cf.cache.purge(zone_id=QUOTA_ZONE_ID, hosts=["quota.example"]) is not None  # the day's one
    for _ in range(40):
        with pytest.raises(cloudflare.RateLimitError) as err:
            cf.cache.purge(zone_id=QUOTA_ZONE_ID, hosts=["quota.example"])
        assert "quota of 1 per day" in str(err.value)
    assert cf.cache.purge(zone_id=QUOTA_ZONE_ID, tags=["still-allowed"]) is not None


def test_a_quota_is_charged_for_every_type_or_none_and_given_back_when_the_write_fails() -> None:
    quotas = QuotaService(lambda zone_id, kind, type_, since: 0)
    with pytest.raises(QuotaExceeded), quotas.reserve(QUOTA_ZONE, {"purge_cache_tag": 3, "purge_host": 2}):
        pass  # purge_host's daily quota is 1: the tags are not charged either
    assert quotas.state(QUOTA_ZONE, "purge_cache_tag").daily_available == 10_000
    with pytest.raises(OSError), quotas.reserve(QUOTA_ZONE, {"purge_cache_tag": 3}):
        raise OSError("disk full")  # the transaction that writes the tasks failed
    assert quotas.state(QUOTA_ZONE, "purge_cache_tag").daily_available == 10_000
    with quotas.reserve(QUOTA_ZONE, {"purge_cache_tag": 3}):
        pass
    assert quotas.state(QUOTA_ZONE, "purge_cache_tag").daily_available == 10_000 - 3


# -- the native tasks API ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "since=nan",
        "since=inf",
        "since=-inf",
        "since=1e308",
        "since=1e11",
        "since=0",
        f"offset={10**20}",
        "offset=-1",
        "limit=0",
        "limit=x",
    ],
)
def test_native_tasks_api_refuses_numbers_out_of_range(stack: Stack, token: str, query: str) -> None:
    status, headers, raw = send(
        stack,
        "GET",
        f"/edgecache/v1/zones/{ZONE_ID}/tasks?{query}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert status == 400 and headers["content-type"].startswith("application/json")
    error = json.loads(raw)["error"]
    assert error["code"] == 400 and error["message"]


def test_native_tasks_api_takes_the_largest_allowed_values(stack: Stack, token: str) -> None:
    status, _, raw = send(
        stack,
        "GET",
        f"/edgecache/v1/zones/{ZONE_ID}/tasks?since=315000000&offset={2**63 - 1}&limit=1000",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert status == 200 and json.loads(raw)["tasks"] == []


# -- size limit ------------------------------------------------------------------------------------------


def test_body_over_the_size_limit_is_a_v4_413(stack: Stack, token: str, secret: tuple[str, str]) -> None:
    body = json.dumps({"tags": ["x" * 1000] * 5000}).encode()
    assert len(body) > 4 * 1024 * 1024
    for path in PURGE_PATHS:
        status, answer = cf_post(stack, token, path, body)
        assert status == 413 and answer["success"] is False
        assert answer["errors"][0]["code"] == 6008 and "too large" in answer["errors"][0]["message"]
    assert eo_post(stack, secret, "CreatePurgeTask", body)["Error"]["Code"] == "InvalidParameter"


# -- arbitrary input to every route ----------------------------------------------------------------------

plausible_st = st.sampled_from(
    [
        "http://test.example/p",
        "https://test.example/a?b=1",
        "test.example/dir/",
        "http://variants.example/x",
        "test.example",
        "127.0.0.1",
        "elsewhere.example",
        "tag-a",
        "purge_url",
        "purge_prefix",
        "purge_host",
        "purge_all",
        "purge_cache_tag",
        "invalidate",
        "delete",
        "job-id",
        "target",
        "domains",
        "statuses",
        "type",
        "success",
        "2026-11-01T00:00:00Z",
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59-23:59",
        "zone-0123456789ab",
        ZONE_ID,
    ]
)


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Draw from one of the strategies with these relative weights (``one_of`` takes no weights)."""
    return st.sampled_from([s for n, s in choices for _ in range(n)]).flatmap(lambda s: s)


# Surrogates are rare enough that most bodies of several strings carry none (one refuses a body).
text_st = weighted(
    (30, plausible_st),
    (10, st.text(max_size=12)),
    (2, st.builds(str.__add__, plausible_st, st.sampled_from(SURROGATES))),
)
number_st = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 20, 1000, 1001, 2**63 - 1, 2**63, -1]),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_st = st.recursive(
    st.none() | st.booleans() | number_st | text_st,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text_st, inner, max_size=4),
    max_leaves=12,
)
NATIVE_PARAMS = ("kind", "status", "type", "target", "domain", "job_id", "since", "limit", "offset", "x")


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` nine times in ten, else any JSON value (so type errors are tried too)."""
    return weighted((9, good), (1, json_st))


def shaped(
    fields: dict[str, st.SearchStrategy[Any]], required: tuple[str, ...] = ()
) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the ``required`` fields, or else one of ``fields``, and some more of them, now
    and then with an unknown one (so most bodies get past the first checks)."""
    optional = {k: mostly(v) for k, v in fields.items() if k not in required}
    if required:
        known = st.fixed_dictionaries({k: mostly(fields[k]) for k in required}, optional=optional)
    else:
        one = st.sampled_from(sorted(fields)).flatmap(lambda k: mostly(fields[k]).map(lambda v: {k: v}))
        more = st.builds(lambda a, b: {**b, **a}, one, st.fixed_dictionaries({}, optional=optional))
        known = weighted((2, one), (1, more))
    extra = st.builds(lambda d, v: {**d, "Extra": v}, known, json_st)
    return weighted((9, known), (1, extra))


def body_st(
    fields: dict[str, st.SearchStrategy[Any]], required: tuple[str, ...] = ()
) -> st.SearchStrategy[bytes]:
    """A request body: mostly a well-shaped object, else any JSON value or any bytes."""
    return weighted(
        (6, shaped(fields, required).map(lambda v: json.dumps(v).encode())),
        (1, json_st.map(lambda v: json.dumps(v).encode())),
        (1, st.binary(max_size=64)),
    )


def items(*valid: str) -> st.SearchStrategy[list[str]]:
    """1 to 3 items, mostly ``valid`` ones (so a body reaches the write), now and then any string or
    a valid one followed by a lone surrogate."""
    good = st.sampled_from(valid)
    item = weighted((8, good), (2, text_st), (1, st.builds(str.__add__, good, st.sampled_from(SURROGATES))))
    return st.lists(item, min_size=1, max_size=3)


URLS = ("http://test.example/p", "https://test.example/a?b=1", "http://127.0.0.1/x", "test.example/y")
CF_BODY = body_st(
    {
        "purge_everything": st.booleans(),
        "files": weighted(
            (3, items(*URLS)),
            (
                1,
                st.lists(
                    st.fixed_dictionaries(
                        {"url": st.sampled_from(URLS)},
                        optional={"headers": st.dictionaries(text_st, text_st, max_size=2)},
                    ),
                    min_size=1,
                    max_size=2,
                ),
            ),
        ),
        "tags": items("tag-a", "Blog", "x"),
        "hosts": items("test.example", "127.0.0.1"),
        "prefixes": items("test.example/dir/", "test.example", "127.0.0.1/a/b"),
    }
)
time_st = st.one_of(
    text_st,
    st.datetimes(timezones=st.timezones()).map(lambda t: t.isoformat()),
    st.datetimes().map(lambda t: t.isoformat()),
)
EO_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "Type": st.sampled_from(["purge_url", "purge_prefix", "purge_host", "purge_all", "purge_cache_tag"]),
    "Method": st.sampled_from(["invalidate", "delete"]),
    "Targets": items(*URLS, "test.example", "http://test.example/dir/", "tag-a"),
    "EncodeUrl": st.booleans(),
    "CacheTag": st.fixed_dictionaries({"Domains": st.lists(text_st, max_size=2)}),
    "StartTime": time_st,
    "EndTime": time_st,
    "Offset": number_st,
    "Limit": number_st,
    "Filters": st.lists(
        st.fixed_dictionaries(
            {
                "Name": st.sampled_from(["job-id", "target", "domains", "statuses", "type", "x"]),
                "Values": st.lists(text_st, max_size=3),
            },
            optional={"Fuzzy": st.booleans()},
        ),
        max_size=3,
    ),
    "Mode": st.sampled_from(["default", "edge", "x"]),
    "Headers": st.lists(st.fixed_dictionaries({"Name": text_st, "Value": text_st}), max_size=2),
    "PrefetchMediaSegments": st.sampled_from(["on", "off"]),
}


def _eo(names: str, required: str = "") -> st.SearchStrategy[bytes]:
    return body_st({k: EO_FIELDS[k] for k in names.split()}, tuple(required.split()))


DESCRIBE = "StartTime EndTime Offset Limit Filters"
EO_REQUESTS: dict[str, st.SearchStrategy[bytes]] = {
    "CreatePurgeTask": _eo("Type Method Targets EncodeUrl CacheTag", "Type Targets"),
    "CreatePrefetchTask": _eo("Targets Mode EncodeUrl Headers PrefetchMediaSegments", "Targets"),
    "DescribePurgeTasks": _eo(DESCRIBE, "StartTime EndTime"),
    "DescribePrefetchTasks": _eo(DESCRIBE, "StartTime EndTime"),
    "DescribeContentQuota": weighted((6, st.just(b"{}")), (1, _eo(DESCRIBE))),
    "CreatePurgeTasks": _eo(" ".join(EO_FIELDS)),  # not an action (the documentation's misnomer)
}


def _assert_changed_nothing_on_error(stack: Stack, before: Any, failed: bool, answer: Any) -> None:
    if failed:
        assert snapshot(stack) == before, answer


COMMON = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@COMMON
@given(
    path=weighted(
        (8, st.sampled_from(PURGE_PATHS)),
        (1, st.just(f"/client/v4/zones/{QUOTA_ZONE_ID}/purge_cache")),
        (1, st.just(f"/client/v4/zones/{VARIANT_ZONE_ID}/purge_cache")),
        (1, st.just("/client/v4/zones/not-a-zone/purge_cache")),
    ),
    method=weighted((8, st.just("POST")), (1, st.just("DELETE"))),
    body=CF_BODY,
)
def test_arbitrary_v4_purge_bodies(stack: Stack, token: str, path: str, method: str, body: bytes) -> None:
    before = snapshot(stack)
    status, answer = cf_post(stack, token, path, body, method)
    assert status < 500, answer
    event(f"{status} {answer['errors'][0]['code'] if answer.get('errors') else 'ok'}")
    assert set(answer) >= {"success", "errors", "messages", "result"}
    if status == 200:
        assert answer["success"] is True and len(answer["result"]["id"]) == 32
    else:
        assert answer["success"] is False and answer["errors"], answer
        assert all(isinstance(e["code"], int) and e["message"] for e in answer["errors"])
    _assert_changed_nothing_on_error(stack, before, status != 200, answer)


@COMMON
@given(
    request=weighted(
        *(
            (1 if a == "CreatePurgeTasks" else 6, st.tuples(st.just(a), body))
            for a, body in EO_REQUESTS.items()
        )
    ),
    zone=weighted((6, st.just("eo")), *((1, st.just(z)) for z in ("hex", "limited", "none", "random"))),
)
def test_arbitrary_signed_edgeone_actions(
    stack: Stack, secret: tuple[str, str], request: tuple[str, bytes], zone: str
) -> None:
    action, body = request
    raw = body
    try:
        fields = json.loads(body)
    except ValueError:
        fields = None  # bytes that only start like an object: posted as they are
    if zone != "none" and isinstance(fields, dict):
        zone_id = {
            "eo": stack.node.zones.by_id[ZONE_ID].config.eo_id,
            "hex": ZONE_ID,
            "limited": LIMITED_ZONE_ID,
            "random": "zone-" + body.hex()[:12],
        }[zone]
        raw = json.dumps({"ZoneId": zone_id, **fields}).encode()
    before = snapshot(stack)
    response = eo_post(stack, secret, action, raw)
    event(response["Error"]["Code"] if "Error" in response else f"{action} ok")
    if "Error" in response:
        code = response["Error"]["Code"]
        assert isinstance(code, str) and code and code != "InternalError", response
        assert isinstance(response["Error"]["Message"], str)
    _assert_changed_nothing_on_error(stack, before, "Error" in response, response)


@COMMON
@given(
    route=st.sampled_from(["job", "tasks", "tasks-eo"]),
    ident=text_st,
    params=st.lists(
        st.tuples(
            st.sampled_from(NATIVE_PARAMS),
            st.one_of(text_st, number_st.map(str)),
        ),
        max_size=4,
    ),
)
def test_arbitrary_native_queries(
    stack: Stack, token: str, route: str, ident: str, params: list[tuple[str, str]]
) -> None:
    def enc(s: str) -> str:
        return quote(s.encode("utf-8", "surrogatepass"), safe="")

    query = "&".join(f"{enc(k)}={enc(v)}" for k, v in params)
    if route == "job":
        path = f"/edgecache/v1/jobs/{enc(ident) or 'x'}"
    else:
        zone = ZONE_ID if route == "tasks" else stack.node.zones.by_id[ZONE_ID].config.eo_id
        path = f"/edgecache/v1/zones/{zone}/tasks?{query}"
    before = snapshot(stack)
    status, headers, raw = send(stack, "GET", path, headers={"Authorization": f"Bearer {token}"})
    assert status < 500, raw[:300]
    assert headers["content-type"].startswith("application/json")
    answer = json.loads(raw)
    event(str(status))
    if status >= 400:
        assert answer["error"]["code"] == status and answer["error"]["message"]
    else:
        assert "tasks" in answer
    assert snapshot(stack) == before
