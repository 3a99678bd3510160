"""The web console, end to end in a real headless Chromium against a real node.

Every page visited is saved as a PNG under this module's pytest output folder; with
``EDGECACHE_SCREENSHOTS=<dir>`` set they are copied there too (``docs/console`` for the README).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.sync_api import Browser, BrowserContext, Page, expect

from browser import browser_fixture  # noqa: F401
from conftest import VARIANT_ZONE_ID, ZONE_ID, Route, Stack
from edgecache.config import DEFAULT_ACCOUNT_ID
from edgecache.control.credentials import Permission
from edgecache.control.queue_rules import Message

DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("console-screenshots")
    yield folder
    target = os.environ.get("EDGECACHE_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for png in folder.glob("*.png"):
            shutil.copy(png, Path(target) / png.name)


def shot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def console_url(stack: Stack, path: str = "/console/") -> str:
    return f"http://127.0.0.1:{stack.node.control_port}{path}"


def sign_in(
    browser: Browser, stack: Stack, token: str, viewport: dict[str, int] = DESKTOP
) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    page = context.new_page()
    page.goto(console_url(stack))
    expect(page).to_have_url(re.compile(r"/console/signin"))
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Zones")).to_be_visible()
    return context, page


def zone_tasks(stack: Stack, zone_id: str) -> list[dict[str, object]]:
    token = stack.token((Permission.ZONE_SETTINGS_READ,), [zone_id])
    req = urllib.request.Request(
        f"http://127.0.0.1:{stack.node.control_port}/edgecache/v1/zones/{zone_id}/tasks?limit=1000",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        tasks: list[dict[str, object]] = json.load(resp)["tasks"]
    return tasks


def purge_tags(stack: Stack, token: str, tags: list[str]) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{stack.node.control_port}/client/v4/zones/{ZONE_ID}/purge_cache",
        data=json.dumps({"tags": tags}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=10).close()


def test_sign_in_exchanges_the_token_for_a_strict_httponly_session(
    browser: Browser, stack: Stack, shots: Path
) -> None:
    context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    page = context.new_page()
    page.goto(console_url(stack, "/console/tasks"))
    shot(page, shots, "signin")
    page.get_by_label("API token").fill("x" * 40)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    token = stack.token((Permission.CACHE_PURGE, Permission.ZONE_SETTINGS_READ))
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    # Back where the sign-in started.
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    cookie = next(c for c in context.cookies() if c["name"] == "edgecache_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["expires"] > time.time() + 3600
    assert token not in cookie["value"]
    assert page.evaluate("document.cookie") == ""
    page.goto(console_url(stack))
    expect(page.get_by_role("heading", name="test.example")).to_be_visible()
    expect(page.get_by_role("heading", name="variants.example")).to_be_visible()
    shot(page, shots, "zones")
    context.close()


def test_a_one_zone_token_sees_only_that_zone(browser: Browser, stack: Stack) -> None:
    token = stack.token((Permission.CACHE_PURGE,), [VARIANT_ZONE_ID])
    context, page = sign_in(browser, stack, token)
    expect(page.get_by_role("heading", name="variants.example")).to_be_visible()
    expect(page.get_by_role("heading", name="test.example")).to_have_count(0)
    page.goto(console_url(stack, "/console/tasks"))
    options = page.locator("select[name=zone] option").all_inner_texts()
    assert options == ["variants.example"]
    page.goto(console_url(stack, f"/console/tasks?zone={ZONE_ID}"))
    assert page.locator("select[name=zone] option").all_inner_texts() == ["variants.example"]
    response = page.goto(console_url(stack, f"/console/zones/{ZONE_ID}/purge"))
    assert response is not None and response.status == 404
    before = len(zone_tasks(stack, ZONE_ID))
    # A forged POST to the other zone, with this session's own CSRF token, is refused as well.
    page.goto(console_url(stack, f"/console/zones/{VARIANT_ZONE_ID}/purge"))
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    answer = page.request.post(
        console_url(stack, f"/console/zones/{ZONE_ID}/purge"),
        form={"csrf": csrf or "", "kind": "everything", "mode": "hard", "items": "", "headers": ""},
        headers={"Origin": console_url(stack, "").rstrip("/")},
    )
    assert answer.status == 404
    assert len(zone_tasks(stack, ZONE_ID)) == before
    context.close()


def test_purge_by_tag_reaches_success_and_the_next_request_misses(
    browser: Browser, stack: Stack, shots: Path
) -> None:
    stack.origin.routes["/console-tagged"] = Route(
        body=b"tagged", headers={"Cache-Control": "public, max-age=600", "Cache-Tag": "console-demo"}
    )
    stack.request("/console-tagged")
    assert stack.request("/console-tagged")[1]["cf-cache-status"] == "HIT"
    token = stack.token((Permission.CACHE_PURGE, Permission.ZONE_SETTINGS_READ), [ZONE_ID])
    context, page = sign_in(browser, stack, token)
    page.get_by_role("link", name="Purge", exact=True).first.click()
    expect(page.get_by_role("heading", name="Purge cache")).to_be_visible()
    page.get_by_label("Cache tags").check()
    page.get_by_label("Items").fill("console-demo")
    shot(page, shots, "purge")
    page.get_by_role("button", name="Purge", exact=True).click()
    expect(page.get_by_role("heading", name="Purge job")).to_be_visible()
    status = page.locator("[data-status]").first
    expect(status).to_have_text("success", timeout=15_000)
    expect(page.get_by_role("status")).to_contain_text("Done")
    row = page.locator("#job-tasks tbody tr").first
    expect(row.locator("td").nth(0)).to_have_text("console-demo")
    expect(row.locator("td").nth(4)).to_have_text("1")
    shot(page, shots, "job")
    assert stack.request("/console-tagged")[1]["cf-cache-status"] == "MISS"
    task = next(t for t in zone_tasks(stack, ZONE_ID) if t["target"] == "console-demo")
    assert task["dialect"] == "console" and task["status"] == "success"
    context.close()


def test_purge_one_url_variant_by_its_cache_key_headers_soft(browser: Browser, stack: Stack) -> None:
    stack.origin.routes["/variant"] = Route(
        body=b"v", headers={"Cache-Control": "public, max-age=600", "ETag": '"v1"'}
    )
    mobile = {"CF-Device-Type": "mobile"}
    desktop = {"CF-Device-Type": "desktop"}
    for headers in (mobile, desktop, mobile, desktop):
        status = stack.request("/variant", headers=headers, host="variants.example")[1]["cf-cache-status"]
    assert status == "HIT"
    token = stack.token((Permission.CACHE_PURGE,), [VARIANT_ZONE_ID])
    context, page = sign_in(browser, stack, token)
    page.goto(console_url(stack, f"/console/zones/{VARIANT_ZONE_ID}/purge"))
    page.get_by_label("URLs").check()
    page.get_by_label("Items").fill("https://variants.example/variant")
    page.get_by_text("Cache-key headers (URLs only)").click()
    page.get_by_label("Headers that select one variant of each URL").fill("CF-Device-Type: mobile")
    page.get_by_label("Soft: mark stale").check()
    page.get_by_role("button", name="Purge", exact=True).click()
    expect(page.locator("[data-status]").first).to_have_text("success", timeout=15_000)
    expect(page.locator("#job-tasks tbody tr td").nth(2)).to_have_text("soft")
    # Only the mobile variant was invalidated: it revalidates (304 from the origin), desktop still hits.
    assert (
        stack.request("/variant", headers=mobile, host="variants.example")[1]["cf-cache-status"]
        == "REVALIDATED"
    )
    assert stack.request("/variant", headers=desktop, host="variants.example")[1]["cf-cache-status"] == "HIT"
    page.goto(console_url(stack, f"/console/zones/{VARIANT_ZONE_ID}/purge"))
    page.get_by_label("Items").fill("https://variants.example/variant")
    page.get_by_text("Cache-key headers (URLs only)").click()
    page.get_by_label("Headers that select one variant of each URL").fill("not a header line")
    page.get_by_role("button", name="Purge", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("Cache-key header lines look like")
    context.close()


def test_purge_errors_are_the_apis_and_change_nothing(browser: Browser, stack: Stack) -> None:
    token = stack.token((Permission.CACHE_PURGE,), [ZONE_ID])
    context, page = sign_in(browser, stack, token)
    page.goto(console_url(stack, f"/console/zones/{ZONE_ID}/purge"))
    before = len(zone_tasks(stack, ZONE_ID))
    page.get_by_label("Hostnames").check()
    page.get_by_label("Items").fill("elsewhere.example")
    page.get_by_role("button", name="Purge", exact=True).click()
    # The Cloudflare dialect's 1115 message for the same request.
    expect(page.get_by_role("alert")).to_have_text("Invalid host 'elsewhere.example'")
    page.get_by_label("URLs").check()
    page.get_by_label("Items").fill("")
    page.get_by_role("button", name="Purge", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("Enter at least one item")
    assert len(zone_tasks(stack, ZONE_ID)) == before
    context.close()


def test_tasks_page_filters_and_pages_with_who_purged_what(
    browser: Browser, stack: Stack, shots: Path
) -> None:
    api_token = stack.token((Permission.CACHE_PURGE,), [ZONE_ID])
    for i in range(30):
        body = json.dumps({"files": [f"http://test.example/page-{i}.html"]}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{stack.node.control_port}/client/v4/zones/{ZONE_ID}/purge_cache",
            data=body,
            headers={"Authorization": f"Bearer {api_token}", "Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=10).close()
    token = stack.token((Permission.ZONE_SETTINGS_READ,), [ZONE_ID])
    context, page = sign_in(browser, stack, token)
    page.goto(console_url(stack, f"/console/tasks?zone={ZONE_ID}&target=page-"))
    expect(page.get_by_role("status")).to_contain_text("1\u201325 of 30 tasks")
    first = page.locator("table.tasks tbody tr").first
    expect(first.locator("td").nth(1)).to_have_text("http://test.example/page-29.html")
    expect(first.locator("td").nth(5)).to_contain_text("test (token ")
    expect(first.locator("td").nth(6)).to_have_text("cloudflare")
    shot(page, shots, "tasks")
    page.get_by_role("link", name="Older →").click()
    expect(page.get_by_role("status")).to_contain_text("26\u201330 of 30 tasks")
    page.goto(console_url(stack, f"/console/tasks?zone={ZONE_ID}&type=purge_cache_tag&target=page-"))
    expect(page.get_by_role("status")).to_have_text("No tasks match.")
    page.goto(
        console_url(stack, f"/console/tasks?zone={ZONE_ID}&start=2026-01-02T00:00&end=2026-01-01T00:00")
    )
    expect(page.get_by_role("alert")).to_contain_text("start of the time range")
    context.close()


def test_live_charts_move_under_load(browser: Browser, stack: Stack, shots: Path) -> None:
    stack.origin.routes["/live-load"] = Route(body=b"x" * 2048)
    token = stack.token((Permission.ZONE_SETTINGS_READ,), [ZONE_ID])
    context, page = sign_in(browser, stack, token)
    page.get_by_role("link", name="Live").click()
    expect(page.locator("#live-state")).to_contain_text("Live", timeout=10_000)
    stop = threading.Event()

    purger = stack.token((Permission.CACHE_PURGE,), [ZONE_ID])

    def load() -> None:
        deadline = time.monotonic() + 20
        n = 0
        while not stop.is_set() and time.monotonic() < deadline:
            stack.request("/live-load")
            n += 1
            if n % 20 == 0:
                stack.request(f"/live-miss-{n}")  # the origin's uncacheable 404: origin latency
            if n % 2000 == 0:
                purge_tags(stack, purger, ["live-page"])

    worker = threading.Thread(target=load)
    worker.start()
    try:
        expect(page.locator("#v-rps")).not_to_have_text(re.compile("^(\u2013|0\\.0)$"), timeout=10_000)
        page.wait_for_function(
            "() => window.edgecacheLive.charts.status.data[1].some(v => v > 0)"
            " && window.edgecacheLive.charts.bytes.data[1].some(v => v > 0)",
            timeout=10_000,
        )
        before = page.evaluate("window.edgecacheLive.charts.status.data[0].length")
        # A few more seconds of samples: the chart keeps moving (and the screenshot shows a trend).
        page.wait_for_function(
            f"() => window.edgecacheLive.charts.status.data[0].length >= {before + 4}", timeout=10_000
        )
        assert page.locator("#v-hit").inner_text().endswith("%")
        assert page.locator("#v-objects").inner_text() not in ("\u2013", "0")
        shot(page, shots, "live")
    finally:
        stop.set()
        worker.join()
    context.close()


def test_a_cross_site_post_is_refused(browser: Browser, stack: Stack) -> None:
    token = stack.token((Permission.CACHE_PURGE,), [ZONE_ID])
    context, page = sign_in(browser, stack, token)
    target = console_url(stack, f"/console/zones/{ZONE_ID}/purge")
    csrf = "guessed-token"

    async def attacker_page(request: web.Request) -> web.Response:
        return web.Response(
            content_type="text/html",
            text=(
                f'<form id=f method=post action="{target}">'
                f'<input name=csrf value="{csrf}"><input name=kind value=everything>'
                '<input name=mode value=hard></form><script>document.getElementById("f").submit()</script>'
            ),
        )

    app = web.Application()
    app.router.add_get("/", attacker_page)
    runner = web.AppRunner(app, access_log=None)
    stack.run(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    stack.run(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    before = len(zone_tasks(stack, ZONE_ID))
    try:
        with page.expect_navigation(url=target):
            page.goto(f"http://127.0.0.1:{port}/")
        expect(page.get_by_role("alert")).to_contain_text("sent from another site")
        # Same origin but no valid CSRF token: refused too.
        page.goto(target)
        answer = page.request.post(target, form={"csrf": "wrong", "kind": "everything", "mode": "hard"})
        assert answer.status == 403
        assert len(zone_tasks(stack, ZONE_ID)) == before
    finally:
        stack.run(runner.cleanup())
    context.close()


def test_sign_out_ends_the_session_on_the_server(browser: Browser, stack: Stack, shots: Path) -> None:
    token = stack.token((Permission.CACHE_PURGE,), [ZONE_ID])
    context, page = sign_in(browser, stack, token, viewport=PHONE)
    page.goto(console_url(stack, f"/console/zones/{ZONE_ID}/purge"))
    shot(page, shots, "purge-phone")
    old = next(c for c in context.cookies() if c["name"] == "edgecache_console")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert not [c for c in context.cookies() if c["name"] == "edgecache_console"]
    # The old session id is dead on the server, not only forgotten by this browser.
    context.add_cookies([old])
    page.goto(console_url(stack))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    context.close()


def test_pages_work_from_the_keyboard(browser: Browser, stack: Stack) -> None:
    token = stack.token((Permission.CACHE_PURGE,), [ZONE_ID])
    context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    page = context.new_page()
    page.goto(console_url(stack))
    page.wait_for_function("document.activeElement.id === 'token'")  # focus on arrival
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Zones")).to_be_visible()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    context.close()


def reserve_objects(stack: Stack, count: int) -> tuple[int, int]:
    """Fill the test zone's Cache Reserve (it must be on) with ``count`` eligible objects; returns
    the reserve's (bytes, objects) once they are on disk."""
    for i in range(count):
        path = f"/reserve-{i}"
        stack.origin.routes[path] = Route(body=b"r" * (1000 + i), headers={"Cache-Control": "max-age=86400"})
        stack.request(path)
    disk = stack.node.disk
    assert disk is not None and disk.flush(10)
    return disk.reserve_usage(ZONE_ID)


