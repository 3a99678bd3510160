"""End-to-end behaviour of the shared cache (RFC 9111) through a real origin on loopback."""

from __future__ import annotations

import time
from email.utils import formatdate

import cloudflare
import pytest

from conftest import ZONE_ID, Route, Stack


def test_get_is_stored_and_then_served_as_hit(stack: Stack) -> None:
    stack.origin.routes["/basic"] = Route(body=b"basic body")
    s1, h1, b1 = stack.request("/basic")
    s2, h2, b2 = stack.request("/basic")
    assert (s1, b1, h1["cf-cache-status"]) == (200, b"basic body", "MISS")
    assert (s2, b2, h2["cf-cache-status"]) == (200, b"basic body", "HIT")
    assert h1["cache-status"].startswith("edgecache; fwd=uri-miss")
    assert "stored" in h1["cache-status"]
    assert h2["cache-status"].startswith("edgecache; hit; ttl=")
    assert h2["content-length"] == "10"
    assert stack.origin.hits["/basic"] == 1


def test_head_is_answered_from_the_cached_get(stack: Stack) -> None:
    stack.origin.routes["/head"] = Route(body=b"0123456789")
    s1, h1, b1 = stack.request("/head", method="HEAD")
    s2, h2, b2 = stack.request("/head")
    s3, h3, b3 = stack.request("/head", method="HEAD")
    assert (s1, b1, h1["content-length"]) == (200, b"", "10")
    assert s2 == s3 == 200
    assert (h2["cf-cache-status"], b2) == ("HIT", b"0123456789")
    assert (h3["cf-cache-status"], b3, h3["content-length"]) == ("HIT", b"", "10")
    assert [m for m, p, _, _ in stack.origin.requests if p == "/head"] == ["GET"]


def test_successful_post_passes_through_and_invalidates_the_url(stack: Stack) -> None:
    stack.origin.routes["/item"] = Route(body=b"v1")
    stack.request("/item")
    assert stack.request("/item")[1]["cf-cache-status"] == "HIT"
    status, headers, _ = stack.request("/item", method="POST", body=b"new=1")
    assert status == 200 and headers["cf-cache-status"] == "DYNAMIC"
    method, _, _, body = stack.origin.requests[-1]
    assert (method, body) == ("POST", b"new=1")
    assert stack.request("/item")[1]["cf-cache-status"] == "MISS"


def test_successful_post_also_invalidates_same_host_location(stack: Stack) -> None:
    for path in ("/loc/created", "/loc/other", "/loc/elsewhere"):
        stack.origin.routes[path] = Route()
        stack.request(path)
    stack.origin.routes["/loc/form"] = Route(
        status=201,
        headers={"Location": "/loc/created", "Content-Location": "http://test.example/loc/other"},
    )
    stack.request("/loc/form", method="POST", body=b"x")
    assert stack.request("/loc/created")[1]["cf-cache-status"] == "MISS"
    assert stack.request("/loc/other")[1]["cf-cache-status"] == "MISS"
    assert stack.request("/loc/elsewhere")[1]["cf-cache-status"] == "HIT"
    stack.origin.routes["/loc/form2"] = Route(headers={"Location": "http://other.example/loc/elsewhere"})
    stack.request("/loc/form2", method="PUT", body=b"x")
    assert stack.request("/loc/elsewhere")[1]["cf-cache-status"] == "HIT"  # another host: untouched


def test_failed_post_does_not_invalidate(stack: Stack) -> None:
    stack.origin.routes["/keep"] = Route(body=b"v1")
    stack.request("/keep")
    stack.origin.routes["/keep"] = Route(status=500, body=b"boom", headers={})
    assert stack.request("/keep", method="POST", body=b"x")[0] == 500
    stack.origin.routes["/keep"] = Route(body=b"v1")
    assert stack.request("/keep")[1]["cf-cache-status"] == "HIT"


def test_s_maxage_overrides_max_age_for_the_shared_cache(stack: Stack) -> None:
    stack.origin.routes["/smax"] = Route(headers={"Cache-Control": "max-age=0, s-maxage=60"})
    stack.request("/smax")
    assert stack.request("/smax")[1]["cf-cache-status"] == "HIT"


