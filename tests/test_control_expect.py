"""``Expect`` on the control listener (decision 0030): ``100-continue`` is met (one interim 100, then
the route's answer); any other expectation, bytes that are not UTF-8 included, is a 417 in the
route's dialect that changes nothing; no ``Expect`` on any path and method is ever a 5xx.

Raw sockets over loopback to a real node: a client that waits for the interim 100 before it sends
the body, as curl and the .NET client do, and the bytes 0x80-0xff, which clients refuse to send.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import DEFAULT_ACCOUNT_ID, ZONE_ID, Stack
from edgecache.api.console.guard import COOKIE, SIGNIN_COOKIE
from edgecache.api.edgeone.dispatch import EDGEONE_KEY
from edgecache.control.credentials import Permission
from edgecache.control.ratelimit import RateLimiter, TokenBucket
from test_control_inputs import snapshot
from test_edgeone_transport import signed_headers

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
HIGH_BYTES = bytes(range(0x80, 0x100))


@dataclass(frozen=True)
class Answer:
    interim: list[bytes]
    """Heads of 1xx answers before the final one."""
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _read_head(sock: socket.socket, buf: bytes) -> tuple[bytes, bytes]:
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before a whole head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(lines[0][9:12]), headers


def _answer(sock: socket.socket, method: str, buf: bytes = b"") -> Answer:
    """The final answer on ``sock``, its interim ones before it; its body framed by Content-Length
    (every control answer has one), so that nothing waits for the server to close."""
    interim: list[bytes] = []
    while True:
        head, buf = _read_head(sock, buf)
        status, headers = _parse_head(head)
        if status >= 200:
            break
        interim.append(head)
    length = 0 if method == "HEAD" else int(headers.get("content-length", "0"))
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return Answer(interim, status, headers, buf[:length])


def exchange(
    port: int, method: str, head: bytes, body: bytes = b"", *, wait_for_continue: bool = False
) -> Answer:
    """One request on its own connection. With ``wait_for_continue`` the body is sent only once an
    interim 100 has arrived, as a client that sends ``Expect: 100-continue`` does."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        if not wait_for_continue:
            sock.sendall(head + body)
            return _answer(sock, method)
        sock.sendall(head)
        first, rest = _read_head(sock, b"")
        assert first == CONTINUE, first
        sock.sendall(body)
        answer = _answer(sock, method, rest)
        return Answer([first, *answer.interim], answer.status, answer.headers, answer.body)


def request_head(method: str, path: str, fields: dict[str, str], body: bytes, expect: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    lines += [f"{name}: {value}".encode() for name, value in fields.items() if name.lower() != "host"]
    lines.append(b"Content-Length: %d" % len(body))
    if expect is not None:
        lines.append(b"Expect: " + expect)
    return b"\r\n".join(lines) + b"\r\n\r\n"


# -- one route of each dialect -------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """A request to a route of one dialect, and what its answers look like."""

    method: str
    path: str
    fields: dict[str, str]
    body: bytes
    token_id: str
    """The API token the request carries (or signs in with): it must stay unused when refused."""


def _token(stack: Stack) -> tuple[str, str]:
    info, secret = stack.node.credentials.create_token(
        DEFAULT_ACCOUNT_ID, "expect", [Permission.CACHE_PURGE, Permission.ZONE_SETTINGS_READ]
    )
    return info.id, secret


def cloudflare_call(stack: Stack) -> Call:
    token_id, token = _token(stack)
    body = json.dumps({"files": ["http://test.example/expect"]}).encode()
    fields = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return Call("POST", f"/client/v4/zones/{ZONE_ID}/purge_cache", fields, body, token_id)


def edgeone_call(stack: Stack) -> Call:
    token_id, _ = _token(stack)
    secret = stack.node.secrets.create(DEFAULT_ACCOUNT_ID, "expect", [Permission.CACHE_PURGE])
    body = json.dumps(
        {"ZoneId": ZONE_ID, "Type": "purge_url", "Targets": ["http://test.example/eo"]}
    ).encode()
    fields = signed_headers(*secret, body, int(time.time()), action="CreatePurgeTask", host="127.0.0.1")
    return Call("POST", "/", fields, body, token_id)


def native_call(stack: Stack) -> Call:
    token_id, token = _token(stack)
    return Call(
        "GET", f"/edgecache/v1/zones/{ZONE_ID}/tasks", {"Authorization": f"Bearer {token}"}, b"{}", token_id
    )


def console_call(stack: Stack) -> Call:
    token_id, token = _token(stack)
    # The sign-in form's CSRF check compares the cookie with the field: a client may choose both.
    body = f"token={token}&csrf=nonce".encode()
    fields = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"{SIGNIN_COOKIE}=nonce"}
    return Call("POST", "/console/signin", fields, body, token_id)


