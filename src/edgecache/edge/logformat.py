"""Access-log lines from ring records: the combined format (with cache fields) and JSON lines.

``combined`` is Apache/nginx's combined log format (bytes are all bytes sent, head included, as
nginx's ``$bytes_sent``) followed by ``cache= zone= origin_ms= total_ms=``; ``json`` is one JSON
object per line. Fields a client controls are escaped so that a request cannot end a line or a
quoted field early. A request value that was absent (or empty) is ``-`` in ``combined`` and
``null`` in JSON. ``origin_ms`` is given for answers that needed the origin (MISS, EXPIRED,
REVALIDATED, BYPASS, DYNAMIC; for a collapsed request, its wait for the shared fetch).
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from typing import Literal

from edgecache.edge.logring import HIT_KIND, Record, record
from edgecache.edge.zones import ZoneTable

Format = Literal["combined", "json"]
ORIGIN_STATUSES = frozenset({"MISS", "EXPIRED", "REVALIDATED", "BYPASS", "DYNAMIC"})
ZONE_MEMO_MAX = 4096
LINE_MEMO_MAX = 4096


class LineFormatter:
    """Turns ring records into lines of one format. Monotonic times become wall-clock ones through
    the offset between the clocks when a batch is formatted (the monotonic clock is the same in
    every process of the machine).

    A fresh hit's line is its time plus text that depends only on the request and the answer, and
    hits repeat: that text is formatted once and kept (up to ``LINE_MEMO_MAX`` requests), keyed
    by the record's bytes but its time; the time string is made once a second (once a
    millisecond for JSON)."""

    def __init__(self, fmt: Format, zones: ZoneTable) -> None:
        self.line: Callable[[Record, str], str] = self._json if fmt == "json" else self._combined
        self._stamp: Callable[[float], str] = self._iso_time if fmt == "json" else self._clf_time
        self._zones = zones
        self._zone_names: dict[str, str] = {}
        self._memo: dict[bytes, tuple[str, str]] = {}
        self._second = self._ms = -1
        self._second_text = self._ms_text = ""

    def lines(self, records: list[bytes]) -> str:
        """The lines of a ring's packed records (as :meth:`RingReader.read` gives them), joined."""
        offset = time.time() - time.monotonic()
        line = self.line
        stamp = self._stamp
        memo = self._memo
        out = []
        for rec in records:
            if rec[_KIND_AT] == HIT_KIND:
                # Everything but the time, which is the record's first 8 bytes.
                key = rec[8:]
                parts = memo.get(key)
                if parts is None:
                    if len(memo) >= LINE_MEMO_MAX:
                        memo.clear()
                    before, _, after = line(record(rec), _AT).partition(_AT)
                    parts = memo[key] = (before, after)
                out.append(parts[0] + stamp(_END.unpack_from(rec)[0] / 1e9 + offset) + parts[1])
            else:
                decoded = record(rec)
                out.append(line(decoded, stamp(decoded.end + offset)))
        return "".join(out)

    def _fields(self, rec: Record) -> tuple[str, str, str, str]:
        """Cache status, zone name, origin ms and total ms of a record."""
        cache = rec.cache or "-"
        host = rec.host
        zone = self._zone_names.get(host)
        if zone is None:
            found = self._zones.for_host(host)
            zone = found[0].config.name if isinstance(found, tuple) else "-"
            if len(self._zone_names) >= ZONE_MEMO_MAX:
                self._zone_names.clear()
            self._zone_names[host] = zone
        origin = "%.3f" % ((rec.head_at - rec.start) * 1000) if cache in ORIGIN_STATUSES else "-"
        return cache, zone, origin, "%.3f" % ((rec.end - rec.start) * 1000)

    def _combined(self, rec: Record, at: str) -> str:
        cache, zone, origin, total = self._fields(rec)
        target = rec.target
        referer = rec.referer or "-"
        agent = rec.user_agent or "-"
        if _UNSAFE.search(target) or _UNSAFE.search(referer) or _UNSAFE.search(agent):
            target, referer, agent = _q(target), _q(referer), _q(agent)
        return _COMBINED % (
            rec.client_ip or "-",
            at,
            rec.method,
            target,
            rec.version,
            rec.status if rec.status.isdigit() else "-",
            rec.sent,
            referer,
            agent,
            cache,
            zone,
            origin,
            total,
        )

    def _json(self, rec: Record, at: str) -> str:
        cache, zone, origin, total = self._fields(rec)
        return _JSON % (
            at,
            _js(rec.client_ip),
            _js(rec.method),
            _js(rec.target),
            rec.version,
            rec.status if rec.status.isdigit() else "null",
            rec.sent,
            _js(rec.host),
            _js(None if zone == "-" else zone),
            _js(None if cache == "-" else cache),
            "null" if origin == "-" else origin,
            total,
            _js(rec.referer),
            _js(rec.user_agent),
        )

    def _clf_time(self, at: float) -> str:
        second = int(at)
        if self._second != second:
            self._second = second
            self._second_text = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))
        return self._second_text

    def _iso_time(self, at: float) -> str:
        ms = int(at * 1000)
        if self._ms != ms:
            self._ms = ms
            second, rest = divmod(ms, 1000)
            if self._second != second:
                self._second = second
                self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._ms_text = f"{self._second_text}.{rest:03d}"
        return self._ms_text


_END = struct.Struct("<q")
_KIND_AT = 18
_AT = "\x00"
"""Where the time goes in a hit's memoised line: a character no line holds (requests' values are
escaped, and the rest is ours)."""
_COMBINED = '%s - - [%s] "%s %s HTTP/%s" %s %d "%s" "%s" cache=%s zone=%s origin_ms=%s total_ms=%s\n'
_JSON = (
    '{"time": "%sZ", "client": %s, "method": %s, "target": %s, "protocol": "HTTP/%s", '
    '"status": %s, "bytes": %d, "host": %s, "zone": %s, "cache": %s, "origin_ms": %s, "total_ms": %s, '
    '"referer": %s, "user_agent": %s}\n'
)
_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f-\xff]')
"""What a quoted combined-format field may not contain as is (bytes above 0x7e are escaped too:
they arrive as raw octets and the log file is written as UTF-8)."""


def _js(text: str | None) -> str:
    # ASCII-only: U+0085 and U+2028 end lines for some readers (Python's splitlines among them).
    return encode_basestring_ascii(text) if text else "null"


def _q(text: str) -> str:
    """A request value inside a quoted combined-format field: quotes, backslashes and control
    characters escaped, so a client cannot forge a line or a field."""
    return "".join("\\" + c if c in '"\\' else c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in text)
