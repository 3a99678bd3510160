"""The Cloudflare v4 purge API, driven by the official ``cloudflare`` SDK (unmodified), then checked
through the data plane: exactly the purged content becomes MISS (or REVALIDATED), the rest stays HIT."""

from __future__ import annotations

import asyncio
import http.client
import json
import traceback
from collections.abc import Iterator
from typing import Any, cast

import cloudflare
import pytest
from aiohttp import web
from sqlalchemy import select

from conftest import LIMITED_ACCOUNT_ID, LIMITED_ZONE_ID, VARIANT_ZONE_ID, ZONE_ID, Route, Stack
from edgecache.api.cloudflare import openapi
from edgecache.api.cloudflare.auth import caller
from edgecache.api.cloudflare.envelope import CfError
from edgecache.api.cloudflare.routes import add_routes
from edgecache.control.credentials import Permission
from edgecache.db.schema import purge_ledger


@pytest.fixture(scope="module")
def cf(stack: Stack) -> Iterator[cloudflare.Cloudflare]:
    client = cloudflare.Cloudflare(
        api_token=stack.token(),
        base_url=f"http://127.0.0.1:{stack.node.control_port}/client/v4",
        max_retries=0,
    )
    yield client
    client.close()


def client_for(stack: Stack, **auth: str) -> cloudflare.Cloudflare:
    return cloudflare.Cloudflare(
        base_url=f"http://127.0.0.1:{stack.node.control_port}/client/v4", max_retries=0, **auth
    )


def warm(stack: Stack, paths: list[str], *, host: str = "test.example", **route: Any) -> None:
    for p in paths:
        stack.origin.routes[p.split("?")[0]] = Route(**route)
        stack.request(p, host=host)
        assert stack.request(p, host=host)[1]["cf-cache-status"] == "HIT"


def status(stack: Stack, path: str, host: str = "test.example", headers: dict[str, str] | None = None) -> str:
    return stack.request(path, host=host, headers=headers)[1]["cf-cache-status"]


def settle(stack: Stack) -> None:
    stack.run(stack.node.reclaimer.drain())


