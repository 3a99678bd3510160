"""End to end: any valid status code is relayed and cached like any other; unsafe methods, extension
methods included, invalidate what they touch (RFC 9110 §15, §9.2.1; RFC 9111 §3, §4.4)."""

from __future__ import annotations

import pytest

from conftest import Route, Stack


@pytest.mark.parametrize("status", [209, 299, 420, 499, 521, 599])
def test_a_status_without_a_phrase_we_know_is_relayed_then_served_from_cache(
    stack: Stack, status: int
) -> None:
    path = f"/status/{status}"
    stack.origin.routes[path] = Route(status=status, body=b"odd", headers={"Cache-Control": "max-age=60"})
    first = stack.request(path)
    second = stack.request(path)
    assert first[0] == second[0] == status
    assert (first[1]["cf-cache-status"], second[1]["cf-cache-status"]) == ("MISS", "HIT")
    assert first[2] == second[2] == b"odd"
    assert stack.origin.hits[path] == 1


def test_a_status_without_explicit_freshness_that_is_not_heuristically_cacheable_is_not_stored(
    stack: Stack,
) -> None:
    stack.origin.routes["/status/lm"] = Route(
        status=299, body=b"odd", headers={"Last-Modified": "Sun, 06 Nov 1994 08:49:37 GMT"}
    )
    assert stack.request("/status/lm")[0] == 299
    status, headers, body = stack.request("/status/lm")
    assert (status, headers["cf-cache-status"], body) == (299, "BYPASS", b"odd")
    assert stack.origin.hits["/status/lm"] == 2


@pytest.mark.parametrize("status", [600, 999])
def test_a_status_outside_the_valid_range_is_a_bad_gateway(stack: Stack, status: int) -> None:
    path = f"/status/bad/{status}"
    stack.origin.routes[path] = Route(status=status, body=b"odd")
    status_seen, _, body = stack.request(path)
    assert status_seen == 502
    assert b"invalid response" in body


@pytest.mark.parametrize("method", ["M-SEARCH", "MKCOL", "REPORT", "PROPPATCH", "LINK"])
def test_an_extension_method_invalidates_the_target_and_its_location(stack: Stack, method: str) -> None:
    target, created = f"/ext/{method}", f"/ext/{method}/created"
    for path in (target, created):
        stack.origin.routes[path] = Route(body=b"v1")
        stack.request(path)
        assert stack.request(path)[1]["cf-cache-status"] == "HIT"
    stack.origin.routes[target] = Route(body=b"ok", headers={"Location": created})
    status, headers, _ = stack.request(target, method=method)
    assert (status, headers["cf-cache-status"]) == (200, "DYNAMIC")
    assert stack.origin.requests[-1][0] == method
    stack.origin.routes[target] = Route(body=b"v2")
    _, headers, body = stack.request(target)
    assert (headers["cf-cache-status"], body) == ("MISS", b"v2")
    assert stack.request(created)[1]["cf-cache-status"] == "MISS"


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE"])
def test_safe_methods_do_not_invalidate(stack: Stack, method: str) -> None:
    path = f"/safe/{method}"
    stack.origin.routes[path] = Route(body=b"v1")
    stack.request(path)
    assert stack.request(path, method=method)[0] == 200
    assert stack.request(path)[1]["cf-cache-status"] == "HIT"


def test_an_extension_method_that_fails_does_not_invalidate(stack: Stack) -> None:
    stack.origin.routes["/ext/fail"] = Route(body=b"v1")
    stack.request("/ext/fail")
    stack.origin.routes["/ext/fail"] = Route(status=404, body=b"no", headers={})
    assert stack.request("/ext/fail", method="M-SEARCH")[0] == 404
    assert stack.request("/ext/fail")[1]["cf-cache-status"] == "HIT"


def test_must_understand_keeps_an_unknown_status_out_of_the_cache(stack: Stack) -> None:
    stack.origin.routes["/status/mu299"] = Route(
        status=299, body=b"odd", headers={"Cache-Control": "must-understand, no-store, max-age=60"}
    )
    stack.origin.routes["/status/mu200"] = Route(
        status=200, body=b"ok", headers={"Cache-Control": "must-understand, no-store, max-age=60"}
    )
    for _ in range(2):
        assert stack.request("/status/mu299")[0] == 299
        stack.request("/status/mu200")
    assert stack.origin.hits["/status/mu299"] == 2
    assert stack.origin.hits["/status/mu200"] == 1