def test_cdn_cache_control_takes_precedence_and_is_not_forwarded(stack: Stack) -> None:
    stack.origin.routes["/cdn"] = Route(
        headers={"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=60"}
    )
    stack.request("/cdn")
    _, headers, _ = stack.request("/cdn")
    assert headers["cf-cache-status"] == "HIT"
    assert headers["cache-control"] == "no-store"
    assert "cdn-cache-control" not in headers


def test_expires_gives_freshness_and_a_past_expires_does_not(stack: Stack) -> None:
    now = time.time()
    stack.origin.routes["/exp"] = Route(
        headers={"Date": formatdate(now, usegmt=True), "Expires": formatdate(now + 60, usegmt=True)}
    )
    stack.request("/exp")
    assert stack.request("/exp")[1]["cf-cache-status"] == "HIT"
    stack.origin.routes["/expired"] = Route(
        headers={"Date": formatdate(now, usegmt=True), "Expires": formatdate(now - 60, usegmt=True)}
    )
    stack.request("/expired")
    assert stack.request("/expired")[1]["cf-cache-status"] != "HIT"
    assert stack.origin.hits["/expired"] == 2


def test_last_modified_heuristic_freshness(stack: Stack) -> None:
    stack.origin.routes["/heur"] = Route(
        headers={"Last-Modified": formatdate(time.time() - 10 * 86400, usegmt=True)}
    )
    stack.request("/heur")
    assert stack.request("/heur")[1]["cf-cache-status"] == "HIT"


def test_no_store_and_private_are_never_stored(stack: Stack) -> None:
    for path, cc in (("/nostore", "no-store"), ("/private", "private, max-age=60")):
        stack.origin.routes[path] = Route(headers={"Cache-Control": cc})
        assert stack.request(path)[1]["cf-cache-status"] == "BYPASS"
        assert stack.request(path)[1]["cf-cache-status"] == "BYPASS"
        assert stack.origin.hits[path] == 2


def test_set_cookie_responses_are_not_stored(stack: Stack) -> None:
    stack.origin.routes["/cookie"] = Route(
        headers={"Cache-Control": "public, max-age=60", "Set-Cookie": "s=1"}
    )
    stack.request("/cookie")
    _, headers, _ = stack.request("/cookie")
    assert headers["cf-cache-status"] == "BYPASS"
    assert stack.origin.hits["/cookie"] == 2


def test_no_cache_is_stored_but_revalidated_on_every_use(stack: Stack) -> None:
    stack.origin.routes["/nocache"] = Route(headers={"Cache-Control": "no-cache", "ETag": '"v1"'})
    assert stack.request("/nocache")[1]["cf-cache-status"] == "MISS"
    status, headers, body = stack.request("/nocache")
    assert (status, body, headers["cf-cache-status"]) == (200, b"hello", "REVALIDATED")
    assert stack.origin.requests[-1][2].get("If-None-Match") == '"v1"'


def test_requests_with_authorization(stack: Stack) -> None:
    stack.origin.routes["/auth"] = Route(headers={"Cache-Control": "max-age=60"})
    stack.request("/auth", headers={"Authorization": "Bearer x"})
    stack.request("/auth", headers={"Authorization": "Bearer x"})
    assert stack.origin.hits["/auth"] == 2
    stack.origin.routes["/authpub"] = Route(headers={"Cache-Control": "public, max-age=60"})
    stack.request("/authpub", headers={"Authorization": "Bearer x"})
    assert stack.request("/authpub", headers={"Authorization": "Bearer y"})[1]["cf-cache-status"] == "HIT"


def test_vary_selects_variants_and_vary_star_is_not_stored(stack: Stack) -> None:
    stack.origin.routes["/vary"] = Route(headers={"Cache-Control": "max-age=60", "Vary": "Accept-Language"})
    assert stack.request("/vary", headers={"Accept-Language": "en"})[1]["cf-cache-status"] == "MISS"
    assert stack.request("/vary", headers={"Accept-Language": "fr"})[1]["cf-cache-status"] == "MISS"
    assert stack.request("/vary", headers={"Accept-Language": "en"})[1]["cf-cache-status"] == "HIT"
    assert stack.request("/vary", headers={"Accept-Language": "fr"})[1]["cf-cache-status"] == "HIT"
    assert stack.origin.hits["/vary"] == 2
    stack.origin.routes["/varystar"] = Route(headers={"Cache-Control": "max-age=60", "Vary": "*"})
    stack.request("/varystar")
    assert stack.request("/varystar")[1]["cf-cache-status"] != "HIT"


