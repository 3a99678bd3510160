"""The data plane's access log and the control plane's structured application logs, on real nodes."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import ZONE_ID, Route, ScriptedOrigin
from edgecache import logs
from edgecache.app import Node
from edgecache.config import Config, Listener, Logging, Tasks, Zone
from edgecache.control.credentials import Permission
from edgecache.db.tasks import NewTask
from edgecache.edge.http1 import Connection
from edgecache.edge.logring import ring_directory

COMBINED = re.compile(
    r'^(?P<ip>\S+) - - \[(?P<time>[^\]]+)\] "(?P<request>(?:[^"\\]|\\.)*)" '
    r"(?P<status>\d{3}|-) (?P<bytes>\d+) "
    r'"(?P<referer>(?:[^"\\]|\\.)*)" "(?P<ua>(?:[^"\\]|\\.)*)" '
    r"cache=(?P<cache>\S+) zone=(?P<zone>\S+) origin_ms=(?P<origin>\S+) total_ms=(?P<total>\S+)$"
)


class LoggedNode:
    """A node (and scripted origin) on its own event loop in this thread, driven step by step."""

    def __init__(self, tmp: Path, **logging_options: object) -> None:
        self.loop = asyncio.new_event_loop()
        self.origin = ScriptedOrigin()
        self.loop.run_until_complete(self.origin.start())
        self.config = Config(
            data_dir=tmp,
            data=Listener(port=0),
            control=Listener(port=0),
            zones=(
                Zone(
                    id=ZONE_ID,
                    name="test.example",
                    hostnames=("test.example",),
                    origin=f"http://127.0.0.1:{self.origin.port}",
                ),
            ),
            logging=Logging(**logging_options),  # type: ignore[arg-type]
            tasks=Tasks(timeout=0.4),
        )
        self.node = Node(self.config)
        self.loop.run_until_complete(self.node.start())

    def request(self, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> int:
        async def go() -> int:
            return await asyncio.to_thread(self._blocking, path, method, headers or {})

        return self.loop.run_until_complete(go())

    def _blocking(self, path: str, method: str, headers: dict[str, str]) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.node.data_port, timeout=10)
        try:
            conn.request(method, path, headers={"Host": "test.example", **headers})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def run(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def close(self) -> None:
        self.loop.run_until_complete(self.node.stop())
        self.loop.run_until_complete(self.origin.stop())
        self.loop.close()


@pytest.fixture
def node_factory() -> Iterator[type[LoggedNode]]:
    made: list[LoggedNode] = []

    class Factory(LoggedNode):
        def __init__(self, tmp: Path, **options: object) -> None:
            super().__init__(tmp, **options)
            made.append(self)

    yield Factory
    for n in made:
        if not n.loop.is_closed():
            n.close()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_access_log_is_off_by_default(tmp_path: Path, node_factory: type[LoggedNode]) -> None:
    n = node_factory(tmp_path)
    assert n.node.access_formatter is None and n.node.access_ring is None
    n.origin.routes["/a"] = Route()
    assert n.request("/a") == 200
    server = n.node._data
    assert server is not None and all(type(c) is Connection for c in server.connections)
    n.close()
    assert not list(tmp_path.glob("*.log")) and not ring_directory(tmp_path).exists()


def test_combined_access_log_has_cache_status_zone_bytes_and_times(
    tmp_path: Path, node_factory: type[LoggedNode]
) -> None:
    path = tmp_path / "logs" / "access.log"
    n = node_factory(tmp_path, access_log=path)
    n.origin.routes["/page"] = Route(body=b"x" * 1000, delay=0.05)
    n.origin.routes["/form"] = Route(body=b"ok", headers={"Cache-Control": "no-store"})
    client = {"User-Agent": 'evil" agent\t\\', "Referer": "http://r.example/"}
    assert n.request("/page", headers=client) == 200
    assert n.request("/page") == 200
    assert n.request("/form", method="POST") == 200
    n.close()
    lines = _lines(path)
    assert len(lines) == 3
    miss, hit, post = (COMBINED.match(line) for line in lines)
    assert miss and hit and post, lines
    assert miss["request"] == "GET /page HTTP/1.1" and miss["status"] == "200"
    assert miss["cache"] == "MISS" and miss["zone"] == "test.example"
    assert float(miss["origin"]) >= 50 and float(miss["total"]) >= float(miss["origin"])
    assert int(miss["bytes"]) > 1000
    # A client cannot end the line or the field early.
    assert miss["ua"] == 'evil\\" agent\\x09\\\\' and miss["referer"] == "http://r.example/"
    assert hit["cache"] == "HIT" and hit["origin"] == "-" and int(hit["bytes"]) > 1000
    assert hit["ip"] == "127.0.0.1"
    assert post["cache"] == "DYNAMIC" and post["request"].startswith("POST /form")
    stamp = datetime.strptime(hit["time"], "%d/%b/%Y:%H:%M:%S %z")
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60


def test_json_access_log_and_requests_of_no_zone(tmp_path: Path, node_factory: type[LoggedNode]) -> None:
    path = tmp_path / "access.jsonl"
    n = node_factory(tmp_path, access_log=path, access_log_format="json")
    n.origin.routes["/j"] = Route(body=b"hello")
    n.request("/j")
    n.request("/j")
    # The formatter process writes while the node runs, not only at shutdown.
    deadline = time.monotonic() + 20
    while (not path.exists() or len(_lines(path)) < 2) and time.monotonic() < deadline:
        n.run(0.1)
    written = [json.loads(line) for line in _lines(path)]
    assert [r["cache"] for r in written] == ["MISS", "HIT"]

    async def other_host() -> None:
        await asyncio.to_thread(_get_other_host, n.node.data_port)

    n.loop.run_until_complete(other_host())
    n.close()
    records = [json.loads(line) for line in _lines(path)]
    assert len(records) == 3
    hit = records[1]
    assert hit["status"] == 200 and hit["zone"] == "test.example" and hit["origin_ms"] is None
    assert hit["method"] == "GET" and hit["target"] == "/j" and hit["protocol"] == "HTTP/1.1"
    assert hit["bytes"] > 5 and hit["total_ms"] >= 0 and hit["time"].endswith("Z")
    assert records[0]["origin_ms"] is not None
    stray = records[2]
    assert stray["status"] == 421 and stray["zone"] is None and stray["cache"] is None


def _get_other_host(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/", headers={"Host": "nowhere.example"})
    conn.getresponse().read()
    conn.close()


@pytest.fixture
def configured() -> Iterator[Callable[[str], io.StringIO]]:
    """``logs.configure`` in a format, its stream captured; everything it set is put back after."""
    root = logging.getLogger()
    ours = logging.getLogger("edgecache")
    saved = root.handlers[:], root.level, ours.level
    switches = (logging.logThreads, logging.logProcesses, logging.logMultiprocessing, logging._srcfile)

    def configure(fmt: str) -> io.StringIO:
        out = io.StringIO()
        logs.configure(Logging(format=fmt))  # type: ignore[arg-type]
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(out)
        return out

    yield configure
    root.handlers[:], level, our_level = saved
    root.setLevel(level)
    ours.setLevel(our_level)
    logging.logThreads, logging.logProcesses, logging.logMultiprocessing, logging._srcfile = switches


@pytest.fixture
def json_stderr(configured: Callable[[str], io.StringIO]) -> io.StringIO:
    return configured("json")


def _log_a_purge_and_a_failure() -> None:
    log = logging.getLogger("edgecache.control.purges")
    log.info("purge accepted: %s", {"tags": ["news"]}, extra={"event": "purge_accepted", "seq": 7})
    try:
        raise ValueError("disk full")
    except ValueError:
        log.exception("recording %d purge acknowledgements failed", 3)


def test_json_lines_carry_their_fields_and_a_traceback(configured: Callable[[str], io.StringIO]) -> None:
    out = configured("json")
    _log_a_purge_and_a_failure()
    accepted, failed = (json.loads(line) for line in out.getvalue().splitlines())
    assert set(accepted) == {"time", "level", "logger", "message", "event", "seq"}
    assert accepted["message"] == "purge accepted: {'tags': ['news']}" and accepted["seq"] == 7
    assert accepted["logger"] == "edgecache.control.purges" and accepted["level"] == "INFO"
    assert datetime.strptime(accepted["time"], "%Y-%m-%dT%H:%M:%S%z")
    assert set(failed) == {"time", "level", "logger", "message", "exc_info"}
    assert "ValueError: disk full" in failed["exc_info"] and "Traceback" in failed["exc_info"]


def test_text_lines_say_time_level_logger_and_message(configured: Callable[[str], io.StringIO]) -> None:
    out = configured("text")
    _log_a_purge_and_a_failure()
    lines = out.getvalue().splitlines()
    line = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|ERROR) edgecache\.control\.purges: (.*)$")
    first, second = line.match(lines[0]), line.match(lines[1])
    assert first and first[2] == "purge accepted: {'tags': ['news']}"
    assert second and second[1] == "ERROR" and second[2] == "recording 3 purge acknowledgements failed"
    assert lines[2] == "Traceback (most recent call last):" and lines[-1] == "ValueError: disk full"


def _events(out: io.StringIO, name: str) -> list[dict[str, object]]:
    found = []
    for line in out.getvalue().splitlines():
        record = json.loads(line)
        if record.get("event") == name:
            found.append(record)
    return found


def _post(n: LoggedNode, path: str, body: dict[str, object], token: str) -> int:
    def go() -> int:
        req = urllib.request.Request(
            f"http://127.0.0.1:{n.node.control_port}{path}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    async def run() -> int:
        return await asyncio.to_thread(go)

    return n.loop.run_until_complete(run())


def test_json_application_logs_say_who_purged_what_and_which_tokens_failed(
    tmp_path: Path, node_factory: type[LoggedNode], json_stderr: io.StringIO
) -> None:
    n = node_factory(tmp_path)
    info, token = n.node.credentials.create_token(
        n.config.accounts[0].id, "deploy bot", [Permission.CACHE_PURGE], [ZONE_ID]
    )
    assert _post(n, f"/client/v4/zones/{ZONE_ID}/purge_cache", {"tags": ["news"]}, token) == 200
    purge = _events(json_stderr, "purge_accepted")
    assert len(purge) == 1
    assert purge[0]["principal"] == f"token:{info.id}" and purge[0]["dialect"] == "cloudflare"
    assert purge[0]["selectors"] == {"tags": ["news"]} and purge[0]["zone_id"] == ZONE_ID
    assert purge[0]["level"] == "INFO" and "time" in purge[0]
    second_info, second = n.node.credentials.create_token(
        n.config.accounts[0].id, "console user", [Permission.ZONE_SETTINGS_READ], [ZONE_ID]
    )
    unknown = "A" * 40
    assert _post(n, f"/client/v4/zones/{ZONE_ID}/purge_cache", {"tags": ["x"]}, unknown) == 403
    n.node.credentials.revoke_token(info.id)
    assert _post(n, f"/client/v4/zones/{ZONE_ID}/purge_cache", {"tags": ["x"]}, token) == 403
    assert _console_sign_in(n, "A" * 40) == 403
    assert _console_sign_in(n, second) == 303
    (signin,) = _events(json_stderr, "signin")
    assert signin["principal"] == f"token:{second_info.id}" and signin["token_name"] == "console user"
    assert _events(json_stderr, "signin_failed")[0]["well_formed"] is True
    rejected = _events(json_stderr, "token_rejected")[:2]
    assert [(r["reason"], r["token_id"]) for r in rejected] == [("unknown", None), ("revoked", info.id)]
    assert token not in json_stderr.getvalue() and unknown not in json_stderr.getvalue()


def _console_sign_in(n: LoggedNode, token: str) -> int:
    """Sign in through the console's form as a browser would; the answer's status."""
    base = f"http://127.0.0.1:{n.node.control_port}/console"

    def go() -> int:
        with urllib.request.urlopen(f"{base}/signin", timeout=10) as resp:
            cookie = resp.headers["Set-Cookie"].split(";")[0]
            nonce = cookie.split("=", 1)[1]
        req = urllib.request.Request(
            f"{base}/signin",
            data=urllib.parse.urlencode({"csrf": nonce, "token": token, "next": "/console/"}).encode(),
            headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{n.node.control_port}"},
        )
        opener = urllib.request.build_opener(_NoRedirect())
        try:
            with opener.open(req, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    async def run() -> int:
        return await asyncio.to_thread(go)

    return n.loop.run_until_complete(run())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_task_timeouts_are_logged(
    tmp_path: Path, node_factory: type[LoggedNode], json_stderr: io.StringIO
) -> None:
    n = node_factory(tmp_path)
    n.node.tasks.create_job(
        job_id="f" * 32,
        kind="prefetch",
        zone_id=ZONE_ID,
        items=[NewTask("http://test.example/never", "prefetch_url", "test.example")],
        principal="token:x",
        dialect="cli",
        created_at=datetime.now(UTC) - timedelta(seconds=5),
    )
    deadline = time.monotonic() + 10
    while not _events(json_stderr, "tasks_timeout") and time.monotonic() < deadline:
        n.run(0.1)
    (event,) = _events(json_stderr, "tasks_timeout")
    assert event["count"] == 1 and event["level"] == "WARNING"