def cloudflare_ok(answer: Answer) -> None:
    assert answer.status == 200 and answer.json()["success"] is True, answer


def edgeone_ok(answer: Answer) -> None:
    response = answer.json()["Response"]
    assert answer.status == 200 and "Error" not in response and response["JobId"], answer


def native_ok(answer: Answer) -> None:
    assert answer.status == 200 and isinstance(answer.json()["tasks"], list), answer


def console_ok(answer: Answer) -> None:
    assert answer.status == 303 and f"{COOKIE}=" in answer.headers.get("set-cookie", ""), answer


def cloudflare_refused(answer: Answer) -> None:
    assert answer.headers["content-type"] == "application/json", answer
    body = answer.json()
    assert body["success"] is False and body["result"] is None, body
    error = body["errors"][0]
    # The shape of every other refused header (a malformed Authorization, say): the detail chained.
    assert error["code"] == 6003 and error["message"] == "Invalid request headers", body
    assert error["error_chain"][0]["code"] == 6003, body
    assert "100-continue" in error["error_chain"][0]["message"], body


def edgeone_refused(answer: Answer) -> None:
    assert answer.headers["content-type"] == "application/json", answer
    response = answer.json()["Response"]
    assert response["Error"]["Code"] == "InvalidParameter" and response["RequestId"], response
    # The wording of this dialect's other refused parameters (a wrong Content-Type, say).
    assert response["Error"]["Message"] == "Parameter `Expect` type error: expected 100-continue.", response


def native_refused(answer: Answer) -> None:
    # As every answer of this API: aiohttp's json_response, with its charset.
    assert answer.headers["content-type"] == "application/json; charset=utf-8", answer
    error = answer.json()["error"]
    assert error["code"] == 417 and "100-continue" in error["message"], error


def console_refused(answer: Answer) -> None:
    assert answer.headers["content-type"].startswith("text/html"), answer
    assert answer.headers["cache-control"] == "no-store" and "x-frame-options" in answer.headers, answer
    assert b"<h1>417</h1>" in answer.body and b"100-continue" in answer.body, answer.body[:300]
    assert COOKIE not in answer.headers.get("set-cookie", ""), answer


DIALECTS: dict[str, tuple[Callable[[Stack], Call], Callable[[Answer], None], Callable[[Answer], None]]] = {
    "cloudflare": (cloudflare_call, cloudflare_ok, cloudflare_refused),
    "edgeone": (edgeone_call, edgeone_ok, edgeone_refused),
    "native": (native_call, native_ok, native_refused),
    "console": (console_call, console_ok, console_refused),
}


def _buckets(limiter: object) -> dict[tuple[str, str], tuple[float, float]]:
    """Each rate-limit bucket's tokens and when they were last counted: a token taken, or one given
    back, changes both. Read without a refill, which would change them with time alone."""
    buckets: dict[tuple[str, str], TokenBucket] = limiter._buckets  # type: ignore[attr-defined]
    return {key: (b._tokens, b._stamp) for key, b in buckets.items()}


def state(stack: Stack) -> tuple[object, ...]:
    """What a request may change: ledger and task rows, quotas, console sessions, and the buckets
    of both rate limiters (purges', and EdgeOne's per action)."""
    assert stack.node._control is not None
    limiter = stack.node.purges._limiter
    assert isinstance(limiter, RateLimiter)
    return (
        snapshot(stack),
        len(stack.node.sessions),
        _buckets(limiter),
        _buckets(stack.node._control.app[EDGEONE_KEY].limiter),
    )


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("spelling", [b"100-continue", b"100-Continue"])
def test_100_continue_gets_one_interim_answer_then_the_routes(
    stack: Stack, dialect: str, spelling: bytes
) -> None:
    make, ok, _ = DIALECTS[dialect]
    call = make(stack)
    head = request_head(call.method, call.path, call.fields, call.body, spelling)
    answer = exchange(stack.node.control_port, call.method, head, call.body, wait_for_continue=True)
    assert answer.interim == [CONTINUE], answer
    ok(answer)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("expect", [b"foo", b"100-continue, foo", HIGH_BYTES, "\u00e9t\u00e9".encode()])