def test_the_variants_go_when_the_origin_drops_its_vary(stack: Stack) -> None:
    """A refill whose response no longer varies removes the variants the old Vary selected, and is
    stored where every later request finds it: one origin fetch serves both languages again."""
    en, fr = {"Accept-Language": "en"}, {"Accept-Language": "fr"}
    stack.origin.routes["/revary"] = Route(
        body=b"v1", headers={"Cache-Control": "max-age=1", "Vary": "Accept-Language"}
    )
    stack.request("/revary", headers=en)
    stack.request("/revary", headers=fr)
    assert stack.request("/revary", headers=fr)[1]["cf-cache-status"] == "HIT"
    stack.origin.routes["/revary"] = Route(body=b"v2", headers={"Cache-Control": "max-age=60"})
    time.sleep(1.1)
    assert stack.request("/revary", headers=en)[2] == b"v2"
    hits = stack.origin.hits["/revary"]
    for headers in (fr, en, {}):
        _, h, body = stack.request("/revary", headers=headers)
        assert (h["cf-cache-status"], body) == ("HIT", b"v2")
    assert stack.origin.hits["/revary"] == hits


def test_a_refill_that_drops_vary_is_found_on_disk_and_no_old_variant_is(fresh: Stack) -> None:
    """The origin drops Vary for a URL whose variants only the disk tier holds (memory emptied by a
    restart): the refill removes the variants and the Vary names from every tier, so once memory is
    empty again the disk answers every client with the refill, never with an old variant."""
    en, fr = {"Accept-Language": "en"}, {"Accept-Language": "fr"}
    fresh.origin.routes["/dropvary"] = Route(
        body=b"v1", headers={"Cache-Control": "max-age=1", "Vary": "Accept-Language"}
    )
    fresh.request("/dropvary", headers=en)
    fresh.request("/dropvary", headers=fr)
    assert fresh.node.disk is not None and fresh.node.disk.flush(10)
    fresh.restart()
    fresh.origin.routes["/dropvary"] = Route(body=b"v2", headers={"Cache-Control": "max-age=600"})
    time.sleep(1.1)
    assert fresh.request("/dropvary", headers=en)[2] == b"v2"
    assert fresh.node.disk is not None and fresh.node.disk.flush(10)
    fresh.restart()
    hits = fresh.origin.hits["/dropvary"]
    _, h, body = fresh.request("/dropvary", headers=fr)
    assert (h["cf-cache-status"], body) == ("HIT", b"v2")
    assert h["cache-status"].endswith("detail=disk")
    for headers in (en, {}):
        _, h, body = fresh.request("/dropvary", headers=headers)
        assert (h["cf-cache-status"], body) == ("HIT", b"v2")
    assert fresh.origin.hits["/dropvary"] == hits


def test_age_counts_the_origins_age(stack: Stack) -> None:
    stack.origin.routes["/aged"] = Route(headers={"Cache-Control": "max-age=600", "Age": "100"})
    stack.request("/aged")
    _, headers, _ = stack.request("/aged")
    assert 100 <= int(headers["age"]) < 110


def test_a_miss_shows_the_origins_age_and_its_own_status(stack: Stack) -> None:
    """The usual miss's status fields (``Proxy._forwarded_fields``, from ``_answer_fill``) show the
    origin's Age on the miss itself, and none when the origin sent none."""
    stack.origin.routes["/aged-miss"] = Route(headers={"Cache-Control": "max-age=600", "Age": "100"})
    _, headers, _ = stack.request("/aged-miss")
    assert headers["cf-cache-status"] == "MISS"
    assert 100 <= int(headers["age"]) < 110
    stack.origin.routes["/young-miss"] = Route(headers={"Cache-Control": "max-age=600"})
    _, headers, _ = stack.request("/young-miss")
    assert headers["cf-cache-status"] == "MISS" and "age" not in headers