def raw(stack: Stack, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.node.control_port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_purge_files_removes_exactly_those_urls(stack: Stack, cf: cloudflare.Cloudflare) -> None:
    warm(stack, ["/cf/files/a", "/cf/files/b", "/cf/files/c?x=1", "/cf/files/c?x=2"])
    result = cf.cache.purge(
        zone_id=ZONE_ID, files=["http://test.example/cf/files/a", "https://TEST.example/cf/files/c?x=1"]
    )
    assert result is not None and len(result.id) == 32
    assert status(stack, "/cf/files/a") == "MISS"
    assert status(stack, "/cf/files/c?x=1") == "MISS"
    assert status(stack, "/cf/files/b") == "HIT"
    assert status(stack, "/cf/files/c?x=2") == "HIT"


def test_purge_files_with_headers_removes_one_variant(stack: Stack, cf: cloudflare.Cloudflare) -> None:
    mobile = {"CF-Device-Type": "mobile", "CF-IPCountry": "US", "Accept-Language": "en"}
    desktop = {"CF-Device-Type": "desktop", "CF-IPCountry": "US", "Accept-Language": "en"}
    stack.origin.routes["/cf/variant"] = Route()
    for h in (mobile, desktop):
        stack.request("/cf/variant", host="variants.example", headers=h)
    cf.cache.purge(
        zone_id=VARIANT_ZONE_ID,
        files=[{"url": "http://variants.example/cf/variant", "headers": mobile}],  # type: ignore[list-item]
    )
    assert status(stack, "/cf/variant", "variants.example", mobile) == "MISS"
    assert status(stack, "/cf/variant", "variants.example", desktop) == "HIT"
    cf.cache.purge(zone_id=VARIANT_ZONE_ID, files=["http://variants.example/cf/variant"])
    assert status(stack, "/cf/variant", "variants.example", mobile) == "MISS"
    assert status(stack, "/cf/variant", "variants.example", desktop) == "MISS"


def test_purge_tags_is_case_insensitive_and_exact(stack: Stack, cf: cloudflare.Cloudflare) -> None:
    stack.origin.routes["/cf/tag/1"] = Route(
        headers={"Cache-Control": "max-age=600", "Cache-Tag": "Shoes,red"}
    )
    stack.origin.routes["/cf/tag/2"] = Route(
        headers={"Cache-Control": "max-age=600", "Surrogate-Key": "shoes"}
    )
    stack.origin.routes["/cf/tag/3"] = Route(headers={"Cache-Control": "max-age=600", "Cache-Tag": "shoesx"})
    for p in ("/cf/tag/1", "/cf/tag/2", "/cf/tag/3"):
        stack.request(p)
    assert stack.node.control_site is not None
    answered = stack.node.control_site.answered
    cf.cache.purge(zone_id=ZONE_ID, tags=["SHOES"])
    # Answered by the control listener's own purge route (decision 0027), not by aiohttp.
    assert stack.node.control_site.answered == answered + 1
    assert status(stack, "/cf/tag/1") == "MISS"
    assert status(stack, "/cf/tag/2") == "MISS"
    assert status(stack, "/cf/tag/3") == "HIT"
    settle(stack)
    assert stack.call(lambda: stack.node.store.keys_for_tag(ZONE_ID, "shoes")) != []  # refilled by the MISS


def test_purge_hosts_and_prefixes(stack: Stack, cf: cloudflare.Cloudflare) -> None:
    warm(stack, ["/cf/h/1"], host="127.0.0.1")
    warm(stack, ["/cf/h/1", "/cf/pfx/a", "/cf/pfx/a/b?q=1", "/cf/pfxz", "/cf/other"])
    cf.cache.purge(zone_id=ZONE_ID, hosts=["127.0.0.1"])
    assert status(stack, "/cf/h/1", "127.0.0.1") == "MISS"
    assert status(stack, "/cf/h/1") == "HIT"
    cf.cache.purge(zone_id=ZONE_ID, prefixes=["test.example/cf/pfx/"])
    assert status(stack, "/cf/pfx/a") == "MISS"
    assert status(stack, "/cf/pfx/a/b?q=1") == "MISS"
    assert status(stack, "/cf/pfxz") == "HIT"
    assert status(stack, "/cf/other") == "HIT"


def test_invalidate_marks_stale_and_revalidates(stack: Stack, cf: cloudflare.Cloudflare) -> None:
    stack.origin.routes["/cf/soft"] = Route(
        headers={"Cache-Control": "max-age=600", "ETag": '"s1"', "Cache-Tag": "soft"}
    )
    stack.origin.routes["/cf/soft-other"] = Route(headers={"Cache-Control": "max-age=600"})
    stack.request("/cf/soft")
    stack.request("/cf/soft-other")
    cf.cache.invalidate(zone_id=ZONE_ID, tags=["soft"])
    _, headers, body = stack.request("/cf/soft")
    assert (headers["cf-cache-status"], body) == ("REVALIDATED", b"hello")
    assert stack.origin.requests[-1][2].get("If-None-Match") == '"s1"'
    assert status(stack, "/cf/soft") == "HIT"
    assert status(stack, "/cf/soft-other") == "HIT"


def test_purge_everything_is_limited_to_the_zone(stack: Stack, cf: cloudflare.Cloudflare) -> None:
    warm(stack, ["/cf/all/1", "/cf/all/2"])
    stack.origin.routes["/cf/all/v"] = Route()
    stack.request("/cf/all/v", host="variants.example")
    cf.cache.purge(zone_id=ZONE_ID, purge_everything=True)
    assert status(stack, "/cf/all/1") == "MISS"
    assert status(stack, "/cf/all/2") == "MISS"
    assert status(stack, "/cf/all/v", "variants.example") == "HIT"
    settle(stack)


def test_delete_alias_and_durable_job_id(stack: Stack) -> None:
    warm(stack, ["/cf/del"])
    token = stack.token()
    code, body = raw(
        stack,
        "DELETE",
        f"/zones/{ZONE_ID}/purge_cache",
        json.dumps({"files": ["http://test.example/cf/del"]}).encode(),
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert code == 200 and body["success"] is True and body["errors"] == [] and body["messages"] == []
    job = body["result"]["id"]
    assert status(stack, "/cf/del") == "MISS"
    with stack.node.database.connect() as conn:
        row = conn.execute(select(purge_ledger).where(purge_ledger.c.job_id == job)).one()
    assert row.zone_id == ZONE_ID and row.mode == "delete" and row.dialect == "cloudflare"
    assert json.loads(row.selectors) == {"files": ["http://test.example/cf/del"]}


def test_global_api_key(stack: Stack) -> None:
    key = stack.node.credentials.create_global_key(LIMITED_ACCOUNT_ID, "ops@example.com")
    client = client_for(stack, api_email="ops@example.com", api_key=key)
    assert client.cache.purge(zone_id=LIMITED_ZONE_ID, files=["http://limited.example/x"]) is not None
    with pytest.raises(cloudflare.PermissionDeniedError) as err:
        client.cache.purge(zone_id=ZONE_ID, files=["http://test.example/x"])
    assert err.value.body["errors"][0]["code"] == 10000  # type: ignore[index]


def error_of(exc: cloudflare.APIStatusError) -> dict[str, Any]:
    body = exc.body
    assert isinstance(body, dict) and body["success"] is False and body["result"] is None
    first: dict[str, Any] = body["errors"][0]
    return first


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({}, 1012),
        ({"extra_body": {"purge_everything": True, "tags": ["a"]}}, 1092),
        ({"extra_body": {"purge_everything": False}}, 1013),
        ({"extra_body": {"tags": "not-a-list"}}, 1014),
        ({"extra_body": {"tags": []}}, 1012),
        ({"extra_body": {"files": [{"headers": {}}]}}, 1012),
        ({"tags": [f"t{i}" for i in range(101)]}, 1101),
        ({"hosts": [f"h{i}.example" for i in range(101)]}, 1111),
        ({"tags": ["x" * 1025]}, 1100),
        ({"hosts": ["elsewhere.example"]}, 1115),
        ({"hosts": ["a" * 201]}, 1114),
        ({"prefixes": ["http://test.example/a"]}, 1115),
        ({"prefixes": ["test.example/a?b=1"]}, 1115),
        ({"prefixes": ["test.example" + "/a" * 32]}, 1115),
        ({"files": ["http://elsewhere.example/a"]}, 1082),
        ({"files": [f"http://test.example/{i}" for i in range(501)]}, 1094),
    ],
)
def test_bad_bodies_get_their_codes_and_change_nothing(
    stack: Stack, cf: cloudflare.Cloudflare, kwargs: dict[str, Any], code: int
) -> None:
    warm(stack, ["/cf/untouched"], headers={"Cache-Control": "max-age=600", "Cache-Tag": "t1,a"})
    with pytest.raises(cloudflare.BadRequestError) as err:
        cf.cache.purge(zone_id=ZONE_ID, **kwargs)
    assert error_of(err.value)["code"] == code
    assert status(stack, "/cf/untouched") == "HIT"


