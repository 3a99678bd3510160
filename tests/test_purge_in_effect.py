""" "A purge is in effect when the API answers", with the reclaimer held back.

The reclaimer normally removes purged entries within milliseconds, before the next request comes,
which would hide the loss of the lookup-time check (``Proxy._purge_check``). Here it is held
(``Reclaimer.hold``) while each dialect purges each selector, so the entry is still in the store
when the next request arrives and only the check on the hit can answer MISS (hard) or REVALIDATED
(soft). Dialects: the Cloudflare v4 API through the official ``cloudflare`` SDK (``purge_cache``,
``invalidate_cache``), EdgeOne's ``CreatePurgeTask`` through the official teo SDK, and the
``edgecache purge`` command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cloudflare
import pytest
from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.teo.v20220901 import models, teo_client
from typer.testing import CliRunner

from conftest import ZONE_ID, Route, Stack
from edgecache.cli import app
from edgecache.control.credentials import Permission

HOST = "test.example"


@dataclass(frozen=True)
class Case:
    """One cached object, alone under its path prefix and with a tag of its own."""

    name: str

    @property
    def path(self) -> str:
        return f"/pin/{self.name}/object"

    @property
    def tag(self) -> str:
        return f"pin-{self.name}"

    @property
    def url(self) -> str:
        return f"http://{HOST}{self.path}"

    @property
    def prefix(self) -> str:
        return f"{HOST}/pin/{self.name}/"


@dataclass
class Clients:
    stack: Stack
    cf: cloudflare.Cloudflare
    teo: Any
    eo_zone: str
    token: str


@pytest.fixture(scope="module")
def clients(stack: Stack, direct_to_loopback: None) -> Iterator[Clients]:
    token = stack.token()
    cf = cloudflare.Cloudflare(
        api_token=token, base_url=f"http://127.0.0.1:{stack.node.control_port}/client/v4", max_retries=0
    )
    secret_id, secret_key = stack.node.secrets.create(
        stack.node.config.accounts[0].id, "pin", [Permission.CACHE_PURGE]
    )
    profile = ClientProfile(
        httpProfile=HttpProfile(
            protocol="http", endpoint=f"127.0.0.1:{stack.node.control_port}", reqTimeout=10
        )
    )
    teo = teo_client.TeoClient(credential.Credential(secret_id, secret_key), "", profile)
    yield Clients(stack, cf, teo, stack.node.zones.by_id[ZONE_ID].config.eo_id, token)
    cf.close()


@pytest.fixture
def held(stack: Stack) -> Iterator[None]:
    stack.call(stack.node.reclaimer.hold)
    try:
        yield
    finally:
        stack.call(stack.node.reclaimer.release)
        stack.run(stack.node.reclaimer.drain())


# --- the three ways in ------------------------------------------------------------------------------


def cloudflare_purge(c: Clients, case: Case, selector: str, soft: bool) -> None:
    body: dict[str, Any] = {
        "url": {"files": [case.url]},
        "tag": {"tags": [case.tag.upper()]},
        "host": {"hosts": [HOST]},
        "prefix": {"prefixes": [case.prefix]},
        "everything": {"purge_everything": True},
    }[selector]
    answer = (c.cf.cache.invalidate if soft else c.cf.cache.purge)(zone_id=ZONE_ID, **body)
    assert answer is not None and len(answer.id) == 32


def edgeone_purge(c: Clients, case: Case, selector: str, soft: bool) -> None:
    type_, targets = {
        "url": ("purge_url", [case.url]),
        "tag": ("purge_cache_tag", [case.tag]),
        "host": ("purge_host", [HOST]),
        "prefix": ("purge_prefix", [f"http://{case.prefix}"]),
        "everything": ("purge_all", None),
    }[selector]
    req = models.CreatePurgeTaskRequest()
    req.ZoneId = c.eo_zone
    req.Type = type_
    if targets is not None:
        req.Targets = targets
    # Explicit for every type: the defaults differ between types.
    req.Method = "invalidate" if soft else "delete"
    assert c.teo.CreatePurgeTask(req).JobId


def cli_purge(c: Clients, case: Case, selector: str, soft: bool) -> None:
    args = {
        "url": ["--url", case.url],
        "tag": ["--tag", case.tag],
        "host": ["--host", HOST],
        "prefix": ["--prefix", case.prefix],
        "everything": ["--everything"],
    }[selector]
    api = f"http://127.0.0.1:{c.stack.node.control_port}/client/v4"
    argv = [
        "purge",
        "--zone",
        ZONE_ID,
        *args,
        "--api",
        api,
        "--token",
        c.token,
        *(["--soft"] if soft else []),
    ]
    said = CliRunner().invoke(app, argv)
    assert said.exit_code == 0, said.output
    assert len(said.stdout.strip()) == 32  # the job id


DIALECTS: dict[str, Callable[[Clients, Case, str, bool], None]] = {
    "cloudflare": cloudflare_purge,
    "edgeone": edgeone_purge,
    "cli": cli_purge,
}
SELECTORS = ("url", "tag", "host", "prefix", "everything")


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("selector", SELECTORS)
@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_the_next_request_sees_the_purge_before_the_reclaimer_runs(
    clients: Clients, held: None, dialect: str, selector: str, soft: bool
) -> None:
    stack = clients.stack
    case = Case(f"{dialect}-{selector}-{'soft' if soft else 'hard'}")
    etag = f'"{case.name}"'
    stack.origin.routes[case.path] = Route(
        headers={"Cache-Control": "public, max-age=600", "ETag": etag, "Cache-Tag": case.tag}
    )
    stack.request(case.path)
    assert stack.request(case.path)[1]["cf-cache-status"] == "HIT"
    fetched = stack.origin.hits[case.path]

    DIALECTS[dialect](clients, case, selector, soft)

    # Held back: the entry is still stored, untouched, and the purge waits in the reclaimer's queue.
    stored = stack.call(lambda: stack.node.store.keys_with_prefix(case.url))
    assert stored and stack.node.reclaimer.pending >= 1
    assert all(stack.call(lambda k=k: stack.node.store.peek(k)).stale_since is None for k in stored)

    status, headers, body = stack.request(case.path)
    assert (status, body) == (200, b"hello")
    if soft:
        assert headers["cf-cache-status"] == "REVALIDATED"
        assert stack.origin.requests[-1][2].get("If-None-Match") == etag
    else:
        assert headers["cf-cache-status"] == "MISS"
        assert stack.origin.requests[-1][2].get("If-None-Match") is None
    assert stack.origin.hits[case.path] == fetched + 1
    # Answered from the origin once; the refreshed entry is a plain hit again.
    assert stack.request(case.path)[1]["cf-cache-status"] == "HIT"
