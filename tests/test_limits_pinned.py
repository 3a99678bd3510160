"""Every published limit at its exact boundary, with literal numbers: the last value that passes and
the first that is refused, on a running node through the official SDKs or a raw socket.

The numbers are the ones users were promised, so they are written out here rather than read from
the code's tables: a change to a table that breaks a promise fails this file.
- Cloudflare per-request item counts (cloudflare-api.md §2.4, ``PLAN_LIMITS``): ``files`` 500 on
  Enterprise and 100 on Free/Pro/Business (1094 beyond); tags, hosts and prefixes 100 on every plan
  (1101, 1111, 1101 beyond); a tag of 1024 characters (1100 beyond); a prefix with 31 "/" (1115
  beyond).
- EdgeOne's per-request batch of cache tags, 100 (``LimitExceeded.BatchQuota`` beyond).
- The data plane: 16 byte ranges in one Range field are served as multipart/byteranges, 17 are
  ignored (the whole response); 100 request header fields are accepted, 101 get 431.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import cloudflare
import pytest
from sqlalchemy import func, select
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.teo.v20220901 import models, teo_client

from conftest import LIMITED_ACCOUNT_ID, LIMITED_ZONE_ID, ZONE_ID, Route, Stack
from edgecache.control.credentials import Permission
from edgecache.db.engine import read_transaction
from edgecache.db.schema import purge_ledger, tasks


def client(stack: Stack, token: str) -> cloudflare.Cloudflare:
    return cloudflare.Cloudflare(
        api_token=token, base_url=f"http://127.0.0.1:{stack.node.control_port}/client/v4", max_retries=0
    )


@pytest.fixture(scope="module")
def enterprise(stack: Stack) -> Iterator[cloudflare.Cloudflare]:
    with client(stack, stack.token()) as cf:
        yield cf


@pytest.fixture(scope="module")
def free(stack: Stack) -> Iterator[cloudflare.Cloudflare]:
    with client(stack, stack.token(zones=[LIMITED_ZONE_ID], account=LIMITED_ACCOUNT_ID)) as cf:
        yield cf


def written(stack: Stack) -> tuple[int, int]:
    """Ledger rows and tasks stored so far."""
    with read_transaction(stack.node.database) as conn:
        rows = conn.execute(select(func.count()).select_from(purge_ledger)).scalar_one()
        n_tasks = conn.execute(select(func.count()).select_from(tasks)).scalar_one()
    return int(rows), int(n_tasks)


def refused(stack: Stack, cf: cloudflare.Cloudflare, zone: str, **body: Any) -> int:
    """The error code of a purge that must be refused, after checking it wrote nothing."""
    before = written(stack)
    with pytest.raises(cloudflare.BadRequestError) as err:
        cf.cache.purge(zone_id=zone, **body)
    assert written(stack) == before
    answer = err.value.body
    assert isinstance(answer, dict) and answer["success"] is False
    return int(answer["errors"][0]["code"])


def accepted(stack: Stack, cf: cloudflare.Cloudflare, zone: str, **body: Any) -> None:
    before = written(stack)
    answer = cf.cache.purge(zone_id=zone, **body)
    assert answer is not None and len(answer.id) == 32
    assert written(stack)[0] == before[0] + 1


def urls(host: str, n: int) -> list[str]:
    return [f"http://{host}/limit/{i}" for i in range(n)]


def test_enterprise_purges_500_files_per_request_not_501(
    stack: Stack, enterprise: cloudflare.Cloudflare
) -> None:
    accepted(stack, enterprise, ZONE_ID, files=urls("test.example", 500))
    assert refused(stack, enterprise, ZONE_ID, files=urls("test.example", 501)) == 1094


def test_free_purges_100_files_per_request_not_101(stack: Stack, free: cloudflare.Cloudflare) -> None:
    accepted(stack, free, LIMITED_ZONE_ID, files=urls("limited.example", 100))
    assert refused(stack, free, LIMITED_ZONE_ID, files=urls("limited.example", 101)) == 1094


@pytest.mark.parametrize(("field", "code"), [("tags", 1101), ("prefixes", 1101), ("hosts", 1111)])
def test_flex_purges_take_100_items_per_request_not_101(
    stack: Stack, enterprise: cloudflare.Cloudflare, field: str, code: int
) -> None:
    def items(n: int) -> list[str]:
        if field == "tags":
            return [f"limit-{i}" for i in range(n)]
        if field == "prefixes":
            return [f"test.example/limit/{i}" for i in range(n)]
        return ["test.example"] * n

    accepted(stack, enterprise, ZONE_ID, **{field: items(100)})
    assert refused(stack, enterprise, ZONE_ID, **{field: items(101)}) == code


def test_a_tag_may_have_1024_characters_not_1025(stack: Stack, enterprise: cloudflare.Cloudflare) -> None:
    accepted(stack, enterprise, ZONE_ID, tags=["t" * 1024])
    assert refused(stack, enterprise, ZONE_ID, tags=["t" * 1025]) == 1100


def test_a_prefix_may_have_31_slashes_not_32(stack: Stack, enterprise: cloudflare.Cloudflare) -> None:
    accepted(stack, enterprise, ZONE_ID, prefixes=["test.example" + "/a" * 31])
    assert refused(stack, enterprise, ZONE_ID, prefixes=["test.example" + "/a" * 32]) == 1115


def test_edgeone_purges_100_cache_tags_per_request_not_101(stack: Stack, direct_to_loopback: None) -> None:
    secret_id, secret_key = stack.node.secrets.create(
        stack.node.config.accounts[0].id, "limits", [Permission.CACHE_PURGE]
    )
    profile = ClientProfile(
        httpProfile=HttpProfile(
            protocol="http", endpoint=f"127.0.0.1:{stack.node.control_port}", reqTimeout=10
        )
    )
    teo = teo_client.TeoClient(credential.Credential(secret_id, secret_key), "", profile)

    def purge_tags(n: int) -> Any:
        req = models.CreatePurgeTaskRequest()
        req.ZoneId = stack.node.zones.by_id[ZONE_ID].config.eo_id
        req.Type = "purge_cache_tag"
        req.Method = "delete"
        req.Targets = [f"eo-limit-{i}" for i in range(n)]
        return teo.CreatePurgeTask(req)

    before = written(stack)
    assert purge_tags(100).JobId
    assert written(stack) == (before[0] + 1, before[1] + 100)
    with pytest.raises(TencentCloudSDKException) as err:
        purge_tags(101)
    assert err.value.code == "LimitExceeded.BatchQuota"
    assert written(stack) == (before[0] + 1, before[1] + 100)


# --- the data plane --------------------------------------------------------------------------------


def exchange(stack: Stack, raw: bytes) -> bytes:
    """Send one request on a fresh connection (which it closes) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", stack.node.data_port), timeout=10) as s:
        s.sendall(raw)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_16_ranges_are_served_17_are_ignored(stack: Stack) -> None:
    body = bytes(range(65, 91)) * 4  # 104 bytes
    stack.origin.routes["/limit/ranges"] = Route(body=body, headers={"Cache-Control": "max-age=600"})
    stack.request("/limit/ranges")

    def ranged(n: int) -> tuple[int, dict[str, str], bytes]:
        spec = ",".join(f"{2 * i}-{2 * i}" for i in range(n))  # disjoint one-byte ranges
        return stack.request("/limit/ranges", headers={"Range": f"bytes={spec}"})

    status, headers, answer = ranged(16)
    assert status == 206 and headers["content-type"].startswith("multipart/byteranges")
    assert answer.count(b"Content-Range: bytes ") == 16
    assert b"Content-Range: bytes 30-30/104" in answer and headers["cf-cache-status"] == "HIT"
    status, headers, answer = ranged(17)
    assert (status, answer) == (200, body) and "content-range" not in headers


def test_100_request_header_fields_are_accepted_101_get_431(stack: Stack) -> None:
    stack.origin.routes["/limit/fields"] = Route()

    def with_fields(total: int) -> bytes:
        # Host and Connection count too.
        extra = b"".join(b"X-F%d: v\r\n" % i for i in range(total - 2))
        return b"GET /limit/fields HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n" + extra + b"\r\n"

    assert exchange(stack, with_fields(100)).startswith(b"HTTP/1.1 200 ")
    assert exchange(stack, with_fields(101)).startswith(b"HTTP/1.1 431 ")