def test_hit_fields_follow_the_clock_and_each_object(stack: Stack) -> None:
    """The plain hit's Age / ttl / Content-Length are formatted once per value and reused: a hit a
    second later still shows the newer Age and the shorter ttl, and two objects of different sizes
    hit in the same second each carry their own length."""
    stack.origin.routes["/clock/a"] = Route(body=b"a" * 10, headers={"Cache-Control": "max-age=600"})
    stack.origin.routes["/clock/b"] = Route(body=b"b" * 20, headers={"Cache-Control": "max-age=600"})
    stack.request("/clock/a")
    stack.request("/clock/b")

    def fields(path: str) -> tuple[int, int, int, bytes]:
        _, headers, body = stack.request(path)
        assert headers["cf-cache-status"] == "HIT"
        ttl = int(headers["cache-status"].rsplit("ttl=", 1)[1])
        return int(headers["age"]), ttl, int(headers["content-length"]), body

    age1, ttl1, len_a, body_a = fields("/clock/a")
    _, _, len_b, body_b = fields("/clock/b")
    assert (len_a, body_a, len_b, body_b) == (10, b"a" * 10, 20, b"b" * 20)
    time.sleep(1.1)
    age2, ttl2, _, _ = fields("/clock/a")
    assert age2 >= age1 + 1 and ttl2 <= ttl1 - 1
    assert age2 + ttl2 in (599, 600)


def test_age_is_never_negative_after_the_clock_steps_back(stack: Stack) -> None:
    """An entry fetched "in the future" (the wall clock stepped back since): its hits say Age: 0, on
    the first lookup and on the (Host, target) memo's path alike, and the ttl does not grow past the
    freshness lifetime by more than the step."""
    stack.origin.routes["/clock/back"] = Route(body=b"c" * 10, headers={"Cache-Control": "max-age=600"})
    stack.request("/clock/back")
    entry = stack.call(lambda: stack.node.store.peek("http://test.example/clock/back"))
    assert entry is not None
    entry.response_time += 2.5
    for _ in range(2):
        _, headers, body = stack.request("/clock/back")
        assert (headers["cf-cache-status"], headers["age"], body) == ("HIT", "0", b"c" * 10)
        assert int(headers["cache-status"].rsplit("ttl=", 1)[1]) <= 603


HOT_PATH_CASES = {
    # attribute set on the stored entry after its (Host, target) was memoised -> what the next plain GET gets
    "soft-purged": ("stale_since", lambda e: time.time() - 1, "REVALIDATED"),
    "no-cache": ("no_cache", lambda e: True, "REVALIDATED"),
    "expired": ("freshness_lifetime", lambda e: 0.0, "REVALIDATED"),
    "read-from-disk": ("tier", lambda e: b"disk", "HIT"),
}


@pytest.mark.parametrize("case", list(HOT_PATH_CASES))
def test_the_memo_path_leaves_what_it_cannot_answer_to_the_general_path(stack: Stack, case: str) -> None:
    """A plain GET whose (Host, target) was seen before is answered without the zone; an entry a soft
    purge marked stale, one that must be revalidated on every use, one that expired and one just read
    from a lower tier are not its to answer as they are."""
    path = f"/hot/{case}"
    stack.origin.routes[path] = Route(headers={"Cache-Control": "max-age=600", "ETag": f'"{case}"'})
    stack.request(path)
    assert stack.request(path)[1]["cf-cache-status"] == "HIT"
    entry = stack.call(lambda: stack.node.store.peek(f"http://test.example{path}"))
    assert entry is not None
    name, value, expected = HOT_PATH_CASES[case]
    setattr(entry, name, value(entry))
    fetched = stack.origin.hits[path]
    status, headers, body = stack.request(path)
    assert (status, body, headers["cf-cache-status"]) == (200, b"hello", expected)
    if expected == "REVALIDATED":
        assert stack.origin.hits[path] == fetched + 1
        assert stack.origin.requests[-1][2].get("If-None-Match") == f'"{case}"'
    else:
        assert headers["cache-status"].endswith("detail=disk")
        assert stack.origin.hits[path] == fetched


def test_revalidation_304_updates_the_stored_headers(stack: Stack) -> None:
    stack.origin.routes["/reval"] = Route(
        headers={"Cache-Control": "max-age=1", "ETag": '"e1"', "X-Version": "1"}
    )
    stack.request("/reval")
    time.sleep(1.2)
    stack.origin.routes["/reval"] = Route(
        body=b"must not be sent", headers={"Cache-Control": "max-age=60", "ETag": '"e1"', "X-Version": "2"}
    )
    status, headers, body = stack.request("/reval")
    assert (status, body, headers["cf-cache-status"]) == (200, b"hello", "REVALIDATED")
    assert headers["x-version"] == "2"
    _, headers, body = stack.request("/reval")
    assert (headers["cf-cache-status"], headers["x-version"], body) == ("HIT", "2", b"hello")