def test_reserve_toggles_and_clears_with_live_progress(browser: Browser, stack: Stack, shots: Path) -> None:
    service = stack.node.cache_reserve
    token = stack.token((Permission.ZONE_SETTINGS_WRITE,), [ZONE_ID])
    context, page = sign_in(browser, stack, token)
    # zone_settings_write alone (no purge, no read): the zone is listed with only this page.
    card = page.locator("ul.zones li")
    expect(card).to_have_count(1)
    expect(card.get_by_role("link")).to_have_text(["Cache Reserve"])
    page.get_by_role("link", name="Cache Reserve").first.click()
    expect(page.get_by_role("heading", name="Cache Reserve")).to_be_visible()
    expect(page.locator("#reserve-value")).to_have_text("Off")
    expect(page.locator("#reserve-modified")).to_have_text("never changed")
    expect(page.get_by_role("status")).to_have_text("Never cleared.")

    page.get_by_role("button", name="Turn on").click()
    expect(page.locator("#reserve-value")).to_have_text("On")
    expect(page.locator("#reserve-modified")).to_contain_text("changed 20")
    assert service.is_on(ZONE_ID)
    stored_bytes, stored = reserve_objects(stack, 3)
    assert stored == 3

    # The API's rule and message: no clear while the reserve is on; nothing starts.
    page.get_by_role("button", name="Clear Cache Reserve").click()
    expect(page.get_by_role("alert")).to_have_text("Turn off Cache Reserve sync to proceed with deletion.")
    assert ZONE_ID not in service.clears()

    page.get_by_role("button", name="Turn off").click()
    expect(page.locator("#reserve-value")).to_have_text("Off")
    disk = stack.node.disk
    assert disk is not None
    gate = threading.Event()
    disk.run_job(lambda view: gate.wait(15))  # holds the writer: the clear stays in progress
    try:
        page.get_by_role("button", name="Clear Cache Reserve").click()
        expect(page.locator("#clear-state")).to_have_text("In-progress")
        expect(page.get_by_role("status")).to_contain_text("Clearing")
        shot(page, shots, "reserve-clearing")
        # Enabling during a clear: the API's 1153 message, and the reserve stays off.
        page.get_by_role("button", name="Turn on").click()
        expect(page.get_by_role("alert")).to_have_text(
            "Cache Reserve cannot be enabled because a deletion is already in progress."
        )
        assert not service.is_on(ZONE_ID)
        expect(page.locator("#clear-state")).to_have_text("In-progress")
    finally:
        gate.set()
    # The page was not reloaded: the progress fragment updates itself until Completed.
    expect(page.locator("#clear-state")).to_have_text("Completed", timeout=15_000)
    expect(page.locator("#clear-objects")).to_have_text("3")
    expect(page.locator("#clear-bytes")).to_have_attribute("title", f"{stored_bytes:,} bytes")
    assert disk.reserve_usage(ZONE_ID) == (0, 0)
    page.goto(console_url(stack, f"/console/zones/{ZONE_ID}/reserve"))
    expect(page.get_by_role("status")).to_have_text("Completed.")
    shot(page, shots, "reserve")
    context.close()


