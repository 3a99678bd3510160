"""Cache poisoning through Host, Connection and edge-only fields, and purges of every path spelling,
tried from outside: raw sockets (no client library normalises the request) against a real node in
front of an origin that reflects what it receives.

Each attack is sent first, then a clean request; the clean request must get a response the origin
produced for a clean request, never a HIT carrying what the attacker made the origin say.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import cloudflare
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edgecache.app import Node
from edgecache.config import DEFAULT_ACCOUNT_ID, CacheKeyOptions, ClientTrust, Config, Listener, Zone
from edgecache.control.credentials import Permission
from edgecache.edge import fetch as fetch_module
from edgecache.edge.forwarding import forward_headers
from edgecache.edge.origin import FieldLines
from edgecache.edge.zones import ZoneRuntime, ZoneTable

T = TypeVar("T")

PLAIN_ID = "11111111111111111111111111111111"
VARIANTS_ID = "22222222222222222222222222222222"
TRUSTING_ID = "33333333333333333333333333333333"
ELSEWHERE_ID = "44444444444444444444444444444444"

REFLECTED = (
    "host",
    "x-forwarded-host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "forwarded",
    "cf-connecting-ip",
    "cf-ipcountry",
    "cf-device-type",
    "cf-ray",
    "cf-visitor",
    "true-client-ip",
    "x-real-ip",
    "user-agent",
    "accept-language",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-forwarded-port",
    "x-forwarded-scheme",
    "x-host",
    "x-custom",
)


class Reflector:
    """An origin whose body is what it received: the raw path and the fields in ``REFLECTED``."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        got = {"path": request.raw_path}
        got.update({k: request.headers[k] for k in REFLECTED if k in request.headers})
        self.seen.append(got)
        headers = {"Cache-Control": "public, max-age=600"}
        if request.path.startswith("/vary/"):
            headers["Vary"] = "Accept-Language"
        return web.Response(body=json.dumps(got).encode(), headers=headers, content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Edge:
    """A node in front of the reflector, on its own loop thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.origin = Reflector()
        self.run(self.origin.start())
        self.tmp = tempfile.TemporaryDirectory(prefix="edgecache-trust-")
        origin = f"http://127.0.0.1:{self.origin.port}"
        keyed = CacheKeyOptions(device_type=True, country=True)
        config = Config(
            data_dir=Path(self.tmp.name),
            data=Listener(port=0),
            control=Listener(port=0),
            zones=(
                Zone(id=PLAIN_ID, name="example.com", hostnames=("example.com",), origin=origin),
                Zone(
                    id=VARIANTS_ID, name="v.example", hostnames=("v.example",), origin=origin, cache_key=keyed
                ),
                Zone(
                    id=TRUSTING_ID,
                    name="t.example",
                    hostnames=("t.example",),
                    origin=origin,
                    cache_key=keyed,
                    trust=ClientTrust(
                        fields=("cf-ipcountry", "cf-connecting-ip", "x-forwarded-for"),
                        proxies=("127.0.0.0/8",),
                    ),
                ),
                Zone(
                    id=ELSEWHERE_ID,
                    name="e.example",
                    hostnames=("e.example",),
                    origin=origin,
                    cache_key=keyed,
                    trust=ClientTrust(fields=("cf-ipcountry", "cf-device-type"), proxies=("10.0.0.0/8",)),
                ),
            ),
        )
        self.node = Node(config)
        self.run(self.node.start())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def send(self, head: str) -> tuple[int, dict[str, str], bytes]:
        """Send a request head exactly as written (``\\n`` becomes CRLF) and read the response."""
        with socket.create_connection(("127.0.0.1", self.node.data_port), timeout=10) as sock:
            sock.sendall(head.replace("\n", "\r\n").encode("latin-1") + b"\r\n")
            resp = http.client.HTTPResponse(sock)
            resp.begin()
            body = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body

    def get(self, target: str, host: str = "example.com", **fields: str) -> tuple[str, dict[str, str]]:
        """A GET with the given fields (``User_Agent`` → ``User-Agent``): cache status and what the
        origin saw for the response served."""
        lines = "".join(f"{k.replace('_', '-')}: {v}\n" for k, v in fields.items())
        status, headers, body = self.send(f"GET {target} HTTP/1.1\nHost: {host}\n{lines}")
        assert status == 200, (status, body)
        return headers["cf-cache-status"], json.loads(body)

    def close(self) -> None:
        self.run(self.node.stop())
        self.run(self.origin.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.tmp.cleanup()


@pytest.fixture(scope="module")
def edge() -> Iterator[Edge]:
    e = Edge()
    try:
        yield e
    finally:
        e.close()


def test_absolute_form_target_wins_over_host_and_is_what_the_origin_gets(edge: Edge) -> None:
    status, _, body = edge.send("GET http://example.com/abs HTTP/1.1\nHost: evil.example\n")
    seen = json.loads(body)
    assert status == 200 and seen["host"] == "example.com" and seen["x-forwarded-host"] == "example.com"
    assert seen["path"] == "/abs"
    cache, clean = edge.get("/abs")
    assert cache == "HIT" and clean["host"] == "example.com"


def test_absolute_form_does_not_choose_what_a_later_origin_form_request_under_that_host_gets(
    edge: Edge,
) -> None:
    # The hot path remembers the key of a (Host, target) pair; a request whose authority chose the zone
    # instead of Host must not teach it that Host's /cross is example.com's.
    for _ in range(2):
        assert edge.send("GET http://example.com/cross HTTP/1.1\nHost: v.example\n")[0] == 200
    status, headers, body = edge.send("GET /cross HTTP/1.1\nHost: v.example\n")
    assert status == 200 and json.loads(body)["host"] == "v.example"
    assert headers["cf-cache-status"] == "MISS"


def test_absolute_form_keeps_its_zone_when_connection_names_a_field(edge: Edge) -> None:
    # Dropping the fields Connection names keys the request again: in the zone the authority chose,
    # not in the one Host names.
    head = "GET http://example.com/conn-opt HTTP/1.1\nHost: v.example\nConnection: x-drop\nX-Drop: 1\n"
    status, _, body = edge.send(head)
    seen = json.loads(body)
    assert status == 200 and seen["host"] == "example.com" and "x-drop" not in seen
    cache, clean = edge.get("/conn-opt")
    assert cache == "HIT" and clean["host"] == "example.com"


def test_a_host_with_a_slash_is_400_even_where_host_and_target_spell_a_cached_url(edge: Edge) -> None:
    # The hot path's memo is consulted before Host is validated: "example.com/slash" + "/cached"
    # must not read as "example.com" + "/slash/cached".
    edge.get("/slash/cached")
    assert edge.get("/slash/cached")[0] == "HIT"
    status, _, _ = edge.send("GET /cached HTTP/1.1\nHost: example.com/slash\n")
    assert status == 400


@pytest.mark.parametrize(
    "spelling", ["example.com:1337", "example.com:80", "EXAMPLE.COM", "example.com.", "Example.Com.:8080"]
)
def test_host_variants_never_reach_the_origin(edge: Edge, spelling: str) -> None:
    path = "/spelled/" + spelling.replace(":", "_")
    _, attacked = edge.get(path, host=spelling)
    assert attacked["host"] == "example.com" and attacked["x-forwarded-host"] == "example.com"
    cache, clean = edge.get(path)
    assert cache == "HIT" and clean == attacked


def test_absolute_form_with_a_port_is_keyed_and_forwarded_as_the_zone_hostname(edge: Edge) -> None:
    status, _, body = edge.send("GET http://EXAMPLE.com:1337/abs-port HTTP/1.1\nHost: example.com\n")
    assert status == 200 and json.loads(body)["host"] == "example.com"
    assert edge.get("/abs-port")[0] == "HIT"


@pytest.mark.parametrize("value", ["example.com:evil", "example.com:80x", "user@example.com", "exa mple.com"])
def test_malformed_host_is_400_and_nothing_is_fetched(edge: Edge, value: str) -> None:
    before = len(edge.origin.seen)
    status, _, _ = edge.send(f"GET /bad-host HTTP/1.1\nHost: {value}\n")
    assert status == 400 and len(edge.origin.seen) == before


def test_malformed_host_is_400_with_an_absolute_form_target_too(edge: Edge) -> None:
    assert edge.send("GET http://example.com/x HTTP/1.1\nHost: example.com:evil\n")[0] == 400
    assert edge.send("OPTIONS * HTTP/1.1\nHost: example.com:evil\n")[0] == 400


def test_unknown_host_is_421(edge: Edge) -> None:
    assert edge.send("GET / HTTP/1.1\nHost: other.example\n")[0] == 421


def test_connection_host_does_not_drop_host(edge: Edge) -> None:
    _, attacked = edge.get("/conn-host", Connection="host")
    assert attacked["host"] == "example.com"
    cache, clean = edge.get("/conn-host")
    assert cache == "HIT" and clean["host"] == "example.com"


def test_client_forwarding_fields_are_replaced(edge: Edge) -> None:
    _, attacked = edge.get(
        "/xfh",
        X_Forwarded_Host="evil.example",
        X_Forwarded_Proto="https",
        Forwarded="for=1.2.3.4;host=evil.example;proto=https",
    )
    assert attacked["x-forwarded-host"] == "example.com" and attacked["x-forwarded-proto"] == "http"
    assert "forwarded" not in attacked
    cache, clean = edge.get("/xfh")
    assert cache == "HIT" and clean["x-forwarded-host"] == "example.com"


def test_unkeyed_override_fields_never_reach_the_origin(edge: Edge) -> None:
    overrides = {
        "X_Original_URL": "/admin",
        "X_Rewrite_URL": "/admin",
        "X_HTTP_Method_Override": "DELETE",
        "X_Forwarded_Port": "8443",
        "X_Forwarded_Scheme": "https",
        "X_Host": "evil.example",
    }
    _, attacked = edge.get("/override", **overrides)
    assert not set(attacked) & {k.lower().replace("_", "-") for k in overrides}
    cache, clean = edge.get("/override")
    assert cache == "HIT" and clean == attacked


SPOOFED = {
    "CF_IPCountry": "KP",
    "CF_Device_Type": "tablet",
    "CF_Connecting_IP": "203.0.113.9",
    "X_Forwarded_For": "203.0.113.9",
    "True_Client_IP": "203.0.113.9",
    "X_Real_IP": "203.0.113.9",
    "CF_Ray": "0123456789abcdef-LHR",
    "CF_Visitor": '{"scheme":"https"}',
}
DESKTOP = "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0"
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"


@pytest.mark.parametrize("host", ["v.example", "e.example"])
def test_untrusted_edge_fields_are_replaced_and_select_no_variant(edge: Edge, host: str) -> None:
    _, attacked = edge.get("/spoof", host=host, User_Agent=DESKTOP, **SPOOFED)
    assert attacked["cf-connecting-ip"] == "127.0.0.1" and attacked["x-forwarded-for"] == "127.0.0.1"
    assert attacked["cf-device-type"] == "desktop" and attacked["cf-visitor"] == '{"scheme":"http"}'
    for name in ("cf-ipcountry", "true-client-ip", "x-real-ip", "cf-ray"):
        assert name not in attacked
    # A clean desktop client shares the attacker's variant, which the origin rendered as clean.
    cache, clean = edge.get("/spoof", host=host, User_Agent=DESKTOP)
    assert cache == "HIT" and clean == attacked
    # The tablet variant the attacker named is not theirs to fill.
    cache, phone = edge.get("/spoof", host=host, User_Agent=PHONE)
    assert cache == "MISS" and phone["cf-device-type"] == "mobile"


def test_trusted_proxy_fields_pass_and_select_the_variant(edge: Edge) -> None:
    _, de = edge.get("/trusted", host="t.example", CF_IPCountry="DE", X_Forwarded_For="198.51.100.7")
    assert de["cf-ipcountry"] == "DE" and de["x-forwarded-for"] == "198.51.100.7, 127.0.0.1"
    assert de["cf-connecting-ip"] == "127.0.0.1"
    cache, fr = edge.get("/trusted", host="t.example", CF_IPCountry="FR")
    assert cache == "MISS" and fr["cf-ipcountry"] == "FR"
    assert edge.get("/trusted", host="t.example", CF_IPCountry="de")[0] == "HIT"
    # CF-Device-Type is not among this zone's trusted fields: the User-Agent decides.
    _, dt = edge.get("/trusted-dt", host="t.example", CF_Device_Type="tablet", User_Agent=DESKTOP)
    assert dt["cf-device-type"] == "desktop"


def test_connection_naming_a_keyed_field_cannot_fill_another_variant(edge: Edge) -> None:
    # The attacker is keyed as a phone but asks that the origin not see its User-Agent.
    _, attacked = edge.get("/conn-ua", host="v.example", User_Agent=PHONE, Connection="user-agent")
    assert "user-agent" not in attacked and attacked["cf-device-type"] == "desktop"
    cache, phone = edge.get("/conn-ua", host="v.example", User_Agent=PHONE)
    assert cache == "MISS" and phone["user-agent"] == PHONE and phone["cf-device-type"] == "mobile"


def test_connection_naming_a_vary_field_cannot_fill_another_variant(edge: Edge) -> None:
    _, attacked = edge.get("/vary/conn", Accept_Language="de", Connection="accept-language")
    assert "accept-language" not in attacked
    cache, german = edge.get("/vary/conn", Accept_Language="de")
    assert cache == "MISS" and german["accept-language"] == "de"
    assert edge.get("/vary/conn", Accept_Language="de")[0] == "HIT"


def test_equivalent_accept_language_values_share_a_variant(edge: Edge) -> None:
    assert edge.get("/vary/lang", Accept_Language="en-US, de;q=0.5, fr")[0] == "MISS"
    assert edge.get("/vary/lang", Accept_Language="FR,en-us , de;q=0.50")[0] == "HIT"
    assert edge.get("/vary/lang", Accept_Language="de, en-US;q=0.5, fr")[0] == "MISS"


def test_asterisk_form(edge: Edge) -> None:
    before = len(edge.origin.seen)
    status, headers, body = edge.send("OPTIONS * HTTP/1.1\nHost: example.com\n")
    assert status == 200 and body == b"" and "GET" in headers["allow"]
    assert edge.send("GET * HTTP/1.1\nHost: example.com\n")[0] == 400
    assert edge.send("GET ftp://example.com/x HTTP/1.1\nHost: example.com\n")[0] == 400
    assert len(edge.origin.seen) == before


GAP_SPELLINGS = ["/c/a/../gap", "/c/./gap", "/c/%2e/gap", "/c/x/%2E%2E/gap", "/c/%67ap", "/c/b/.%2e/gap"]


def test_the_origin_gets_the_path_the_key_names(edge: Edge) -> None:
    for spelling in GAP_SPELLINGS:
        _, seen = edge.get(spelling.replace("/c/", "/o/"))
        assert seen["path"] == "/o/gap", spelling


def test_purge_reaches_every_spelling(edge: Edge) -> None:
    for spelling in ["/c/gap", *GAP_SPELLINGS]:
        edge.get(spelling)
        assert edge.get(spelling)[0] == "HIT", spelling
    assert len([s for s in edge.origin.seen if s["path"] == "/c/gap"]) == 1
    _, secret = edge.node.credentials.create_token(DEFAULT_ACCOUNT_ID, "test", [Permission.CACHE_PURGE], None)
    with cloudflare.Cloudflare(
        api_token=secret, base_url=f"http://127.0.0.1:{edge.node.control_port}/client/v4", max_retries=0
    ) as cf:
        cf.cache.purge(zone_id=PLAIN_ID, files=["http://example.com/c/gap"])
        for spelling in GAP_SPELLINGS:
            assert edge.get(spelling)[0] == "MISS", spelling
            edge.run(edge.node.reclaimer.drain())
            cf.cache.purge(zone_id=PLAIN_ID, files=["http://example.com/c/gap"])
        # A prefix spelled with dot-segments is the same prefix.
        assert edge.get("/c/gap")[0] == "MISS" and edge.get("/c/gap")[0] == "HIT"
        cf.cache.purge(zone_id=PLAIN_ID, prefixes=["example.com/c/zzz/../g"])
        assert edge.get("/c/%2e/gap")[0] == "MISS"


def test_trust_configuration_is_explicit() -> None:
    base = {"id": PLAIN_ID, "name": "x", "hostnames": ["x.example"], "origin": "http://127.0.0.1:9"}
    with pytest.raises(ValidationError, match="proxies"):
        Zone.model_validate({**base, "trust": {"fields": ["CF-IPCountry"]}})
    with pytest.raises(ValidationError, match="x-anything"):
        Zone.model_validate({**base, "trust": {"fields": ["X-Anything"], "proxies": ["10.0.0.0/8"]}})
    custom = {**base, "cache_key": {"country": True, "country_header": "X-Geo"}}
    zone = Zone.model_validate({**custom, "trust": {"fields": ["X-Geo"], "proxies": ["::/0", "0.0.0.0/0"]}})
    assert zone.trust.fields == ("x-geo",)
    assert Zone.model_validate(base).trust.fields == ()


def test_each_fill_forwards_its_own_request_fields(edge: Edge) -> None:
    """Fills remember their encoded fields per distinct request (``fetch._fill_fields``): a fill
    sends what its own request carried, whether the same fields came before or not, and what the
    zone's trust makes of them, never another request's."""
    seen = [
        edge.get(f"/own/{i}", host=host, X_Custom=custom, X_Forwarded_For=xff)[1]
        for i, (host, custom, xff) in enumerate(
            [
                ("example.com", "a", "203.0.113.9"),
                ("example.com", "b", "203.0.113.9"),
                ("example.com", "a", "203.0.113.9"),
                ("t.example", "a", "203.0.113.9"),
                ("example.com", "a", "198.51.100.7"),
            ]
        )
    ]
    assert [(s["x-custom"], s["x-forwarded-host"], s["x-forwarded-for"]) for s in seen] == [
        ("a", "example.com", "127.0.0.1"),
        ("b", "example.com", "127.0.0.1"),
        ("a", "example.com", "127.0.0.1"),
        ("a", "t.example", "203.0.113.9, 127.0.0.1"),
        ("a", "example.com", "127.0.0.1"),
    ]


def _runtime_zones() -> list[ZoneRuntime]:
    """A plain zone, one trusting 10.0.0.0/8 for CF-IPCountry, and one keyed by a country header it
    trusts from any IPv6 proxy."""
    origin = "http://127.0.0.1:9"
    return list(
        ZoneTable(
            (
                Zone.model_validate(
                    {"id": "a" * 32, "name": "a", "hostnames": ["a.example"], "origin": origin}
                ),
                Zone.model_validate(
                    {
                        "id": "b" * 32,
                        "name": "b",
                        "hostnames": ["b.example"],
                        "origin": origin,
                        "trust": {"fields": ["CF-IPCountry"], "proxies": ["10.0.0.0/8"]},
                    }
                ),
                Zone.model_validate(
                    {
                        "id": "c" * 32,
                        "name": "c",
                        "hostnames": ["c.example"],
                        "origin": origin,
                        "cache_key": {"country": True, "country_header": "X-Geo", "device_type": True},
                        "trust": {"fields": ["X-Geo"], "proxies": ["::/0"]},
                    }
                ),
            )
        ).by_id.values()
    )


FILL_ZONES = _runtime_zones()
FILL_IPS = ("10.1.2.3", "203.0.113.9", "::ffff:10.0.0.1", "2001:db8::1")
FILL_HOSTS = ("a.example", "b.example", "c.example")
FILL_NAMES = (
    "accept",
    "authorization",
    "cf-connecting-ip",
    "cf-ipcountry",
    "connection",
    "cookie",
    "if-none-match",
    "range",
    "user-agent",
    "x-custom",
    "x-edgecache-debug",
    "x-forwarded-for",
    "x-geo",
)
fill_requests = st.dictionaries(
    st.sampled_from(FILL_NAMES),
    st.sampled_from(("a", "b", "x-custom", "x-geo, keep-alive", "10.0.0.7", "DE")),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(fill_requests, min_size=1, max_size=4),
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.sampled_from(FILL_IPS),
            st.integers(0, len(FILL_ZONES) - 1),
            st.sampled_from(FILL_HOSTS),
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_remembered_fill_fields_are_each_requests_own(
    requests: list[dict[str, str]], calls: list[tuple[int, str, int, str]]
) -> None:
    """Whatever fills came before, in whatever order, a fill's encoded fields are exactly what
    ``forward_headers`` makes of its own request, client address, zone and host: a memo keyed on
    less (or on the wrong thing) would hand one request another's lines, trusted fields included."""
    fetch_module._FILL_FIELDS.clear()
    for i, ip, z, host in calls + calls[::-1] + calls:
        headers = requests[i % len(requests)]
        zone = FILL_ZONES[z]
        expected = FieldLines.of(
            forward_headers(headers, ip, zone, host, drop=fetch_module.NOT_FORWARDED_TO_ORIGIN_ON_FILL)
        )
        assert fetch_module._fill_fields(headers, ip, zone, host) == expected


def test_fill_fields_with_credentials_or_many_characters_are_not_remembered() -> None:
    """The memo of a fill's fields keeps no client's cookie or authorization after its request,
    nor a request whose fields are long (each would hold them all)."""
    zone = FILL_ZONES[0]
    fetch_module._FILL_FIELDS.clear()
    fetch_module._fill_fields({"accept": "*/*"}, "203.0.113.9", zone, "a.example")
    assert len(fetch_module._FILL_FIELDS) == 1
    for headers in (
        {"accept": "*/*", "cookie": "session=secret"},
        {"accept": "*/*", "authorization": "Bearer secret"},
        {"accept": "*/*", "proxy-authorization": "Basic secret"},
        {"accept": "*/*", "x-custom": "v" * 4096},
    ):
        lines = fetch_module._fill_fields(headers, "203.0.113.9", zone, "a.example")
        drop = fetch_module.NOT_FORWARDED_TO_ORIGIN_ON_FILL
        assert lines == FieldLines.of(forward_headers(headers, "203.0.113.9", zone, "a.example", drop=drop))
    assert len(fetch_module._FILL_FIELDS) == 1
    assert not any("secret" in str(key) for key in fetch_module._FILL_FIELDS)


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:99999",
        "http://127.0.0.1:abc",
        "http://[::1",
        "http://127.0.0.1:0",
        "http://user@127.0.0.1",
        "http://127.0.0.1?x",
        "http://127.0.0.1#f",
        "ftp://127.0.0.1",
        "http://127.0.0.1/path",
    ],
)
def test_an_origin_every_fill_would_fail_on_is_refused_by_the_configuration(origin: str) -> None:
    with pytest.raises(ValidationError, match="origin"):
        Zone.model_validate({"id": PLAIN_ID, "name": "x", "hostnames": ["x.example"], "origin": origin})


@pytest.mark.parametrize("origin", ["http://127.0.0.1:8080", "http://[::1]:8080", "https://o.example/"])
def test_an_origin_with_a_host_and_a_port_is_taken(origin: str) -> None:
    zone = Zone.model_validate({"id": PLAIN_ID, "name": "x", "hostnames": ["x.example"], "origin": origin})
    assert zone.origin == origin.rstrip("/")
