"""The cache key: which requests share a stored response.

Rules of this module:
- Key format (other code depends on it): the primary key is ``scheme://host/path[?query]``; variant
  parts follow, each ``"\\x00" + name + "=" + value``. Everything before the first NUL identifies the
  URL (all its variants); header values cannot contain NUL (RFC 9110 §5.5), so NUL is a safe separator.
- The path is normalised once, by RFC 3986 §6.2.2 and nothing more: percent-encodings get upper-case
  hex digits, those of unreserved characters are decoded, and then dot-segments are removed (§5.2.4),
  so ``/c/a/../gap``, ``/c/./gap``, ``/c/%2e/gap`` and ``/c/x/%2E%2E/gap`` are all ``/c/gap``. The
  same function builds the key, the purge selectors and the target the origin receives
  (:func:`origin_target`), so one spelling is one object: a purge of the normal form reaches every
  spelling, and no spelling can reach an origin object the key names differently. The path stays
  case-sensitive and empty segments and trailing slashes are kept; an empty path becomes "/". A
  fragment, which never reaches the origin, is dropped.
- Scheme and host are lower-cased, a trailing dot and the scheme's default port (or an empty port)
  are removed from the host.
- With an absolute-form request-target the host inside it wins over the Host header (RFC 9112 §3.2.2);
  the scheme stays the one of the connection, so a client cannot file a response fetched for plain
  HTTP under the https key.
- Request fields only an edge may set (``cf-device-type``, the country header) select a variant only
  when the caller says they are trusted; otherwise the device type comes from User-Agent and the
  country is empty, so a client cannot name another client's variant.
- Variant parts are computed only when configured: with none, :func:`variant_suffix` returns "" at
  the cost of one attribute test (the common, hot case).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

VARIANT_SEP = "\x00"

_DEFAULT_PORTS = {"http": "80", "https": "443"}
_HEX = "0123456789abcdefABCDEF"
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _percent_table() -> dict[str, str]:
    """Two hex digits after a "%" → their normalised replacement (RFC 3986 §6.2.2.1, §6.2.2.2)."""
    table: dict[str, str] = {}
    for a in _HEX:
        for b in _HEX:
            c = chr(int(a + b, 16))
            table[a + b] = c if c in _UNRESERVED else "%" + (a + b).upper()
    return table


_PCT = _percent_table()
_MAX_MEMO_LEN = 512
"""Longest Host or User-Agent value worth memoising; bounds the memory a memo can hold."""
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")


@dataclass(frozen=True, slots=True)
class KeyOptions:
    """What goes into the cache key beyond scheme, host, path and query."""

    query: Literal["include", "ignore", "sort"] = "include"
    device_type: bool = False
    country: bool = False
    country_header: str = "cf-ipcountry"
    language: bool = False
    origin: bool = False
    extra_headers: tuple[str, ...] = ()
    has_variants: bool = field(init=False, repr=False, compare=False)
    """True when any variant part is configured (precomputed for the hot path)."""

    def __post_init__(self) -> None:
        # Request header names are lower-case by convention; normalising here keeps lookups exact.
        object.__setattr__(self, "country_header", self.country_header.strip().lower())
        extra = tuple(dict.fromkeys(h.strip().lower() for h in self.extra_headers))
        object.__setattr__(self, "extra_headers", extra)
        variants = self.device_type or self.country or self.language or self.origin or bool(extra)
        object.__setattr__(self, "has_variants", variants)


def normalise_path(path: str) -> str:
    """RFC 3986 §6.2.2: percent-encoding normalisation (§6.2.2.1-§6.2.2.2), then dot-segment removal
    (§6.2.2.3, by the algorithm of §5.2.4). The result starts with "/": "" becomes "/" (§6.2.3).

    Idempotent: a decoded character is unreserved, never "%", so no new escape can appear, and removing
    dot-segments leaves none behind.
    """
    if "%" in path:
        parts = path.split("%")
        out = [parts[0]]
        for part in parts[1:]:
            rep = _PCT.get(part[:2])
            out.append("%" + part if rep is None else rep + part[2:])
        path = "".join(out)
    if path[:1] != "/":
        path = "/" + path
    if "/." in path:
        return _remove_dot_segments(path)
    return path


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for a path starting with "/" (every dot-segment is then preceded by "/")."""
    segments = path.split("/")
    out: list[str] = []
    for seg in segments[1:]:
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
    if segments[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out)