def test_a_read_only_token_sees_the_reserve_without_buttons_and_cannot_post(
    browser: Browser, stack: Stack, shots: Path
) -> None:
    service = stack.node.cache_reserve
    token = stack.token((Permission.ZONE_SETTINGS_READ,), [ZONE_ID])
    context, page = sign_in(browser, stack, token, viewport=PHONE)
    page.get_by_role("link", name="Cache Reserve").first.click()
    expect(page.locator("#reserve-value")).to_have_text("Off")
    expect(page.locator("main").get_by_role("button")).to_have_count(0)
    shot(page, shots, "reserve-readonly-phone")
    # A forged POST with this session's own CSRF token (from the sign-out form) is refused.
    csrf = page.locator("input[name=csrf]").first.get_attribute("value") or ""
    origin = console_url(stack, "").rstrip("/")
    before = service.clears().get(ZONE_ID)
    for path, form in (("reserve", {"value": "on"}), ("reserve/clear", {})):
        answer = page.request.post(
            console_url(stack, f"/console/zones/{ZONE_ID}/{path}"),
            form={"csrf": csrf, **form},
            headers={"Origin": origin},
        )
        assert answer.status == 403
        assert "may view Cache Reserve on this zone but not change it" in answer.text()
    assert not service.is_on(ZONE_ID)
    assert service.clears().get(ZONE_ID) == before
    # A token without either permission has no such page and no link to it.
    purger = stack.token((Permission.CACHE_PURGE,), [ZONE_ID])
    other, page = sign_in(browser, stack, purger)
    expect(page.get_by_role("link", name="Cache Reserve")).to_have_count(0)
    response = page.goto(console_url(stack, f"/console/zones/{ZONE_ID}/reserve"))
    assert response is not None and response.status == 404
    other.close()
    context.close()


