"""The EdgeOne dialect on a running node, driven by the official ``tencentcloud-sdk-python-teo``
(unmodified): purge and prefetch tasks, quotas, and the same tasks seen from both dialects, with
the cache really purged or warmed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import cloudflare
import pytest
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.teo.v20220901 import models, teo_client

from conftest import LIMITED_ACCOUNT_ID, LIMITED_ZONE_ID, ZONE_ID, Route, Stack
from edgecache.api.edgeone.dispatch import EDGEONE_KEY
from edgecache.control.credentials import Permission
from edgecache.control.ratelimit import Rate


@pytest.fixture(scope="module")
def eo_zone(stack: Stack) -> str:
    return stack.node.zones.by_id[ZONE_ID].config.eo_id


@pytest.fixture(scope="module")
def teo(stack: Stack, direct_to_loopback: None) -> Iterator[Any]:
    # This module calls CreatePurgeTask faster than 20/s; the limit itself is tested in
    # test_edgeone_transport.py.
    assert stack.node._control is not None
    stack.node._control.app[EDGEONE_KEY].limiter.rate = Rate(1000, 1000)
    yield client(
        stack, *stack.node.secrets.create(stack.node.config.accounts[0].id, "t", [Permission.CACHE_PURGE])
    )


def client(stack: Stack, secret_id: str, secret_key: str) -> Any:
    profile = ClientProfile(
        httpProfile=HttpProfile(
            protocol="http", endpoint=f"127.0.0.1:{stack.node.control_port}", reqTimeout=10
        )
    )
    return teo_client.TeoClient(credential.Credential(secret_id, secret_key), "", profile)


def purge(
    teo: Any, zone: str, type_: str, targets: list[str] | None = None, method: str | None = None
) -> Any:
    req = models.CreatePurgeTaskRequest()
    req.ZoneId = zone
    req.Type = type_
    if targets is not None:
        req.Targets = targets
    if method is not None:
        req.Method = method
    return teo.CreatePurgeTask(req)


def describe(teo: Any, zone: str, **filters: list[str]) -> Any:
    req = models.DescribePurgeTasksRequest()
    req.ZoneId = zone
    now = datetime.now(UTC)
    req.StartTime = (now - timedelta(hours=1)).isoformat()
    req.EndTime = (now + timedelta(minutes=1)).isoformat()
    req.Limit = 1000
    req.Filters = []
    for name, values in filters.items():
        f = models.AdvancedFilter()
        f.Name = name.replace("_", "-")
        f.Values = values
        req.Filters.append(f)
    return teo.DescribePurgeTasks(req)


def wait_for(fn: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def status(stack: Stack, path: str) -> str:
    return stack.request(path)[1]["cf-cache-status"]


def warm(stack: Stack, *paths: str, tags: str = "") -> None:
    for p in paths:
        headers = {"Cache-Control": "max-age=600", "ETag": '"e"'}
        if tags:
            headers["Cache-Tag"] = tags
        stack.origin.routes[p] = Route(headers=headers)
        stack.request(p)
        assert status(stack, p) == "HIT"


def test_purge_url_through_edgeone_then_task_succeeds(stack: Stack, teo: Any, eo_zone: str) -> None:
    warm(stack, "/eo/url/a", "/eo/url/b")
    resp = purge(teo, eo_zone, "purge_url", ["http://test.example/eo/url/a", "http://elsewhere.example/x"])
    assert resp.JobId and len(resp.FailedList) == 1
    assert resp.FailedList[0].Reason == "domain not valid"
    assert resp.FailedList[0].Targets == ["http://elsewhere.example/x"]
    assert status(stack, "/eo/url/a") == "MISS"  # a URL purge deletes unless told otherwise
    assert status(stack, "/eo/url/b") == "HIT"
    done = wait_for(
        lambda: [t for t in describe(teo, eo_zone, job_id=[resp.JobId]).Tasks if t.Status == "success"]
    )
    assert [(t.Target, t.Type, t.Method) for t in done] == [
        ("http://test.example/eo/url/a", "purge_url", "delete")
    ]


def test_purge_types_and_methods(stack: Stack, teo: Any, eo_zone: str) -> None:
    warm(stack, "/eo/p/dir/a", "/eo/p/dir/b", "/eo/p/other", tags="eo-tag")
    purge(teo, eo_zone, "purge_prefix", ["http://test.example/eo/p/dir/"], method="delete")
    assert status(stack, "/eo/p/dir/a") == "MISS"
    assert status(stack, "/eo/p/other") == "HIT"
    purge(teo, eo_zone, "purge_cache_tag", ["EO-TAG"], method="invalidate")  # revalidated with 304
    _, headers, _ = stack.request("/eo/p/other")
    assert headers["cf-cache-status"] == "REVALIDATED"
    warm(stack, "/eo/p/host")
    purge(teo, eo_zone, "purge_host", ["test.example"], method="delete")
    assert status(stack, "/eo/p/host") == "MISS"
    warm(stack, "/eo/p/all")
    purge(teo, eo_zone, "purge_all", method="delete")
    assert status(stack, "/eo/p/all") == "MISS"


@pytest.mark.parametrize(
    ("type_", "target", "method", "expected"),
    [
        # Method is documented for prefix, host and all (default invalidate); URL and tag purges
        # delete by default ("直接清除" in the Chinese examples). An explicit Method always wins.
        ("purge_url", "http://test.example/eo/m/{n}", None, ("MISS", "delete")),
        ("purge_url", "http://test.example/eo/m/{n}", "invalidate", ("REVALIDATED", "invalidate")),
        ("purge_cache_tag", "eo-m-{n}", None, ("MISS", "delete")),
        ("purge_cache_tag", "eo-m-{n}", "invalidate", ("REVALIDATED", "invalidate")),
        ("purge_prefix", "http://test.example/eo/m/{n}", None, ("REVALIDATED", "invalidate")),
        ("purge_prefix", "http://test.example/eo/m/{n}", "delete", ("MISS", "delete")),
        ("purge_host", "test.example", None, ("REVALIDATED", "invalidate")),
        ("purge_all", None, None, ("REVALIDATED", "invalidate")),
    ],
)
def test_method_defaults_per_type(
    stack: Stack,
    teo: Any,
    eo_zone: str,
    type_: str,
    target: str | None,
    method: str | None,
    expected: tuple[str, str],
) -> None:
    n = f"{type_}-{method}"
    path = f"/eo/m/{n}"
    warm(stack, path, tags=f"eo-m-{n}")
    job = purge(teo, eo_zone, type_, None if target is None else [target.format(n=n)], method=method)
    assert status(stack, path) == expected[0]
    assert {t.Method for t in describe(teo, eo_zone, job_id=[job.JobId]).Tasks} == {expected[1]}


def purge_tag_on(teo: Any, zone: str, tag: str, domains: list[str] | None) -> Any:
    req = models.CreatePurgeTaskRequest()
    req.ZoneId, req.Type, req.Targets = zone, "purge_cache_tag", [tag]
    if domains is not None:
        req.CacheTag = models.CacheTag()
        req.CacheTag.Domains = domains
    return teo.CreatePurgeTask(req)


def test_cache_tag_domains_limit_the_purge(stack: Stack, teo: Any, eo_zone: str) -> None:
    # The zone has two hostnames; the same path and tag are cached under each.
    stack.origin.routes["/eo/dom"] = Route(headers={"Cache-Control": "max-age=600", "Cache-Tag": "eo-dom"})
    for host in ("test.example", "127.0.0.1"):
        stack.request("/eo/dom", host=host)
        assert stack.request("/eo/dom", host=host)[1]["cf-cache-status"] == "HIT"
    job = purge_tag_on(teo, eo_zone, "eo-dom", ["127.0.0.1"])
    assert stack.request("/eo/dom", host="127.0.0.1")[1]["cf-cache-status"] == "MISS"
    assert stack.request("/eo/dom", host="test.example")[1]["cf-cache-status"] == "HIT"
    tasks = wait_for(
        lambda: [t for t in describe(teo, eo_zone, job_id=[job.JobId]).Tasks if t.Status == "success"]
    )
    assert [t.Target for t in tasks] == ["eo-dom"]
    assert stack.node.tasks.by_job(job.JobId)[0].matched == 1  # the other hostname's entry stayed
    assert describe(teo, eo_zone, job_id=[job.JobId], domains=["127.0.0.1"]).TotalCount == 1
    purge_tag_on(teo, eo_zone, "eo-dom", None)  # without CacheTag: every hostname of the zone
    for host in ("test.example", "127.0.0.1"):
        assert stack.request("/eo/dom", host=host)[1]["cf-cache-status"] == "MISS"
    with pytest.raises(TencentCloudSDKException) as err:
        purge_tag_on(teo, eo_zone, "eo-dom", ["elsewhere.example"])
    assert err.value.code == "InvalidParameter.DomainNotFound"
    with pytest.raises(TencentCloudSDKException) as err:
        purge_tag_on(teo, eo_zone, "eo-dom", [])
    assert err.value.code == "InvalidParameter.ParameterError"


def test_cloudflare_purge_is_an_edgeone_task_and_back(stack: Stack, teo: Any, eo_zone: str) -> None:
    cf = cloudflare.Cloudflare(
        api_token=stack.token(),
        base_url=f"http://127.0.0.1:{stack.node.control_port}/client/v4",
        max_retries=0,
    )
    job = cf.cache.purge(zone_id=ZONE_ID, tags=["crossdialect"])
    assert job is not None
    tasks = wait_for(lambda: describe(teo, eo_zone, job_id=[job.id]).Tasks)
    assert [(t.JobId, t.Target, t.Type, t.Method) for t in tasks] == [
        (job.id, "crossdialect", "purge_cache_tag", "delete")
    ]
    eo_job = purge(teo, eo_zone, "purge_host", ["test.example"]).JobId
    rows = stack.node.tasks.by_job(eo_job)
    assert [(r.dialect, r.target, r.type) for r in rows] == [("edgeone", "test.example", "purge_host")]
    fuzzy = describe(teo, eo_zone, target=["rossdial"])
    assert fuzzy.TotalCount == 0  # fuzzy only when asked
    req = models.DescribePurgeTasksRequest()
    req.ZoneId = eo_zone
    req.Filters = [models.AdvancedFilter()]
    req.Filters[0].Name, req.Filters[0].Values, req.Filters[0].Fuzzy = "target", ["rossdial"], True
    req.Filters.append(models.AdvancedFilter())
    req.Filters[1].Name, req.Filters[1].Values = "job-id", [job.id]
    assert [t.Target for t in teo.DescribePurgeTasks(req).Tasks] == ["crossdialect"]


def test_describe_filters_and_paging(stack: Stack, teo: Any, eo_zone: str) -> None:
    jobs = [purge(teo, eo_zone, "purge_url", [f"http://test.example/eo/page/{i}"]).JobId for i in range(5)]
    page = describe(teo, eo_zone, type=["purge_url"])
    assert page.TotalCount >= 5
    req = models.DescribePurgeTasksRequest()
    req.ZoneId = eo_zone
    req.StartTime = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    req.EndTime = datetime.now(UTC).isoformat()
    req.Limit, req.Offset = 2, 0
    first = teo.DescribePurgeTasks(req)
    req.Offset = 2
    second = teo.DescribePurgeTasks(req)
    assert len(first.Tasks) == len(second.Tasks) == 2
    assert {t.JobId for t in first.Tasks}.isdisjoint({t.JobId for t in second.Tasks})
    assert first.Tasks[0].JobId == jobs[-1]  # newest first
    statuses = describe(teo, eo_zone, statuses=["success", "processing"], domains=["test.example"])
    assert statuses.TotalCount >= 5 and all(t.Status in ("success", "processing") for t in statuses.Tasks)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"Type": "purge_url"}, "MissingParameter"),
        ({"Type": "purge_everything", "Targets": ["x"]}, "InvalidParameterValue"),
        ({"Type": "purge_url", "Targets": ["http://elsewhere.example/a"]}, "InvalidParameter.DomainNotFound"),
        (
            {"Type": "purge_url", "Targets": ["http://test.example/a"], "Method": "nuke"},
            "InvalidParameterValue",
        ),
        ({"Type": "purge_all", "Targets": ["x"]}, "InvalidParameter.ParameterError"),
        ({"Type": "purge_cache_tag", "Targets": ["x" * 1100]}, "InvalidParameter.Target"),
    ],
)
def test_create_purge_task_errors(
    stack: Stack, teo: Any, eo_zone: str, params: dict[str, Any], code: str
) -> None:
    warm(stack, "/eo/err/untouched")
    req = models.CreatePurgeTaskRequest()
    req.ZoneId = eo_zone
    for k, v in params.items():
        setattr(req, k, v)
    with pytest.raises(TencentCloudSDKException) as err:
        teo.CreatePurgeTask(req)
    assert err.value.code == code
    assert status(stack, "/eo/err/untouched") == "HIT"


def test_describe_errors_and_unknown_zone(stack: Stack, teo: Any, eo_zone: str) -> None:
    req = models.DescribePurgeTasksRequest()
    req.ZoneId = eo_zone
    with pytest.raises(TencentCloudSDKException) as err:
        teo.DescribePurgeTasks(req)  # neither a time range nor a job id
    assert err.value.code == "InvalidParameter.ParameterError"
    req.StartTime, req.EndTime, req.Limit = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", 1001
    with pytest.raises(TencentCloudSDKException) as err:
        teo.DescribePurgeTasks(req)
    assert err.value.code == "InvalidParameter.ParameterError"
    req.Limit = 10
    req.Offset = 10**20
    with pytest.raises(TencentCloudSDKException) as err:
        teo.DescribePurgeTasks(req)
    assert err.value.code == "InvalidParameter.ParameterError"
    req.Offset = 0
    req.ZoneId = "zone-000000000000"
    with pytest.raises(TencentCloudSDKException) as err:
        teo.DescribePurgeTasks(req)
    assert err.value.code == "ResourceNotFound.ZoneNotFound"


def test_prefetch_warms_the_cache(stack: Stack, teo: Any, eo_zone: str) -> None:
    stack.origin.routes["/eo/warm/ok"] = Route(
        body=b"warm", headers={"Cache-Control": "max-age=600", "Vary": "X-V"}
    )
    stack.origin.routes["/eo/warm/missing"] = Route(
        status=404, body=b"no", headers={"Cache-Control": "no-store"}
    )
    req = models.CreatePrefetchTaskRequest()
    req.ZoneId = eo_zone
    req.Targets = ["http://test.example/eo/warm/ok", "http://test.example/eo/warm/missing"]
    header = models.Header()
    header.Name, header.Value = "X-V", "blue"
    req.Headers = [header]
    job = teo.CreatePrefetchTask(req).JobId
    describe_req = models.DescribePrefetchTasksRequest()
    describe_req.ZoneId = eo_zone
    describe_req.Filters = [models.AdvancedFilter()]
    describe_req.Filters[0].Name, describe_req.Filters[0].Values = "job-id", [job]

    def finished() -> list[Any]:
        tasks = teo.DescribePrefetchTasks(describe_req).Tasks
        return tasks if tasks and all(t.Status != "processing" for t in tasks) else []

    tasks = {t.Target: t for t in wait_for(finished)}
    assert tasks["http://test.example/eo/warm/ok"].Status == "success"
    assert tasks["http://test.example/eo/warm/ok"].Type == "prefetch_url"
    assert tasks["http://test.example/eo/warm/missing"].Status == "invalid"
    assert "404" in tasks["http://test.example/eo/warm/missing"].FailMessage
    assert stack.origin.hits["/eo/warm/ok"] == 1
    _, headers, body = stack.request("/eo/warm/ok", headers={"X-V": "blue"})
    assert (headers["cf-cache-status"], body) == ("HIT", b"warm")
    sent = [
        {k.lower(): v for k, v in h.items()}
        for _, path, h, _ in stack.origin.requests
        if path == "/eo/warm/ok"
    ]
    assert [h.get("x-v") for h in sent] == ["blue"]


def test_content_quota_counts_and_limits(stack: Stack) -> None:
    zone = stack.node.zones.by_id[LIMITED_ZONE_ID].config
    secret = stack.node.secrets.create(LIMITED_ACCOUNT_ID, "q", [Permission.CACHE_PURGE])
    teo = client(stack, *secret)
    req = models.DescribeContentQuotaRequest()
    req.ZoneId = zone.eo_id
    before = {q.Type: q for q in teo.DescribeContentQuota(req).PurgeQuota}
    assert set(before) == {"purge_url", "purge_prefix", "purge_host", "purge_all", "purge_cache_tag"}
    purge(teo, zone.eo_id, "purge_url", ["http://limited.example/a", "http://limited.example/b"])
    after = {q.Type: q for q in teo.DescribeContentQuota(req).PurgeQuota}
    assert after["purge_url"].DailyAvailable == before["purge_url"].DailyAvailable - 2
    batch = after["purge_cache_tag"].Batch
    with pytest.raises(TencentCloudSDKException) as err:
        purge(teo, zone.eo_id, "purge_cache_tag", [f"t{i}" for i in range(batch + 1)])
    assert err.value.code == "LimitExceeded.BatchQuota"


def test_secret_without_access_to_the_zone(stack: Stack, eo_zone: str) -> None:
    other = client(stack, *stack.node.secrets.create(LIMITED_ACCOUNT_ID, "other", [Permission.CACHE_PURGE]))
    with pytest.raises(TencentCloudSDKException) as err:
        purge(other, eo_zone, "purge_all")
    assert err.value.code == "ResourceNotFound.ZoneNotFound"
    reader = client(
        stack,
        *stack.node.secrets.create(stack.node.config.accounts[0].id, "r", [Permission.ZONE_SETTINGS_READ]),
    )
    with pytest.raises(TencentCloudSDKException) as err:
        purge(reader, eo_zone, "purge_all")
    assert err.value.code == "UnauthorizedOperation.NoPermission"


@pytest.mark.parametrize("action", ["DescribePurgeTasks", "DescribePrefetchTasks"])
def test_describe_window_is_at_most_seven_days(teo: Any, eo_zone: str, action: str) -> None:
    req = getattr(models, f"{action}Request")()
    req.ZoneId = eo_zone
    req.StartTime = "2026-11-01T00:00:00+08:00"
    req.EndTime = "2026-11-08T00:00:00+08:00"  # exactly 7 days: allowed
    assert getattr(teo, action)(req).TotalCount == 0
    req.EndTime = "2026-11-08T00:00:01+08:00"
    with pytest.raises(TencentCloudSDKException) as err:
        getattr(teo, action)(req)
    assert err.value.code == "InvalidParameter.ParameterError"
    assert err.value.message == (
        "Parameter error: Invalid \u201cEnd time\u201d. "
        "The interval between the start and end time cannot exceed 7 days."
    )


def test_edgeone_targets_reach_every_spelling_of_their_path(stack: Stack, teo: Any, eo_zone: str) -> None:
    stack.origin.routes["/eo/sp/gap"] = Route()
    stack.origin.routes["/eo/sp/dir/x"] = Route()
    spellings = ["/eo/sp/gap", "/eo/sp/a/../gap", "/eo/sp/%2e/gap", "/eo/sp/x/%2E%2E/gap"]
    for path in [*spellings, "/eo/sp/dir/x"]:
        stack.request(path)
        assert stack.request(path)[1]["cf-cache-status"] == "HIT", path
    purge(teo, eo_zone, "purge_url", ["http://test.example/eo/sp/./b/../gap"], method="delete")
    for path in spellings:
        assert stack.request(path)[1]["cf-cache-status"] == "MISS", path
        purge(teo, eo_zone, "purge_url", ["http://test.example/eo/sp/gap"], method="delete")
    purge(teo, eo_zone, "purge_prefix", ["http://test.example/eo/sp/%2e/d%69r/"], method="delete")
    assert stack.request("/eo/sp/./dir/x")[1]["cf-cache-status"] == "MISS"


@pytest.mark.parametrize("method", ["invalidate", "delete"])
def test_an_object_two_targets_cover_is_counted_once(
    stack: Stack, teo: Any, eo_zone: str, method: str
) -> None:
    # Two prefixes of one job both cover the one cached object: the job matched one object, under
    # the first target, whether the purge marks it stale or deletes it.
    path = f"/eo/twice-{method}/sub/x"
    warm(stack, path)
    outer, inner = f"http://test.example/eo/twice-{method}/", f"http://test.example/eo/twice-{method}/sub/"
    job = purge(teo, eo_zone, "purge_prefix", [outer, inner], method=method)
    tasks = wait_for(
        lambda: [t for t in describe(teo, eo_zone, job_id=[job.JobId]).Tasks if t.Status == "success"]
    )
    assert len(tasks) == 2
    assert {row.target: row.matched for row in stack.node.tasks.by_job(job.JobId)} == {outer: 1, inner: 0}