def test_expired_entry_replaced_by_a_new_response(stack: Stack) -> None:
    stack.origin.routes["/replace"] = Route(body=b"old", headers={"Cache-Control": "max-age=1"})
    stack.request("/replace")
    time.sleep(1.2)
    stack.origin.routes["/replace"] = Route(body=b"new", headers={"Cache-Control": "max-age=60"})
    _, headers, body = stack.request("/replace")
    assert (headers["cf-cache-status"], body) == ("EXPIRED", b"new")
    assert stack.request("/replace")[2] == b"new"


def test_client_conditionals_are_answered_from_cache(stack: Stack) -> None:
    stack.origin.routes["/cond"] = Route(headers={"Cache-Control": "max-age=60", "ETag": '"c1"'})
    stack.request("/cond")
    status, headers, body = stack.request("/cond", headers={"If-None-Match": '"c1"'})
    assert (status, body, headers["etag"]) == (304, b"", '"c1"')
    assert stack.request("/cond", headers={"If-None-Match": '"other"'})[0] == 200
    assert stack.origin.hits["/cond"] == 1


def test_range_requests_are_answered_from_the_cached_object(stack: Stack) -> None:
    stack.origin.routes["/range"] = Route(body=b"0123456789")
    stack.request("/range")
    status, headers, body = stack.request("/range", headers={"Range": "bytes=2-5"})
    assert (status, body, headers["content-range"]) == (206, b"2345", "bytes 2-5/10")
    status, headers, _ = stack.request("/range", headers={"Range": "bytes=50-60"})
    assert (status, headers["content-range"]) == (416, "bytes */10")
    assert stack.origin.hits["/range"] == 1


def test_stale_while_revalidate_answers_at_once_and_refreshes(stack: Stack) -> None:
    stack.origin.routes["/swr"] = Route(
        body=b"v1", headers={"Cache-Control": "max-age=1, stale-while-revalidate=30"}
    )
    stack.request("/swr")
    time.sleep(1.2)
    stack.origin.routes["/swr"] = Route(body=b"v2", delay=1.0, headers={"Cache-Control": "max-age=60"})
    started = time.monotonic()
    _, headers, body = stack.request("/swr")
    assert time.monotonic() - started < 0.5
    assert (headers["cf-cache-status"], body) == ("UPDATING", b"v1")
    time.sleep(1.3)
    _, headers, body = stack.request("/swr")
    assert (headers["cf-cache-status"], body) == ("HIT", b"v2")


def test_stale_if_error_serves_stale_when_the_origin_fails(stack: Stack) -> None:
    stack.origin.routes["/sie"] = Route(
        body=b"good", headers={"Cache-Control": "max-age=1, stale-if-error=60"}
    )
    stack.request("/sie")
    time.sleep(1.2)
    stack.origin.routes["/sie"] = Route(status=503, body=b"down", headers={})
    status, headers, body = stack.request("/sie")
    assert (status, body, headers["cf-cache-status"]) == (200, b"good", "STALE")


def test_must_revalidate_is_never_served_stale(stack: Stack) -> None:
    stack.origin.routes["/mr"] = Route(
        body=b"good", headers={"Cache-Control": "max-age=1, must-revalidate, stale-if-error=60"}
    )
    stack.request("/mr")
    time.sleep(1.2)
    stack.origin.routes["/mr"] = Route(status=503, body=b"down", headers={})
    status, _, body = stack.request("/mr")
    assert (status, body) == (503, b"down")


def test_origin_errors_give_clean_502_and_504(stack: Stack) -> None:
    stack.origin.routes["/timeout"] = Route(delay=3.0)
    status, headers, _ = stack.request("/timeout")
    assert status == 504 and headers["content-type"].startswith("text/plain")
    zone = stack.node.zones.by_id[ZONE_ID]
    original = zone.origin
    object.__setattr__(zone, "origin", "http://127.0.0.1:1")
    try:
        assert stack.request("/refused")[0] == 502
    finally:
        object.__setattr__(zone, "origin", original)


def test_unknown_host_is_refused(stack: Stack) -> None:
    assert stack.request("/", host="nobody.example")[0] == 421