def test_reserve_forms_without_the_csrf_token_are_refused(browser: Browser, stack: Stack) -> None:
    service = stack.node.cache_reserve
    token = stack.token((Permission.ZONE_SETTINGS_READ, Permission.ZONE_SETTINGS_WRITE), [ZONE_ID])
    context, page = sign_in(browser, stack, token)
    target = console_url(stack, f"/console/zones/{ZONE_ID}/reserve")
    page.goto(target)
    before = service.setting(ZONE_ID)
    for form in ({"value": "on"}, {"csrf": "guessed", "value": "on"}):
        answer = page.request.post(target, form=form)
        assert answer.status == 403
    assert service.setting(ZONE_ID) == before
    answer = page.request.post(target + "/clear", form={"csrf": "guessed"})
    assert answer.status == 403
    # The form's own token works, and a value the API refuses gets the API's message.
    csrf = page.locator("input[name=csrf]").first.get_attribute("value") or ""
    answer = page.request.post(target, form={"csrf": csrf, "value": "maybe"})
    assert answer.status == 400
    message = 'Invalid value for zone setting cache_reserve: "value" must be "on" or "off"'
    assert message in html.unescape(answer.text())
    assert service.setting(ZONE_ID) == before
    context.close()


def test_queues_show_backlog_pause_and_purge_with_progress(
    browser: Browser, stack: Stack, shots: Path
) -> None:
    service = stack.node.queues
    queue = stack.run(service.create_queue(DEFAULT_ACCOUNT_ID, "console-orders")).row
    stack.run(service.create_queue(DEFAULT_ACCOUNT_ID, "console-emails"))
    messages = [Message(f"order {i}".encode(), "text") for i in range(40)]
    stack.run(service.push(DEFAULT_ACCOUNT_ID, queue.id, messages))
    token = stack.token((Permission.QUEUES_READ, Permission.QUEUES_WRITE))
    context, page = sign_in(browser, stack, token)
    page.get_by_role("link", name="Queues").click()
    expect(page.get_by_role("heading", name="Queues")).to_be_visible()
    row = page.locator("table.queues tbody tr", has_text="console-orders")
    expect(row.locator("td").nth(1)).to_have_text("delivering")
    expect(row.locator("td").nth(2)).to_have_text("40")
    empty = page.locator("table.queues tbody tr", has_text="console-emails")
    expect(empty.locator("td").nth(2)).to_have_text("0")
    shot(page, shots, "queues")
    row.get_by_role("link", name="console-orders").click()
    expect(page.get_by_role("heading", name="Queue console-orders")).to_be_visible()
    expect(page.locator("#queue-backlog")).to_have_text("40")

    page.get_by_role("button", name="Pause delivery").click()
    expect(page.locator("#queue-delivery")).to_have_text("Paused")
    assert stack.run(service.get_queue(DEFAULT_ACCOUNT_ID, queue.id)).row.delivery_paused
    page.get_by_role("button", name="Resume delivery").click()
    expect(page.locator("#queue-delivery")).to_have_text("Delivering")
    assert not stack.run(service.get_queue(DEFAULT_ACCOUNT_ID, queue.id)).row.delivery_paused

    # Unconfirmed: the API's message, nothing purged.
    page.get_by_role("button", name="Purge queue").click()
    expect(page.get_by_role("alert")).to_contain_text("A purge deletes every message for good")
    expect(page.locator("#queue-backlog")).to_have_text("40")
    page.get_by_label("Delete every message for good").check()
    page.get_by_role("button", name="Purge queue").click()
    # The page is not reloaded: the fragment follows the purge until it completes.
    expect(page.locator("#queue-purge-state")).to_have_text("completed", timeout=15_000)
    expect(page.get_by_role("status")).to_have_text("Purge completed.")
    expect(page.locator("#queue-backlog")).to_have_text("0")
    assert stack.run(service.backlog(DEFAULT_ACCOUNT_ID, queue.id)).count == 0
    shot(page, shots, "queue")
    context.close()


