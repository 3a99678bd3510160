"""Cache Reserve through the official ``cloudflare`` SDK: the setting, the clear and its errors, and
what the data plane then does with eligible objects."""

from __future__ import annotations

import http.client
import threading
import time
from typing import Any

import cloudflare
import pytest

from conftest import ZONE_ID, Route, Stack
from edgecache.control.credentials import Permission


def sdk(stack: Stack, *permissions: Permission) -> cloudflare.Cloudflare:
    token = stack.token(permissions or (Permission.ZONE_SETTINGS_READ, Permission.ZONE_SETTINGS_WRITE))
    return cloudflare.Cloudflare(
        api_token=token, base_url=f"http://127.0.0.1:{stack.node.control_port}/client/v4", max_retries=0
    )


def error_code(exc: cloudflare.APIStatusError) -> int:
    body: Any = exc.body
    return int(body["errors"][0]["code"])


def wait_completed(cf: cloudflare.Cloudflare) -> Any:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = cf.cache.cache_reserve.status(zone_id=ZONE_ID)
        if status.state == "Completed":
            return status
        time.sleep(0.05)
    raise AssertionError("the clear did not complete")


def test_setting_and_clear_follow_cloudflare_rules(fresh: Stack) -> None:
    cf = sdk(fresh)
    got = cf.cache.cache_reserve.get(zone_id=ZONE_ID)
    assert (got.id, got.value, got.editable, got.modified_on) == ("cache_reserve", "off", True, None)

    with pytest.raises(cloudflare.BadRequestError) as never:
        cf.cache.cache_reserve.status(zone_id=ZONE_ID)
    assert error_code(never.value) == 1142

    on = cf.cache.cache_reserve.edit(zone_id=ZONE_ID, value="on")
    assert on.value == "on" and on.modified_on is not None
    assert cf.cache.cache_reserve.get(zone_id=ZONE_ID).value == "on"

    with pytest.raises(cloudflare.BadRequestError) as while_on:
        cf.cache.cache_reserve.clear(zone_id=ZONE_ID)
    assert error_code(while_on.value) == 1152
    assert while_on.value.status_code == 400

    cf.cache.cache_reserve.edit(zone_id=ZONE_ID, value="off")
    started = cf.cache.cache_reserve.clear(zone_id=ZONE_ID)
    assert started.id == "cache_reserve_clear" and started.state in ("In-progress", "Completed")
    done = wait_completed(cf)
    assert done.end_ts is not None and done.start_ts <= done.end_ts

    fresh.restart()
    cf = sdk(fresh)
    assert cf.cache.cache_reserve.status(zone_id=ZONE_ID).state == "Completed"
    assert cf.cache.cache_reserve.get(zone_id=ZONE_ID).value == "off"


def test_enabling_during_a_clear_is_1153(fresh: Stack) -> None:
    cf = sdk(fresh)
    cf.cache.cache_reserve.edit(zone_id=ZONE_ID, value="on")
    fresh.origin.routes["/r"] = Route(headers={"Cache-Control": "max-age=86400"})
    fresh.request("/r")
    cf.cache.cache_reserve.edit(zone_id=ZONE_ID, value="off")
    disk = fresh.node.disk
    assert disk is not None and disk.flush(10)
    # Hold the writer so the clear cannot finish before the PATCH arrives.
    gate = threading.Event()
    disk.run_job(lambda view: gate.wait(10))
    try:
        assert cf.cache.cache_reserve.clear(zone_id=ZONE_ID).state == "In-progress"
        with pytest.raises(cloudflare.BadRequestError) as denied:
            cf.cache.cache_reserve.edit(zone_id=ZONE_ID, value="on")
        assert error_code(denied.value) == 1153
        assert cf.cache.cache_reserve.clear(zone_id=ZONE_ID).state == "In-progress"
    finally:
        gate.set()
    wait_completed(cf)
    assert disk.reserve_usage(ZONE_ID) == (0, 0)
    assert cf.cache.cache_reserve.edit(zone_id=ZONE_ID, value="on").value == "on"


def test_permissions_and_bad_values(fresh: Stack) -> None:
    reader = sdk(fresh, Permission.ZONE_SETTINGS_READ)
    assert reader.cache.cache_reserve.get(zone_id=ZONE_ID).value == "off"
    with pytest.raises(cloudflare.PermissionDeniedError):
        reader.cache.cache_reserve.edit(zone_id=ZONE_ID, value="on")
    with pytest.raises(cloudflare.PermissionDeniedError):
        reader.cache.cache_reserve.clear(zone_id=ZONE_ID)
    purger = sdk(fresh, Permission.CACHE_PURGE)
    with pytest.raises(cloudflare.PermissionDeniedError):
        purger.cache.cache_reserve.get(zone_id=ZONE_ID)
    writer = sdk(fresh)
    with pytest.raises(cloudflare.BadRequestError):
        writer.cache.cache_reserve.edit(zone_id=ZONE_ID, value="maybe")  # type: ignore[arg-type]
    assert writer.cache.cache_reserve.get(zone_id=ZONE_ID).modified_on is None


