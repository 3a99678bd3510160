"""End to end: only exact HTTP-dates in Expires give freshness (RFC 9110 §5.6.7, RFC 9111 §5.3)."""

from __future__ import annotations

import time

import pytest

from conftest import Route, Stack
from edgecache.httpcache.dates import format_http_date


@pytest.mark.parametrize(
    "expires",
    [
        "Thu, 18 Aug 2050 02:01:18 UTC",
        "Thu, 18 Aug 50 02:01:18 GMT",
        "Thu, 18-Aug-2050 02:01:18 GMT",
        "Thu, 18 Aug 2050 02.01.18 GMT",
        "Thu, 18 Aug 2050 2:01:18 GMT",
    ],
)
def test_a_lenient_expires_is_not_freshness(stack: Stack, expires: str) -> None:
    path = f"/expires/{expires}".replace(" ", "_")
    stack.origin.routes[path] = Route(body=b"e", headers={"Expires": expires})
    stack.request(path)
    _, headers, _ = stack.request(path)
    assert headers["cf-cache-status"] == "BYPASS"
    assert stack.origin.hits[path] == 2


def test_an_exact_expires_is_freshness(stack: Stack) -> None:
    stack.origin.routes["/expires/ok"] = Route(
        body=b"e", headers={"Expires": format_http_date(time.time() + 600)}
    )
    stack.request("/expires/ok")
    assert stack.request("/expires/ok")[1]["cf-cache-status"] == "HIT"


def test_two_expires_fields_that_disagree_are_no_freshness(stack: Stack) -> None:
    soon, later = format_http_date(time.time() + 600), format_http_date(time.time() + 1200)
    stack.origin.routes["/expires/two"] = Route(
        body=b"e", headers={}, repeated=[("Expires", soon), ("Expires", later)]
    )
    stack.request("/expires/two")
    assert stack.request("/expires/two")[1]["cf-cache-status"] == "BYPASS"
    stack.origin.routes["/expires/same"] = Route(
        body=b"e", headers={}, repeated=[("Expires", soon), ("Expires", soon)]
    )
    stack.request("/expires/same")
    assert stack.request("/expires/same")[1]["cf-cache-status"] == "HIT"


def test_an_invalid_if_modified_since_is_ignored_on_a_hit(stack: Stack) -> None:
    modified = format_http_date(time.time() - 3600)
    stack.origin.routes["/expires/ims"] = Route(
        body=b"body", headers={"Cache-Control": "max-age=60", "Last-Modified": modified}
    )
    stack.request("/expires/ims")
    assert stack.request("/expires/ims", headers={"If-Modified-Since": modified})[0] == 304
    status, _, body = stack.request(
        "/expires/ims", headers={"If-Modified-Since": modified.replace("GMT", "UTC")}
    )
    assert (status, body) == (200, b"body")