def test_a_queues_read_token_sees_no_buttons_and_cannot_post(browser: Browser, stack: Stack) -> None:
    service = stack.node.queues
    queue = stack.run(service.create_queue(DEFAULT_ACCOUNT_ID, "console-readonly")).row
    stack.run(service.push(DEFAULT_ACCOUNT_ID, queue.id, [Message(b"keep", "text")]))
    token = stack.token((Permission.QUEUES_READ,))
    context, page = sign_in(browser, stack, token)
    page.goto(console_url(stack, f"/console/queues/{queue.id}"))
    expect(page.locator("#queue-backlog")).to_have_text("1")
    expect(page.locator("main").get_by_role("button")).to_have_count(0)
    csrf = page.locator("input[name=csrf]").first.get_attribute("value") or ""
    origin = console_url(stack, "").rstrip("/")
    for path, form in (("delivery", {"paused": "true"}), ("purge", {"delete_messages_permanently": "true"})):
        answer = page.request.post(
            console_url(stack, f"/console/queues/{queue.id}/{path}"),
            form={"csrf": csrf, **form},
            headers={"Origin": origin},
        )
        assert answer.status == 403
    # And without the CSRF token, a token that may write is refused too.
    writer, page = sign_in(browser, stack, stack.token((Permission.QUEUES_WRITE,)))
    answer = page.request.post(
        console_url(stack, f"/console/queues/{queue.id}/purge"), form={"delete_messages_permanently": "true"}
    )
    assert answer.status == 403
    after = stack.run(service.get_queue(DEFAULT_ACCOUNT_ID, queue.id)).row
    assert not after.delivery_paused and after.purge_started_at is None
    assert stack.run(service.backlog(DEFAULT_ACCOUNT_ID, queue.id)).count == 1
    # A token without queue permissions has no Queues link and no page.
    other, page = sign_in(browser, stack, stack.token((Permission.CACHE_PURGE,)))
    expect(page.get_by_role("link", name="Queues")).to_have_count(0)
    response = page.goto(console_url(stack, "/console/queues"))
    assert response is not None and response.status == 404
    for c in (other, writer, context):
        c.close()
