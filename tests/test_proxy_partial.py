"""End to end: partial responses (206) are stored, answered from, combined and purged
(RFC 9111 §3.3, §3.4), through an origin that honours Range."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import cloudflare
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ZONE_ID, Route, Stack
from edgecache.config import DiskStorage, Storage
from edgecache.httpcache.dates import format_http_date
from edgecache.store.partial import MAX_PARTS, PARTIAL_SUFFIX, PartialEntry

BODY = bytes(range(256)) * 40
"""10240 bytes, each position recognisable."""
ETAG = '"v1"'


def media(path: str, stack: Stack, **route: object) -> None:
    headers = {"Cache-Control": "public, max-age=600", "ETag": ETAG, "Content-Type": "video/mp4"}
    headers.update(route.pop("headers", {}))  # type: ignore[call-overload]
    stack.origin.routes[path] = Route(body=BODY, ranges=True, headers=headers, **route)  # type: ignore[arg-type]


def get(stack: Stack, path: str, rng: str | None = None, **headers: str) -> tuple[int, dict[str, str], bytes]:
    if rng is not None:
        headers["Range"] = rng
    return stack.request(path, headers=headers)


def forwarded_ranges(stack: Stack, path: str) -> list[str | None]:
    return [h.get("Range") for _, p, h, _ in stack.origin.requests if p == path]


def partial(stack: Stack, path: str) -> PartialEntry | None:
    entry = stack.call(lambda: stack.node.store.peek(f"http://test.example{path}{PARTIAL_SUFFIX}"))
    assert entry is None or isinstance(entry, PartialEntry)
    return entry


@pytest.fixture(scope="module")
def cf(stack: Stack) -> Iterator[cloudflare.Cloudflare]:
    client = cloudflare.Cloudflare(
        api_token=stack.token(),
        base_url=f"http://127.0.0.1:{stack.node.control_port}/client/v4",
        max_retries=0,
    )
    yield client
    client.close()


def test_a_range_miss_forwards_the_range_then_later_ranges_inside_it_are_hits(stack: Stack) -> None:
    media("/p/basic", stack)
    status, headers, body = get(stack, "/p/basic", "bytes=1000-2999")
    assert (status, headers["content-range"], body) == (206, "bytes 1000-2999/10240", BODY[1000:3000])
    assert headers["cf-cache-status"] == "MISS"
    assert "stored" in headers["cache-status"]
    for rng, first, last in [
        ("bytes=1000-2999", 1000, 2999),
        ("bytes=1500-1599", 1500, 1599),
        ("bytes=2000-", None, None),
    ]:
        status, headers, body = get(stack, "/p/basic", rng)
        if first is None:
            # Not held (the end of the object): fetched, not served from the parts.
            assert (status, headers["cf-cache-status"]) == (206, "MISS")
            continue
        assert (status, headers["cf-cache-status"], body) == (206, "HIT", BODY[first : last + 1])
        assert headers["content-range"] == f"bytes {first}-{last}/10240"
        assert headers["content-type"] == "video/mp4"
        assert headers["etag"] == ETAG
        assert int(headers["content-length"]) == last - first + 1
    assert forwarded_ranges(stack, "/p/basic") == ["bytes=1000-2999", "bytes=2000-"]


def test_parts_are_combined_and_a_range_across_them_is_a_hit(stack: Stack) -> None:
    media("/p/join", stack)
    get(stack, "/p/join", "bytes=0-999")
    get(stack, "/p/join", "bytes=3000-3999")
    get(stack, "/p/join", "bytes=500-3499")  # overlaps both: after it, 0-3999 is held
    held = partial(stack, "/p/join")
    assert held is not None and held.held == 4000 and held.covers([(0, 3999)])
    status, headers, body = get(stack, "/p/join", "bytes=100-3899")
    assert (status, headers["cf-cache-status"], body) == (206, "HIT", BODY[100:3900])
    assert stack.origin.hits["/p/join"] == 3


def test_a_multipart_answer_from_the_parts(stack: Stack) -> None:
    media("/p/multi", stack)
    get(stack, "/p/multi", "bytes=0-99")
    get(stack, "/p/multi", "bytes=5000-5099")
    status, headers, body = get(stack, "/p/multi", "bytes=10-19, 5050-5059")
    assert (status, headers["cf-cache-status"]) == (206, "HIT")
    assert headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert b"Content-Range: bytes 10-19/10240" in body and BODY[10:20] in body
    assert b"Content-Range: bytes 5050-5059/10240" in body and BODY[5050:5060] in body
    assert b"Content-Type: video/mp4" in body
    assert stack.origin.hits["/p/multi"] == 2


def test_a_suffix_range_and_an_unsatisfiable_one_from_the_parts(stack: Stack) -> None:
    media("/p/suffix", stack)
    get(stack, "/p/suffix", "bytes=-1000")
    status, headers, body = get(stack, "/p/suffix", "bytes=-100")
    assert (status, headers["cf-cache-status"], body) == (206, "HIT", BODY[-100:])
    assert headers["content-range"] == "bytes 10140-10239/10240"
    status, headers, _ = get(stack, "/p/suffix", "bytes=20000-")
    assert (status, headers["content-range"], headers["cf-cache-status"]) == (416, "bytes */10240", "HIT")
    assert stack.origin.hits["/p/suffix"] == 1


def test_parts_that_complete_the_object_become_a_full_entry(stack: Stack) -> None:
    media("/p/whole", stack)
    get(stack, "/p/whole", "bytes=0-4999")
    get(stack, "/p/whole", "bytes=5000-")
    assert partial(stack, "/p/whole") is None
    status, headers, body = get(stack, "/p/whole")
    assert (status, headers["cf-cache-status"], body) == (200, "HIT", BODY)
    assert "content-range" not in headers
    assert headers["etag"] == ETAG
    status, headers, body = get(stack, "/p/whole", "bytes=9000-9009")
    assert (status, headers["cf-cache-status"], body) == (206, "HIT", BODY[9000:9010])
    assert stack.origin.hits["/p/whole"] == 2


def test_a_plain_get_fetches_the_whole_object_which_replaces_the_parts(stack: Stack) -> None:
    media("/p/plain", stack)
    get(stack, "/p/plain", "bytes=0-99")
    status, headers, body = get(stack, "/p/plain")
    assert (status, headers["cf-cache-status"], body) == (200, "MISS", BODY)
    assert forwarded_ranges(stack, "/p/plain") == ["bytes=0-99", None]
    assert partial(stack, "/p/plain") is None
    assert get(stack, "/p/plain", "bytes=0-99")[1]["cf-cache-status"] == "HIT"


def test_a_new_validator_replaces_the_parts_instead_of_combining(stack: Stack) -> None:
    media("/p/changed", stack)
    get(stack, "/p/changed", "bytes=0-999")
    new_body = bytes(reversed(BODY))
    stack.origin.routes["/p/changed"] = Route(
        body=new_body, ranges=True, headers={"Cache-Control": "public, max-age=600", "ETag": '"v2"'}
    )
    status, headers, body = get(stack, "/p/changed", "bytes=1000-1999")
    assert (status, body, headers["etag"]) == (206, new_body[1000:2000], '"v2"')
    held = partial(stack, "/p/changed")
    assert held is not None and [(s, len(d)) for s, d in held.parts] == [(1000, 1000)]
    status, headers, body = get(stack, "/p/changed", "bytes=0-1999")
    assert (headers["cf-cache-status"], body) == ("MISS", new_body[:2000])


@pytest.mark.parametrize(
    "validators",
    [{"ETag": 'W/"weak"'}, {"Last-Modified": "now"}, {}],
    ids=["weak-etag", "last-modified-within-a-minute-of-date", "none"],
)
def test_parts_without_a_strong_validator_are_never_combined(
    stack: Stack, validators: dict[str, str]
) -> None:
    path = "/p/weak/" + "-".join(validators)
    # "now" is read here, not at collection: a Last-Modified within 60 s of Date is not strong.
    now = format_http_date(time.time())
    headers = {
        "Cache-Control": "public, max-age=600",
        **{k: now if v == "now" else v for k, v in validators.items()},
    }
    stack.origin.routes[path] = Route(body=BODY, ranges=True, headers=headers)
    get(stack, path, "bytes=0-999")
    get(stack, path, "bytes=1000-1999")
    held = partial(stack, path)
    assert held is not None and [(s, len(d)) for s, d in held.parts] == [(1000, 1000)]
    assert get(stack, path, "bytes=1200-1299")[1]["cf-cache-status"] == "HIT"
    assert get(stack, path, "bytes=0-99")[1]["cf-cache-status"] == "MISS"


def test_a_last_modified_well_before_the_date_is_a_strong_validator(stack: Stack) -> None:
    path = "/p/lm"
    stack.origin.routes[path] = Route(
        body=BODY,
        ranges=True,
        headers={"Cache-Control": "public, max-age=600", "Last-Modified": "Sun, 06 Nov 1994 08:49:37 GMT"},
    )
    get(stack, path, "bytes=0-999")
    get(stack, path, "bytes=1000-1999")
    assert get(stack, path, "bytes=0-1999")[1]["cf-cache-status"] == "HIT"


def test_if_range_that_does_not_match_the_parts_goes_to_the_origin(stack: Stack) -> None:
    media("/p/ifrange", stack)
    get(stack, "/p/ifrange", "bytes=0-999")
    status, headers, _ = get(stack, "/p/ifrange", "bytes=0-99", **{"If-Range": ETAG})
    assert (status, headers["cf-cache-status"]) == (206, "HIT")
    status, headers, body = get(stack, "/p/ifrange", "bytes=0-99", **{"If-Range": '"old"'})
    assert (status, body) == (200, BODY)
    assert stack.origin.requests[-1][2].get("If-Range") == '"old"'


def test_a_conditional_range_request_on_the_parts_is_a_304(stack: Stack) -> None:
    media("/p/cond", stack)
    get(stack, "/p/cond", "bytes=0-999")
    status, headers, body = get(stack, "/p/cond", "bytes=0-99", **{"If-None-Match": ETAG})
    assert (status, body, headers["cf-cache-status"]) == (304, b"", "HIT")


def test_a_206_that_may_not_be_stored_is_relayed_only(stack: Stack) -> None:
    media("/p/private", stack, headers={"Cache-Control": "private"})
    assert get(stack, "/p/private", "bytes=0-9")[1]["cf-cache-status"] == "BYPASS"
    status, headers, body = get(stack, "/p/private", "bytes=0-9")
    assert (status, headers["cf-cache-status"], body) == (206, "BYPASS", BODY[:10])
    assert partial(stack, "/p/private") is None


def test_an_origin_that_ignores_range_fills_the_full_entry(stack: Stack) -> None:
    stack.origin.routes["/p/noranges"] = Route(body=BODY)
    status, headers, body = get(stack, "/p/noranges", "bytes=0-9")
    assert (status, body) == (200, BODY)
    status, headers, body = get(stack, "/p/noranges", "bytes=0-9")
    assert (status, headers["cf-cache-status"], body) == (206, "HIT", BODY[:10])


def test_several_ranges_on_a_miss_fetch_the_whole_object(stack: Stack) -> None:
    media("/p/several", stack)
    status, _, body = get(stack, "/p/several", "bytes=0-9, 20-29")
    assert (status, body) == (200, BODY)
    assert forwarded_ranges(stack, "/p/several") == [None]
    assert get(stack, "/p/several", "bytes=0-9, 20-29")[1]["cf-cache-status"] == "HIT"


def test_parts_are_charged_to_the_budget_and_refunded(stack: Stack) -> None:
    media("/p/budget", stack)
    before = stack.call(lambda: stack.node.store.bytes_used)
    get(stack, "/p/budget", "bytes=0-2999")
    after_one = stack.call(lambda: stack.node.store.bytes_used)
    assert after_one - before >= 3000
    get(stack, "/p/budget", "bytes=5000-6999")
    after_two = stack.call(lambda: stack.node.store.bytes_used)
    assert after_two - after_one >= 2000
    stack.request("/p/budget", method="POST", body=b"x")
    assert partial(stack, "/p/budget") is None
    assert stack.call(lambda: stack.node.store.bytes_used) == before


def test_purges_cover_partial_entries(stack: Stack, cf: cloudflare.Cloudflare) -> None:
    for path in ("/p/purge/url", "/p/purge/tag", "/p/purge/prefix/a"):
        media(path, stack, headers={"Cache-Tag": "clip"} if path.endswith("tag") else {})
        get(stack, path, "bytes=0-999")
        assert get(stack, path, "bytes=0-99")[1]["cf-cache-status"] == "HIT"
    cf.cache.purge(zone_id=ZONE_ID, files=["http://test.example/p/purge/url"])
    assert get(stack, "/p/purge/url", "bytes=0-99")[1]["cf-cache-status"] == "MISS"
    cf.cache.purge(zone_id=ZONE_ID, tags=["clip"])
    assert get(stack, "/p/purge/tag", "bytes=0-99")[1]["cf-cache-status"] == "MISS"
    cf.cache.purge(zone_id=ZONE_ID, prefixes=["test.example/p/purge/prefix/"])
    stack.run(stack.node.reclaimer.drain())
    assert partial(stack, "/p/purge/prefix/a") is None
    assert get(stack, "/p/purge/prefix/a", "bytes=0-99")[1]["cf-cache-status"] == "MISS"


def test_concurrent_misses_on_one_range_share_one_origin_fetch(stack: Stack) -> None:
    media("/p/shared", stack, delay=0.3)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: get(stack, "/p/shared", "bytes=100-199"), range(4)))
    assert all(r[0] == 206 and r[2] == BODY[100:200] for r in results)
    assert stack.origin.hits["/p/shared"] == 1


def test_a_416_from_the_origin_is_not_stored_for_the_url(stack: Stack) -> None:
    media("/p/416", stack, headers={"Cache-Control": "public, max-age=600"})
    status, headers, _ = get(stack, "/p/416", "bytes=99999-")
    assert (status, headers["content-range"]) == (416, "bytes */10240")
    status, headers, body = get(stack, "/p/416")
    assert (status, headers["cf-cache-status"], body) == (200, "MISS", BODY)


def test_a_soft_purge_makes_the_parts_stale_and_they_are_not_combined_again(
    stack: Stack, cf: cloudflare.Cloudflare
) -> None:
    media("/p/soft", stack, headers={"Cache-Tag": "softclip"})
    get(stack, "/p/soft", "bytes=0-999")
    cf.cache.invalidate(zone_id=ZONE_ID, tags=["softclip"])
    status, headers, body = get(stack, "/p/soft", "bytes=0-99")
    assert (status, headers["cf-cache-status"], body) == (206, "MISS", BODY[:100])
    held = partial(stack, "/p/soft")
    assert held is not None and [(s, len(d)) for s, d in held.parts] == [(0, 100)]
    assert get(stack, "/p/soft", "bytes=0-99")[1]["cf-cache-status"] == "HIT"
    assert get(stack, "/p/soft", "bytes=100-199")[1]["cf-cache-status"] == "MISS"


def test_parts_are_kept_per_variant_when_the_origin_varies(stack: Stack) -> None:
    media("/p/vary", stack, headers={"Vary": "Accept-Encoding"})
    get(stack, "/p/vary", "bytes=0-99", **{"Accept-Encoding": "gzip"})
    assert get(stack, "/p/vary", "bytes=0-9", **{"Accept-Encoding": "gzip"})[1]["cf-cache-status"] == "HIT"
    assert get(stack, "/p/vary", "bytes=0-9", **{"Accept-Encoding": "br"})[1]["cf-cache-status"] == "MISS"
    assert get(stack, "/p/vary", "bytes=0-9", **{"Accept-Encoding": "br"})[1]["cf-cache-status"] == "HIT"
    stack.request("/p/vary", method="PUT", body=b"x")
    assert get(stack, "/p/vary", "bytes=0-9", **{"Accept-Encoding": "gzip"})[1]["cf-cache-status"] == "MISS"


@pytest.fixture(scope="module")
def small() -> Iterator[Stack]:
    """A node without a disk tier whose objects may hold 4096 bytes: BODY (10240 bytes) is never
    stored whole (with a disk it would be, in chunks: tests/test_disk_large.py)."""
    s = Stack(storage=Storage(max_object_bytes=4096, disk=DiskStorage(enabled=False)))
    try:
        yield s
    finally:
        s.close()


def test_an_object_over_the_size_limit_is_still_cached_in_parts(small: Stack) -> None:
    media("/big", small)
    status, headers, _ = get(small, "/big")
    assert (status, headers["cf-cache-status"]) == (200, "BYPASS")
    for rng in ("bytes=0-1999", "bytes=2000-3999"):
        get(small, "/big", rng)
    status, headers, body = get(small, "/big", "bytes=1000-3999")
    assert (status, headers["cf-cache-status"], body) == (206, "HIT", BODY[1000:4000])
    # Held: 4000 bytes. One more part would pass the limit: relayed, not combined; the first stay.
    status, headers, body = get(small, "/big", "bytes=4000-4999")
    assert (status, body) == (206, BODY[4000:5000])
    assert get(small, "/big", "bytes=4000-4099")[1]["cf-cache-status"] == "MISS"
    assert get(small, "/big", "bytes=0-99")[1]["cf-cache-status"] == "HIT"
    held = partial(small, "/big")
    assert held is not None and held.held == 4000
    # A single range above the limit streams through unstored.
    status, headers, body = get(small, "/big", "bytes=5000-")
    assert (status, headers["cf-cache-status"], body) == (206, "BYPASS", BODY[5000:])


range_values = st.one_of(
    st.from_regex(r"bytes=([0-9]{0,6}-[0-9]{0,6})(, ?[0-9]{0,6}-[0-9]{0,6}){0,3}", fullmatch=True),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=range_values)
def test_any_range_field_on_parts_is_answered_without_a_5xx(stack: Stack, value: str) -> None:
    if "/p/fuzz" not in stack.origin.routes:
        media("/p/fuzz", stack)
        get(stack, "/p/fuzz", "bytes=1000-5999")
    status, headers, body = get(stack, "/p/fuzz", value)
    assert status in (200, 206, 416)
    if status == 200:
        assert body == BODY
    elif status == 206 and "content-range" in headers:
        first, last = map(int, headers["content-range"].split()[1].split("/")[0].split("-"))
        assert body == BODY[first : last + 1]


def test_scattered_ranges_stop_being_combined_at_the_part_limit(stack: Stack) -> None:
    media("/p/scatter", stack)
    conn = http.client.HTTPConnection("127.0.0.1", stack.node.data_port, timeout=20)
    try:
        for i in range(MAX_PARTS + 1):
            conn.request(
                "GET", "/p/scatter", headers={"Host": "test.example", "Range": f"bytes={2 * i}-{2 * i}"}
            )
            assert conn.getresponse().read() == BODY[2 * i : 2 * i + 1]
    finally:
        conn.close()
    held = partial(stack, "/p/scatter")
    assert held is not None and len(held.parts) == MAX_PARTS
    assert get(stack, "/p/scatter", "bytes=0-0")[1]["cf-cache-status"] == "HIT"
    assert get(stack, "/p/scatter", f"bytes={2 * MAX_PARTS}-{2 * MAX_PARTS}")[1]["cf-cache-status"] == "MISS"