def test_an_expectation_not_met_is_the_dialects_417_and_changes_nothing(
    stack: Stack, dialect: str, expect: bytes
) -> None:
    make, _, refused = DIALECTS[dialect]
    call = make(stack)
    before = state(stack)
    head = request_head(call.method, call.path, call.fields, call.body, expect)
    answer = exchange(stack.node.control_port, call.method, head)
    assert answer.status == 417 and not answer.interim, answer
    refused(answer)
    assert state(stack) == before
    token = stack.node.credentials.get_token(call.token_id)
    assert token is not None and token.last_used_at is None, "the token was checked"


@pytest.mark.parametrize(
    "path",
    ["/nope", "/client/v4/nope", "/edgecache/v1/nope", "/console/nope", "/console", "/console/static/x"],
)
@pytest.mark.parametrize("method", ["POST", "PROPFIND"])
def test_an_unmatched_path_refuses_in_the_dialect_of_its_404(stack: Stack, path: str, method: str) -> None:
    port = stack.node.control_port
    plain = exchange(port, method, request_head(method, path, {}, b"", None))
    refused = exchange(port, method, request_head(method, path, {}, b"", HIGH_BYTES))
    assert plain.status in (400, 403, 404, 405), plain
    assert refused.status == 417, refused
    assert refused.headers["content-type"].split(";")[0] == plain.headers["content-type"].split(";")[0]


@pytest.mark.parametrize("expect", [b"foo", HIGH_BYTES])
@pytest.mark.parametrize(
    ("method", "target"), [("GET", "http://127.0.0.1"), ("CONNECT", "127.0.0.1:1"), ("OPTIONS", "*")]
)
def test_a_request_without_a_path_refuses_in_the_envelope(
    stack: Stack, method: str, target: str, expect: bytes
) -> None:
    """The absolute form with no path and CONNECT's authority form reach aiohttp with an empty
    path, which its router matches no resource of the index for; ``*`` (OPTIONS) is routed through
    the index's root entry, and is here so that it stays so."""
    port = stack.node.control_port
    plain = exchange(port, method, request_head(method, target, {}, b"", None))
    answer = exchange(port, method, request_head(method, target, {}, b"", expect))
    assert plain.status < 500 and plain.headers["content-type"] == "application/json", plain
    assert answer.status == 417, answer
    cloudflare_refused(answer)


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
def test_the_console_without_its_slash_refuses_in_the_consoles_dialect(stack: Stack, method: str) -> None:
    port = stack.node.control_port
    answer = exchange(port, method, request_head(method, "/console", {}, b"", b"foo"))
    assert answer.status == 417, answer
    if method == "HEAD":
        assert answer.headers["content-type"].startswith("text/html"), answer
    else:
        console_refused(answer)
    home = exchange(port, "GET", request_head("GET", "/console", {}, b"", None))
    assert home.status == 308 and home.headers["location"] == "/console/", home


@pytest.mark.parametrize("dialect", DIALECTS)
def test_after_a_417_the_next_request_is_not_read_as_the_withheld_body(stack: Stack, dialect: str) -> None:
    """A client may withhold the body it announced once refused (RFC 9110 §10.1.1) and send its
    next request. The server reads as much as was announced, as it must, then closes: it never
    answers what is left as a request of its own."""
    make, _, refused = DIALECTS[dialect]
    call = make(stack)
    head = request_head(call.method, call.path, call.fields, call.body, b"foo")
    head = head.replace(b"Connection: close\r\n", b"")
    # Longer than the withheld body, so that a server still reading requests would parse the rest.
    pad = b"a" * len(call.body)
    following = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + pad + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", stack.node.control_port), timeout=5) as sock:
        sock.sendall(head)
        answer = _answer(sock, call.method)
        assert answer.status == 417, answer
        refused(answer)
        assert answer.headers.get("connection", "").lower() == "close", answer
        sock.sendall(following)
        try:
            rest = sock.recv(65536)
        except ConnectionResetError:
            rest = b""
        assert rest == b"", f"answered after the 417: {rest[:200]!r}"