def test_malformed_json(stack: Stack) -> None:
    code, body = raw(
        stack,
        "POST",
        f"/client/v4/zones/{ZONE_ID}/purge_cache",
        b"{not json",
        {"Authorization": f"Bearer {stack.token()}"},
    )
    assert code == 400 and body["errors"][0]["code"] == 6007


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"tags": ["t1"], "hosts": [1]}, "hosts"),
        ({"hosts": ["test.example"], "prefixes": ["test.example/a", None]}, "prefixes"),
        ({"tags": [2], "hosts": [3], "prefixes": [4]}, "tags"),
        ({"prefixes": [{}], "tags": ["t1"]}, "prefixes"),
    ],
)
def test_a_field_of_non_strings_is_named_in_its_1014_and_changes_nothing(
    stack: Stack, body: dict[str, Any], named: str
) -> None:
    warm(stack, ["/cf/untouched"], headers={"Cache-Control": "max-age=600", "Cache-Tag": "t1,a"})
    code, answer = raw(
        stack,
        "POST",
        f"/client/v4/zones/{ZONE_ID}/purge_cache",
        json.dumps(body).encode(),
        {"Authorization": f"Bearer {stack.token()}"},
    )
    assert code == 400
    assert answer["errors"][0] == {"code": 1014, "message": f'"{named}" must be an array of strings'}
    assert status(stack, "/cf/untouched") == "HIT"


