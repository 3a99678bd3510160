"""Header-field plumbing a cache needs: hop-by-hop removal, 304 merging, and the stored head encoding.

Rules of this module:
- Hop-by-hop fields (RFC 9110 §7.6.1) and every field named in Connection are never forwarded or stored.
- Some request fields are the edge's to set (``EDGE_ONLY``): the client's values never pass unless trusted.
- A 304 updates the stored fields it carries (RFC 9111 §3.2, §4.3.4) in place: the new lines take the
  position of the first stored line of that name, other stored lines of that name go; Content-Length
  and hop-by-hop fields of the 304 are ignored.
- The stored head is ``Name: value\\r\\n`` per field in ISO-8859-1 (what HTTP/1.1 puts on the wire);
  :func:`decode_head` is the exact inverse of :func:`encode_head`. Values must not contain CR or LF:
  encoding such a value raises ValueError rather than storing a response-splitting head.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)

EDGE_ONLY = frozenset(
    {
        "cf-ipcountry",
        "cf-device-type",
        "cf-connecting-ip",
        "cf-ray",
        "cf-visitor",
        "true-client-ip",
        "x-real-ip",
        "x-forwarded-for",
    }
)
"""Request fields that only an edge (or a proxy in front of it) may set: a client's own values are
removed before forwarding unless the zone trusts them from that peer (see ``config.ClientTrust``)."""


@lru_cache(maxsize=256)
def connection_options(value: str) -> frozenset[str]:
    """The field names listed in one Connection field value, lower-cased (RFC 9110 §7.6.1).
    Remembered per value (bounded): every origin response and many requests send the same one."""
    return frozenset(t for token in value.split(",") if (t := token.strip().lower()))


def _connection_options(headers: Sequence[tuple[str, str]]) -> frozenset[str]:
    """HOP_BY_HOP plus the field names listed in Connection (RFC 9110 §7.6.1)."""
    named = frozenset().union(*(connection_options(v) for name, v in headers if name.lower() == "connection"))
    return HOP_BY_HOP | named if named else HOP_BY_HOP


def strip_hop_by_hop(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The fields that may be stored or forwarded: all but hop-by-hop ones (RFC 9110 §7.6.1)."""
    drop = _connection_options(headers)
    return [(name, value) for name, value in headers if name.lower() not in drop]


def merge_304(stored: Sequence[tuple[str, str]], fresh: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Update stored header fields with those of a 304 response (RFC 9111 §3.2, §4.3.4)."""
    drop = _connection_options(fresh) | {"content-length"}
    updates: dict[str, list[tuple[str, str]]] = {}
    for name, value in fresh:
        n = name.lower()
        if n not in drop:
            updates.setdefault(n, []).append((name, value))
    if not updates:
        return list(stored)
    out: list[tuple[str, str]] = []
    placed: set[str] = set()
    for name, value in stored:
        n = name.lower()
        lines = updates.get(n)
        if lines is None:
            out.append((name, value))
        elif n not in placed:
            out.extend(lines)
            placed.add(n)
    for n, lines in updates.items():
        if n not in placed:
            out.extend(lines)
    return out


def encode_head(headers: Sequence[tuple[str, str]]) -> bytes:
    """Encode fields as ``Name: value\\r\\n`` lines in ISO-8859-1."""
    text = "".join([f"{name}: {value}\r\n" for name, value in headers])
    # One CR and one LF per field, or a value smuggled in a line break.
    if text.count("\n") != len(headers) or text.count("\r") != len(headers):
        raise ValueError("header field contains CR or LF")
    return text.encode("latin-1")


def decode_head(head: bytes) -> list[tuple[str, str]]:
    """Decode a head produced by :func:`encode_head` back into fields."""
    if not head:
        return []
    lines = head.decode("latin-1").split("\r\n")
    out: list[tuple[str, str]] = []
    for line in lines[:-1]:
        name, _, value = line.partition(": ")
        out.append((name, value))
    return out