def origin_target(target: str) -> str:
    """The origin-form target a request the cache does not store (a pass-through method) sends for
    an origin-form ``target``: the path exactly as the key normalises it, the query as received."""
    h = target.find("#")
    if h >= 0:
        target = target[:h]
    path, sep, query = target.partition("?")
    return normalise_path(path) + sep + query


def fill_target(target: str, opts: KeyOptions) -> str:
    """The origin-form target a fill sends for an origin-form ``target``: the key's path and query
    exactly (the query dropped with ``ignore``, its parameters sorted with ``sort``, none when
    empty). What is stored under a key must be what the origin answered for that key: were the
    query sent as received while the key ignores it, the first client's query would choose what
    every client of the key gets (decision 0012, rule 4)."""
    h = target.find("#")
    if h >= 0:
        target = target[:h]
    path, _sep, query = target.partition("?")
    path = normalise_path(path)
    if not query or opts.query == "ignore":
        return path
    return path + "?" + (_sort_query(query) if opts.query == "sort" else query)


def normalise_host(scheme: str, host: str) -> str:
    """Lower-case, drop a trailing dot and the scheme's default or empty port (RFC 3986 §6.2.2.1, §6.2.3).

    A non-default port is kept, without leading zeros; IPv6 literals keep their brackets. Memoised: a
    node sees few distinct Host values, and this runs on every request. Values too long to be a host
    name are not memoised, so junk cannot fill the memo with large strings.
    """
    if len(host) > _MAX_MEMO_LEN:
        return _normalise_host(scheme, host)
    return _normalise_host_memo(scheme, host)


def _normalise_host(scheme: str, host: str) -> str:
    h = host.strip().lower()
    i = h.rfind(":")
    if i < 0 or "]" in h[i:]:
        return h.rstrip(".")
    name = h[:i].rstrip(".")
    port = h[i + 1 :]
    if not port:
        return name
    if port.isascii() and port.isdigit():
        port = port.lstrip("0") or "0"
        if port == _DEFAULT_PORTS.get(scheme):
            return name
    return name + ":" + port


_normalise_host_memo = lru_cache(maxsize=1024)(_normalise_host)


def _sort_query(query: str) -> str:
    """Sort ``&``-separated parameters by name, stably: repeated names keep their relative order."""
    if "&" not in query:
        return query
    return "&".join(sorted(query.split("&"), key=lambda p: p.partition("=")[0]))


def _split_authority(rest: str) -> tuple[str, str]:
    """Split ``host[:port]/path?query`` (after "scheme://") into authority and origin-form target."""
    end = len(rest)
    for c in "/?#":
        j = rest.find(c, 0, end)
        if j >= 0:
            end = j
    authority = rest[:end]
    at = authority.rfind("@")
    if at >= 0:
        authority = authority[at + 1 :]
    target = rest[end:]
    return authority, target if target[:1] == "/" else "/" + target


def _scheme_end(url: str) -> int:
    """Index of "://" if ``url`` starts with a syntactically valid scheme (RFC 3986 §3.1), else -1."""
    i = url.find("://")
    if i <= 0 or not url[0].isalpha() or not _SCHEME_CHARS.issuperset(url[:i]):
        return -1
    return i


def primary_key(scheme: str, host: str, target: str, opts: KeyOptions) -> str:
    """The URL part of the cache key for a request (RFC 9111 §4: the key is at least method and URI).

    ``target`` is the request-target in origin-form (``/path?query``) or absolute-form
    (``http://host/path``, whose host then wins over ``host``). The query is kept, dropped or has its
    parameters sorted according to ``opts.query``.
    """
    scheme = scheme.lower()
    if target[:1] != "/":
        i = _scheme_end(target)
        if i > 0:
            host, target = _split_authority(target[i + 3 :])
    h = target.find("#")
    if h >= 0:
        target = target[:h]
    path, sep, query = target.partition("?")
    path = normalise_path(path)
    key = scheme + "://" + normalise_host(scheme, host) + path
    if not sep or not query or opts.query == "ignore":
        return key
    return key + "?" + (_sort_query(query) if opts.query == "sort" else query)