def test_reserve_keeps_eligible_objects_and_serves_them(fresh: Stack) -> None:
    cf = sdk(fresh)
    cf.cache.cache_reserve.edit(zone_id=ZONE_ID, value="on")
    fresh.origin.routes["/long"] = Route(body=b"L" * 100, headers={"Cache-Control": "max-age=86400"})
    fresh.origin.routes["/short"] = Route(body=b"S" * 100, headers={"Cache-Control": "max-age=60"})
    fresh.request("/long")
    fresh.request("/short")
    disk = fresh.node.disk
    assert disk is not None and disk.flush(10)
    assert disk.reserve_usage(ZONE_ID)[1] == 1
    # The disk cache loses both (as an eviction would); the reserve still answers for the eligible one.
    for key in ("http://test.example/long", "http://test.example/short"):
        fresh.call(lambda k=key: fresh.node.store.delete(k))
    disk.run_job(_drop_cache_area).result(10)
    status, headers, body = fresh.request("/long")
    assert (status, body) == (200, b"L" * 100)
    assert headers["cache-status"].endswith("detail=reserve")
    assert fresh.request("/short")[1]["cf-cache-status"] == "MISS"
    assert fresh.origin.hits["/long"] == 1


def test_reserve_admits_only_responses_with_a_content_length(fresh: Stack) -> None:
    """Cloudflare's rule: a response without Content-Length (chunked here) stays out of the reserve,
    even when long-lived; it is still cached on disk, and a revalidation keeps the rule."""
    cf = sdk(fresh)
    cf.cache.cache_reserve.edit(zone_id=ZONE_ID, value="on")
    long_lived = {"Cache-Control": "max-age=86400", "ETag": '"v1"'}
    fresh.origin.routes["/sized"] = Route(body=b"S" * 200, headers=long_lived)
    fresh.origin.routes["/chunked"] = Route(body=b"C" * 200, headers=long_lived, chunked=True, chunks=4)
    assert fresh.request("/sized")[2] == b"S" * 200
    assert fresh.request("/chunked")[2] == b"C" * 200
    disk = fresh.node.disk
    assert disk is not None and disk.flush(10)
    assert disk.usage()[1] == 2
    assert disk.reserve_usage(ZONE_ID)[1] == 1
    for key in ("http://test.example/sized", "http://test.example/chunked"):
        fresh.call(lambda k=key: fresh.node.store.delete(k))
    disk.run_job(_drop_cache_area).result(10)
    status, headers, body = fresh.request("/sized")
    assert (status, body) == (200, b"S" * 200)
    assert headers["cache-status"].endswith("detail=reserve")
    status, headers, body = fresh.request("/chunked")
    assert (status, body, headers["cf-cache-status"]) == (200, b"C" * 200, "MISS")
    assert fresh.origin.hits == {"/sized": 1, "/chunked": 2}


def test_reserve_rule_survives_a_disk_round_trip(fresh: Stack) -> None:
    """Objects read back from disk keep what the origin sent: stored again with the reserve on, the
    one that had a Content-Length is admitted, the chunked one is not."""
    long_lived = {"Cache-Control": "max-age=86400"}
    fresh.origin.routes["/sized"] = Route(body=b"S" * 200, headers=long_lived)
    fresh.origin.routes["/chunked"] = Route(body=b"C" * 200, headers=long_lived, chunked=True, chunks=4)
    fresh.request("/sized")
    fresh.request("/chunked")
    disk = fresh.node.disk
    assert disk is not None and disk.flush(10)
    fresh.restart()
    sdk(fresh).cache.cache_reserve.edit(zone_id=ZONE_ID, value="on")
    for path in ("/sized", "/chunked"):
        status, headers, _ = fresh.request(path)
        assert status == 200 and headers["cache-status"].endswith("detail=disk")

    def store_again() -> None:
        for path in ("/sized", "/chunked"):
            entry = fresh.node.tiers.get("http://test.example" + path)
            assert entry is not None
            fresh.node.tiers.put(entry)

    fresh.call(store_again)
    disk = fresh.node.disk
    assert disk is not None and disk.flush(10)
    assert disk.reserve_usage(ZONE_ID)[1] == 1
    assert fresh.origin.hits == {"/sized": 1, "/chunked": 1}


def _drop_cache_area(view: Any) -> bool:
    for handle in view.scan_zone(ZONE_ID, None, 1 << 30, area=b"c"):
        view.delete(handle)
    return True


def test_cli_and_metrics_show_the_clear(fresh: Stack) -> None:
    from typer.testing import CliRunner

    from edgecache.cli import app

    token = fresh.token((Permission.ZONE_SETTINGS_READ, Permission.ZONE_SETTINGS_WRITE))
    api = ["--api", f"http://127.0.0.1:{fresh.node.control_port}/client/v4", "--token", token, "-z", ZONE_ID]
    runner = CliRunner()
    assert "cache reserve off; never cleared" in runner.invoke(app, ["reserve", "status", *api]).output
    assert runner.invoke(app, ["reserve", "on", *api]).exit_code == 0
    fresh.origin.routes["/cli"] = Route(body=b"c" * 300, headers={"Cache-Control": "max-age=86400"})
    fresh.request("/cli")
    refused = runner.invoke(app, ["reserve", "clear", *api])
    assert refused.exit_code == 1 and "1152" in refused.output
    assert runner.invoke(app, ["reserve", "off", *api]).exit_code == 0
    disk = fresh.node.disk
    assert disk is not None and disk.flush(10)
    done = runner.invoke(app, ["reserve", "clear", "--wait", *api])
    assert done.exit_code == 0, done.output
    assert "clear Completed: 1 objects" in done.output
    conn = http.client.HTTPConnection("127.0.0.1", fresh.node.control_port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    assert f'edgecache_reserve_clear_objects{{zone="{ZONE_ID}"}} 1.0' in text
    assert "edgecache_disk_writes_total 1.0" in text