def test_each_refusal_is_an_error_of_its_own() -> None:
    """A refusal raised as one shared exception object kept every earlier raise's frames in its
    traceback: memory that grew with each call without credentials, and a log line of an error
    raised while answering one (chained to it) that took seconds to format."""

    async def refuse() -> int:
        """The refusal's traceback's length, read at once."""
        with pytest.raises(CfError) as info:
            await caller({}, cast(Any, None))
        assert info.value.code == 9106
        return len(traceback.extract_tb(info.value.__traceback__))

    first = asyncio.run(refuse())
    assert [asyncio.run(refuse()) for _ in range(3)] == [first] * 3


def test_authentication_errors(stack: Stack) -> None:
    path = f"/client/v4/zones/{ZONE_ID}/purge_cache"
    body = json.dumps({"purge_everything": True}).encode()
    code, answer = raw(stack, "POST", path, body, {})
    assert (code, answer["errors"][0]["code"]) == (400, 9106)
    with pytest.raises(cloudflare.BadRequestError) as err:
        client_for(stack, api_token="short").cache.purge(zone_id=ZONE_ID, purge_everything=True)
    first = error_of(err.value)
    assert first["code"] == 6003 and first["error_chain"][0]["code"] == 6111
    with pytest.raises(cloudflare.BadRequestError) as err:
        client_for(stack, api_email="ops@example.com", api_key="nothex").cache.purge(
            zone_id=ZONE_ID, tags=["a"]
        )
    assert error_of(err.value)["error_chain"][0]["code"] == 6103
    with pytest.raises(cloudflare.PermissionDeniedError) as denied:
        client_for(stack, api_token="A" * 40).cache.purge(zone_id=ZONE_ID, purge_everything=True)
    assert error_of(denied.value)["code"] == 10000


def test_permissions_and_zone_scope(stack: Stack) -> None:
    warm(stack, ["/cf/perm"])
    reader = client_for(stack, api_token=stack.token((Permission.ZONE_SETTINGS_READ,)))
    other_zone = client_for(stack, api_token=stack.token(zones=[VARIANT_ZONE_ID]))
    for client in (reader, other_zone):
        with pytest.raises(cloudflare.PermissionDeniedError):
            client.cache.purge(zone_id=ZONE_ID, purge_everything=True)
    assert status(stack, "/cf/perm") == "HIT"
    token = stack.token()
    info = [t for t in stack.node.credentials.list_tokens() if t.status(t.created_at) == "active"][-1]
    stack.node.credentials.revoke_token(info.id)
    with pytest.raises(cloudflare.PermissionDeniedError):
        client_for(stack, api_token=token).cache.purge(zone_id=ZONE_ID, purge_everything=True)