def key_and_target(host: str, target: str, opts: KeyOptions) -> tuple[str, str]:
    """``(primary_key("http", host, target, opts), fill_target(target, opts))`` for an origin-form
    ``target``, with its path normalised once: a miss needs both, the key to look up and file the
    fill, the target to send, and they must name the same path and query (decision 0012, rule 4).
    Any other form goes to the two functions (``primary_key`` takes an absolute form's authority).

    One call where there were five (the two functions, a ``normalise_path`` each and
    ``normalise_host``): the common path, with no "%" and no "/.", is already normal, and the
    host's memo is asked directly.
    """
    if target[:1] != "/":
        return primary_key("http", host, target, opts), fill_target(target, opts)
    h = target.find("#")
    if h >= 0:
        target = target[:h]
    path, _sep, query = target.partition("?")
    if "%" in path or "/." in path:
        path = normalise_path(path)
    # normalise_host, without its frame.
    host = _normalise_host_memo("http", host) if len(host) <= _MAX_MEMO_LEN else _normalise_host("http", host)
    if not query or opts.query == "ignore":
        return "http://" + host + path, path
    sent = path + "?" + (_sort_query(query) if opts.query == "sort" else query)
    return "http://" + host + sent, sent


def url_key(url: str, opts: KeyOptions) -> str:
    """The primary key for an absolute URL given in a purge request; without a scheme, http is assumed.

    Accepts ``https://Example.com/a?b``, ``example.com/a`` and ``//example.com/a``; raises ValueError
    when there is no host.
    """
    u = url.strip()
    i = _scheme_end(u)
    if i > 0:
        scheme, rest = u[:i], u[i + 3 :]
    else:
        scheme, rest = "http", u.removeprefix("//")
    host, target = _split_authority(rest)
    if not host:
        raise ValueError(f"URL has no host: {url!r}")
    return primary_key(scheme, host, target, opts)


def device_type(user_agent: str) -> Literal["mobile", "tablet", "desktop"]:
    """Classify a User-Agent the way Cloudflare's device-type cache key does.

    Tablet markers are tested first because iPad and Kindle agents also say "Mobile"; an Android agent
    without a mobile marker is a tablet. Memoised like :func:`normalise_host`: User-Agent values repeat
    heavily and the classification scans the string a dozen times.
    """
    if len(user_agent) > _MAX_MEMO_LEN:
        return _device_type(user_agent)
    return _device_type_memo(user_agent)


def _device_type(ua: str) -> Literal["mobile", "tablet", "desktop"]:
    if "iPad" in ua or "Kindle" in ua or "Silk" in ua or "PlayBook" in ua or "Tablet" in ua:
        return "tablet"
    if (
        "Mobi" in ua
        or "iPhone" in ua
        or "iPod" in ua
        or "BlackBerry" in ua
        or "Opera Mini" in ua
        or "IEMobile" in ua
        or "Windows Phone" in ua
    ):
        return "mobile"
    if "Android" in ua:
        return "tablet"
    return "desktop"


_device_type_memo = lru_cache(maxsize=4096)(_device_type)


_DEVICE_TYPES = frozenset({"mobile", "tablet", "desktop"})


def _language(accept_language: str) -> str:
    """The first language tag of Accept-Language (RFC 9110 §12.5.4), lower-cased; "" for "*" or none."""
    tag = accept_language.split(",", 1)[0].split(";", 1)[0].strip().lower()
    return "" if tag == "*" else tag