def test_every_route_refuses_an_unmet_expectation_with_a_417(stack: Stack) -> None:
    assert stack.node._control is not None
    port = stack.node.control_port
    for route in stack.node._control.app.router.routes():
        assert route.resource is not None
        path = re.sub(r"\{[^}]*\}", ZONE_ID, route.resource.canonical) or "/"
        method = "PURGE" if route.method == "*" else route.method
        answer = exchange(port, method, request_head(method, path, {}, b"", HIGH_BYTES))
        assert answer.status == 417, (route, answer)


def test_http_1_0_gets_no_interim_answer(stack: Stack) -> None:
    call = native_call(stack)
    head = request_head(call.method, call.path, call.fields, call.body, b"100-continue")
    head = head.replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1)
    answer = exchange(stack.node.control_port, call.method, head, call.body)
    assert answer.interim == [] and answer.status == 200, answer


# -- any Expect, path and method ---------------------------------------------------------------------


def _paths(stack: Stack) -> list[str]:
    """Every route's path in the control app, its variables filled with the test zone's id."""
    assert stack.node._control is not None
    found = {
        route.resource.canonical
        for route in stack.node._control.app.router.routes()
        if route.resource is not None
    }
    return sorted(re.sub(r"\{[^}]*\}", ZONE_ID, path) or "/" for path in found)


FIELD_VALUE_BYTES = frozenset(b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)))
"""What a field value may hold (RFC 9110 §5.5: VCHAR, obs-text, SP and HTAB); the parser answers 400
to anything else."""
EXPECT_BYTES = st.one_of(
    st.sampled_from([b"100-continue", b"100-CONTINUE", b"\t100-Continue ", b"foo", b"", b" ", HIGH_BYTES]),
    st.binary(max_size=24).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.lists(st.sampled_from(sorted(FIELD_VALUE_BYTES)), max_size=24).map(bytes),
    st.lists(st.sampled_from(sorted(FIELD_VALUE_BYTES)), max_size=24).map(
        lambda b: b"100-continue" + bytes(b)
    ),
)
METHODS = st.sampled_from(
    [
        "GET",
        "HEAD",
        "POST",
        "PUT",
        "PATCH",
        "DELETE",
        "OPTIONS",
        "TRACE",
        "PROPFIND",
        "MKCOL",
        "LOCK",
        "REPORT",
        "PURGE",
        "SEARCH",
    ]
)
"""Methods llhttp knows (it answers 400 to any other name before aiohttp routes the request)."""
SEGMENT = st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#%"), max_size=12),
    st.binary(min_size=1, max_size=6).map(lambda b: "".join(f"%{c:02X}" for c in b)),
    st.sampled_from(["%", "%2", "%zz", "%2F", "%00", "%2e%2e"]),
)
"""A path segment: printable characters, %-escapes of any byte, and broken escapes."""
TARGETS = st.sampled_from(
    [("GET", "http://127.0.0.1"), ("POST", "http://127.0.0.1"), ("CONNECT", "127.0.0.1:1"), ("OPTIONS", "*")]
)
"""Request targets aiohttp routes with no path (the absolute form without one, CONNECT's
authority form) or with ``*``, each with a method that may carry it."""


@pytest.mark.timeout(900)
@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), method=METHODS, expect=EXPECT_BYTES, body=st.binary(max_size=32))
def test_no_expect_on_any_path_and_method_is_a_5xx(
    stack: Stack, data: Any, method: str, expect: bytes, body: bytes
) -> None:
    paths = st.one_of(
        st.sampled_from(_paths(stack)),
        st.builds(
            lambda base, tail: base.rstrip("/") + "/" + tail,
            st.sampled_from(["/", "/client/v4", "/edgecache/v1", "/console", "/zones/" + ZONE_ID]),
            SEGMENT,
        ),
    )
    method, path = data.draw(st.one_of(paths.map(lambda p: (method, p)), TARGETS), label="target")
    # The body announced is sent too: a route that reads it must not wait for it.
    answer = exchange(stack.node.control_port, method, request_head(method, path, {}, body, expect), body)
    event(f"{answer.status}")
    assert answer.status < 500, (method, path, expect, answer)
    value = expect.strip(b" \t")
    if not FIELD_VALUE_BYTES.issuperset(expect):
        assert answer.status == 400, (method, path, expect, answer)
    elif value and value.lower() != b"100-continue":
        assert answer.status == 417, (method, path, expect, answer)
    else:
        assert answer.status != 417, (method, path, expect, answer)