def test_unknown_zone_and_route(stack: Stack, cf: cloudflare.Cloudflare) -> None:
    with pytest.raises(cloudflare.BadRequestError) as err:
        cf.cache.purge(zone_id="0" * 32, purge_everything=True)
    assert error_of(err.value)["code"] == 7003
    code, body = raw(stack, "GET", "/client/v4/zones/nothing/here", None, {})
    assert code == 400 and [e["code"] for e in body["errors"]] == [7003, 7000]


def test_rate_limit_per_account(stack: Stack) -> None:
    client = client_for(stack, api_token=stack.token(account=LIMITED_ACCOUNT_ID))
    for _ in range(25):  # the free plan's flex bucket
        client.cache.purge(zone_id=LIMITED_ZONE_ID, tags=["x"])
    with pytest.raises(cloudflare.RateLimitError) as err:
        client.cache.purge(zone_id=LIMITED_ZONE_ID, tags=["x"])
    assert error_of(err.value)["code"] == 1134
    assert int(err.value.response.headers["retry-after"]) >= 1
    # Other accounts are not affected.
    assert client_for(stack, api_token=stack.token()).cache.purge(zone_id=ZONE_ID, tags=["x"]) is not None


def test_openapi_document(stack: Stack) -> None:
    code, doc = raw(stack, "GET", "/client/v4/openapi.json", None, {})
    assert code == 200 and doc["openapi"].startswith("3.")
    assert {"/zones/{zone_id}/purge_cache", "/zones/{zone_id}/invalidate_cache"} <= set(doc["paths"])
    # Every route the SDK can reach is described, queues and Cache Reserve included.
    assert set(doc["paths"]["/zones/{zone_id}/cache/cache_reserve"]) == {"get", "patch"}
    assert "post" in doc["paths"]["/accounts/{account_id}/queues/{queue_id}/messages/pull"]
    op = doc["paths"]["/accounts/{account_id}/queues/{queue_id}/consumers/{consumer_id}"]["put"]
    assert [p["name"] for p in op["parameters"]] == ["account_id", "queue_id", "consumer_id"]
    ops = [(method, path) for path, item in doc["paths"].items() for method in item]
    assert len(ops) == len(set(ops)) and all(doc["paths"][path][method]["summary"] for method, path in ops)


def test_openapi_documents_every_served_route() -> None:
    """A route added to the v4 dialect without a line in the document fails here, not in use."""
    app = web.Application()
    add_routes(app)
    served = openapi.served_routes(app.router)
    doc = openapi.build(served)
    assert {(m.lower(), p) for m, p in served} == {
        (method, path) for path, item in doc["paths"].items() for method in item
    }


def test_zone_quotas_hold_for_the_cloudflare_dialect_too(stack: Stack) -> None:
    client = client_for(stack, api_token=stack.token())
    with pytest.raises(cloudflare.BadRequestError) as bad:
        client.cache.purge(zone_id=VARIANT_ZONE_ID, hosts=["variants.example"] * 3)  # batch of 2
    assert error_of(bad.value)["code"] == 1111 and "per request" in error_of(bad.value)["message"]
    for _ in range(3):
        client.cache.purge(zone_id=VARIANT_ZONE_ID, hosts=["variants.example"])
    with pytest.raises(cloudflare.RateLimitError) as err:
        client.cache.purge(zone_id=VARIANT_ZONE_ID, hosts=["variants.example"])  # 3 per day
    assert error_of(err.value)["code"] == 1134 and "per day" in error_of(err.value)["message"]
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 86400


def test_revoking_a_token_in_use_takes_effect_at_once(stack: Stack) -> None:
    token = stack.token()
    client = client_for(stack, api_token=token)
    assert client.cache.purge(zone_id=ZONE_ID, tags=["in-use"]) is not None
    principal = stack.node.credentials.cached_token(token)  # verified once, now trusted for a while
    assert principal is not None
    assert stack.node.credentials.revoke_token(principal.id)
    with pytest.raises(cloudflare.PermissionDeniedError):
        client.cache.purge(zone_id=ZONE_ID, tags=["in-use"])