def variant_suffix(
    headers: Mapping[str, str], opts: KeyOptions, trusted: frozenset[str] = frozenset()
) -> str:
    """The configured variant parts of the key, in the fixed order dt, cc, lang, origin, h:<name>.

    A missing header gives an empty value, so requests without it form their own variant. ``trusted``
    names the edge-only fields whose values count: an explicit ``cf-device-type`` of mobile, tablet or
    desktop wins over the User-Agent heuristic only when trusted, and the country is read only from
    a trusted country header (else it is empty).
    """
    if not opts.has_variants:
        return ""
    parts: list[str] = []
    if opts.device_type:
        parts.append("\x00dt=" + variant_device_type(headers, trusted))
    if opts.country:
        cc = headers.get(opts.country_header, "") if opts.country_header in trusted else ""
        parts.append("\x00cc=" + cc.strip().upper())
    if opts.language:
        parts.append("\x00lang=" + _language(headers.get("accept-language", "")))
    if opts.origin:
        parts.append("\x00origin=" + headers.get("origin", "").strip().lower())
    for name in opts.extra_headers:
        parts.append("\x00h:" + name + "=" + headers.get(name, "").strip())
    return "".join(parts)


def variant_device_type(headers: Mapping[str, str], trusted: frozenset[str] = frozenset()) -> str:
    """The device type a request selects: a trusted ``cf-device-type`` if valid, else from User-Agent."""
    if "cf-device-type" in trusted:
        dt = headers.get("cf-device-type", "").strip().lower()
        if dt in _DEVICE_TYPES:
            return dt
    return device_type(headers.get("user-agent", ""))


def _normalise_list_value(value: str) -> str:
    """Collapse whitespace around commas so that ``a,b`` and ``a, b`` select the same variant."""
    if "," not in value:
        return value.strip()
    return ",".join(p.strip() for p in value.split(","))


_QVALUE = re.compile(r"q=(0(\.[0-9]{0,3})?|1(\.0{0,3})?)", re.ASCII | re.IGNORECASE)


def normalise_accept_language(value: str) -> str:
    """Accept-Language (RFC 9110 §12.5.4) in a normal form: tags lower-cased, whitespace removed, q
    written without trailing zeros (and left out when 1), tags of equal weight in alphabetical order,
    higher weights first. Equal-weight tags express no preference among themselves, so reordering
    them keeps the meaning. A value that does not parse is only whitespace-normalised.
    """
    if len(value) > _MAX_MEMO_LEN:
        return _normalise_accept_language(value)
    return _normalise_accept_language_memo(value)


def _normalise_accept_language(value: str) -> str:
    items: list[tuple[float, str]] = []
    for raw in value.split(","):
        tag, semi, param = raw.partition(";")
        tag = tag.strip().lower()
        if not tag:
            continue
        weight = "1"
        if semi:
            m = _QVALUE.fullmatch(param.strip().replace(" ", ""))
            if m is None:
                return _normalise_list_value(value)
            weight = m.group(1).rstrip("0").rstrip(".") or "0"
        items.append((-float(weight), tag if weight == "1" else tag + ";q=" + weight))
    items.sort()
    return ",".join(item for _, item in items)


_normalise_accept_language_memo = lru_cache(maxsize=4096)(_normalise_accept_language)


def vary_suffix(names: tuple[str, ...], headers: Mapping[str, str]) -> str:
    """Key parts selecting a variant by the request fields named in Vary (RFC 9111 §4.1).

    ``names`` are the lower-cased, sorted names a stored response carried; values are normalised
    (§4.1 permits normalising semantically equivalent values): whitespace around commas is collapsed,
    and Accept-Language is put in the normal form of :func:`normalise_accept_language`. An absent
    field and an empty one select the same variant.
    """
    out = ""
    for name in names:
        value = headers.get(name)
        if not value:
            out += "\x00v:" + name + "="
        elif name == "accept-language":
            out += "\x00v:" + name + "=" + normalise_accept_language(value)
        else:
            out += "\x00v:" + name + "=" + _normalise_list_value(value)
    return out


def split_key(key: str) -> tuple[str, dict[str, str]]:
    """Split a full key into its primary key and its variant parts (name → value)."""
    primary, *parts = key.split(VARIANT_SEP)
    variants: dict[str, str] = {}
    for part in parts:
        name, _, value = part.partition("=")
        variants[name] = value
    return primary, variants


def host_and_path(primary: str) -> tuple[str, str]:
    """Host (with its port when not the default) and path-with-query of a primary key."""
    start = primary.find("://") + 3
    slash = primary.find("/", start)
    if slash < 0:
        return primary[start:], "/"
    return primary[start:slash], primary[slash:]