def test_tags_and_hop_by_hop_fields_never_reach_clients(stack: Stack) -> None:
    stack.origin.routes["/tagged"] = Route(
        headers={
            "Cache-Control": "max-age=60",
            "Cache-Tag": "Alpha, beta",
            "Surrogate-Key": "gamma delta",
            "xkey": "eps",
            "Edge-Cache-Tag": "zeta",
            "Keep-Alive": "timeout=5",
        }
    )
    for _ in range(2):
        _, headers, _ = stack.request("/tagged")
        for name in ("cache-tag", "surrogate-key", "xkey", "edge-cache-tag", "keep-alive"):
            assert name not in headers
    entry = stack.call(lambda: stack.node.store.peek("http://test.example/tagged"))
    assert entry is not None
    assert set(entry.tags) == {"alpha", "beta", "gamma", "delta", "eps", "zeta"}
    assert entry.zone == ZONE_ID and entry.primary == "http://test.example/tagged"


def test_field_spellings_and_fields_named_in_connection_follow_the_same_rules(stack: Stack) -> None:
    # A fill classifies each spelling of a field name once and remembers it: an upper-case
    # directive must be read as the lower-case one, on the first response and on later ones.
    for i in range(2):
        stack.origin.routes[f"/spell/nostore{i}"] = Route(headers={"CACHE-CONTROL": "NO-STORE"})
        for _ in range(2):
            assert stack.request(f"/spell/nostore{i}")[1]["cf-cache-status"] == "BYPASS"
        assert stack.origin.hits[f"/spell/nostore{i}"] == 2
    # A field the origin names in Connection is hop-by-hop, even when it comes before Connection:
    # neither shown nor stored, and the storage decision does not read it (RFC 9110 §7.6.1).
    stack.origin.routes["/spell/named"] = Route(
        headers={
            "X-Private": "secret",
            "Cache-Control": "no-store",
            "CACHE-TAG": "Shouty",
            "X-Public": "ok",
            "Expires": formatdate(time.time() + 600, usegmt=True),
            "Connection": "X-Private, Cache-Control",
        }
    )
    for status in ("MISS", "HIT"):
        _, headers, _ = stack.request("/spell/named")
        assert headers["cf-cache-status"] == status
        assert "x-private" not in headers and "cache-control" not in headers and "cache-tag" not in headers
        assert headers["x-public"] == "ok"
    entry = stack.call(lambda: stack.node.store.peek("http://test.example/spell/named"))
    assert entry is not None and entry.tags == ("shouty",)
    assert b"secret" not in entry.head and b"no-store" not in entry.head


def test_forwarding_fields_added_and_control_fields_dropped(stack: Stack) -> None:
    stack.origin.routes["/fwd"] = Route()
    stack.request("/fwd", headers={"X-Auth-Key": "secret", "X-Auth-Email": "a@b.c", "Connection": "close"})
    _, _, headers, _ = stack.origin.requests[-1]
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["x-forwarded-for"] == "127.0.0.1"
    assert lower["x-forwarded-proto"] == "http"
    assert "x-auth-key" not in lower and "x-auth-email" not in lower
    assert lower["host"] == "test.example"


def test_an_entry_no_purge_covers_is_back_on_the_fast_path_after_the_purge_is_reclaimed(stack: Stack) -> None:
    """A hit after a purge checks the entry once against the purges and then records it as checked
    up to the node's position, so that its later hits compare one number again. Recording the zone's
    newest purge instead would leave it at 0 once the reclaimer had compacted the zone's rows away,
    and every later hit on the entry would take the purge check until it was fetched again."""
    for path in ("/kept", "/gone"):
        stack.origin.routes[path] = Route(headers={"Cache-Control": "max-age=600", "Cache-Tag": path[1:]})
        assert stack.request(path)[1]["cf-cache-status"] == "MISS"
    api = f"http://127.0.0.1:{stack.node.control_port}/client/v4"
    cf = cloudflare.Cloudflare(base_url=api, max_retries=0, api_token=stack.token())
    cf.cache.purge(zone_id=ZONE_ID, tags=["gone"])
    index = stack.node.index
    deadline = time.monotonic() + 10
    while len(index) and time.monotonic() < deadline:
        stack.run(stack.node.reclaimer.drain())
        time.sleep(0.05)
    assert len(index) == 0  # reclaimed and compacted: the zone has no rows left
    assert stack.request("/kept")[1]["cf-cache-status"] == "HIT"
    assert stack.request("/gone")[1]["cf-cache-status"] == "MISS"
    entry = stack.call(lambda: stack.node.store.peek("http://test.example/kept"))
    assert entry is not None and entry.stored_seq == index.position
