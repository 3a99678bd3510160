"""Cache-Control (RFC 9111 §5.2) and CDN-Cache-Control (RFC 9213) response directives.

Rules of this module:
- Parsing never raises: a field we cannot read is treated as cautiously as the RFCs allow.
- Cache-Control is parsed tolerantly (RFC 9111 §5.2): directive names are case-insensitive, arguments
  may be tokens or quoted strings, empty list elements are skipped, several field lines are one list.
- A delta-seconds argument that is not a non-negative integer makes max-age / s-maxage 0, i.e. the
  response is stale (RFC 9111 §4.2.1); for stale-while-revalidate / stale-if-error (RFC 5861) the
  directive is ignored instead, since those only ever extend reuse. Values above 2**31 are clamped to
  2**31 (RFC 9111 §1.2.2).
- Parsing is memoised per distinct field value (one line, up to ``MEMO_VALUE_MAX`` characters): an
  origin sends the same few values on every response, and the result is immutable, so sharing it
  is safe. The memo is bounded and emptied when full, so an origin cannot grow it.
- A directive given twice: the first occurrence wins (RFC 9111 §4.2.1 allows "first" or "stale";
  first keeps ``max-age=60, max-age=60`` cacheable, which is what origins that repeat themselves mean).
- The qualified forms ``no-cache="field"`` and ``private="field"`` count as the unqualified directive:
  a shared cache that does not strip the named fields must not reuse the response without care.
- CDN-Cache-Control is a Structured Fields Dictionary (RFC 8941 / RFC 9651). If it does not parse as
  one, or is empty, it is ignored (None) and Cache-Control applies (RFC 9213 §2.1, §2.2). A directive
  whose value violates its type (a non-integer or negative max-age) is ignored; a boolean directive
  counts as present unless its value is ``?0``. Duplicate keys: the last wins, as RFC 8941 §4.2.2 says.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from edgecache.httpcache.memo import remember

DELTA_MAX = 2**31
"""The largest delta-seconds we represent (RFC 9111 §1.2.2)."""
_T = TypeVar("_T")
MEMO_MAX = 1024
"""Distinct field values remembered by each parser's memo before it is emptied."""
MEMO_VALUE_MAX = 256
"""Longer values are parsed each time: the memo holds at most MEMO_MAX short strings."""


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The response directives a shared cache acts on."""

    max_age: int | None = None
    s_maxage: int | None = None
    no_store: bool = False
    no_cache: bool = False
    private: bool = False
    public: bool = False
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    immutable: bool = False
    no_transform: bool = False
    must_understand: bool = False
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None


def _delta_seconds(arg: str | None) -> int | None:
    """delta-seconds (RFC 9111 §1.2.2), clamped to 2**31; None when not a non-negative integer."""
    if arg is None or not (arg.isascii() and arg.isdigit()):
        return None
    # int() refuses very long digit strings; anything past 10 digits is above 2**31 anyway.
    return DELTA_MAX if len(arg) > 10 else min(int(arg), DELTA_MAX)


def _split_list(line: str) -> list[str]:
    """Split a #list on commas that are not inside a quoted-string (RFC 9110 §5.6.1, §5.6.4)."""
    if '"' not in line:
        return line.split(",")
    parts: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for i, c in enumerate(line):
        if escaped:
            escaped = False
        elif quoted:
            if c == "\\":
                escaped = True
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ",":
            parts.append(line[start:i])
            start = i + 1
    parts.append(line[start:])
    return parts


def _unquote(arg: str) -> str:
    """The content of a quoted-string (RFC 9110 §5.6.4); a missing closing quote is tolerated."""
    body = arg[1:-1] if len(arg) > 1 and arg[-1] == '"' else arg[1:]
    if "\\" not in body:
        return body
    out: list[str] = []
    it = iter(body)
    for c in it:
        out.append(next(it, "") if c == "\\" else c)
    return "".join(out)


def parse_cache_control(values: Iterable[str]) -> CacheControl:
    """Parse one or several Cache-Control field lines into the directives a shared cache uses.

    RFC 9111 §5.2 (syntax, case-insensitive names, token or quoted arguments), §5.2.2 (response
    directives), §4.2.1 (first occurrence wins, invalid max-age means stale), §1.2.2 (clamping),
    RFC 5861 (stale-while-revalidate, stale-if-error), RFC 8246 (immutable).
    """
    if isinstance(values, list | tuple) and len(values) == 1:
        line = values[0]
        cc = _CC_MEMO.get(line)
        if cc is None:
            cc = _parse_cache_control(values)
            _remember(_CC_MEMO, line, cc)
        return cc
    return _parse_cache_control(values)


_CC_MEMO: dict[str, CacheControl] = {}
_CDN_MEMO: dict[str, CacheControl | None] = {}


def _remember(memo: dict[str, _T], value: str, cc: _T) -> None:
    """Keep ``cc`` for the field value ``value`` in ``memo``, if the value is short enough."""
    if len(value) <= MEMO_VALUE_MAX:
        remember(memo, value, cc, MEMO_MAX)


def _parse_cache_control(values: Iterable[str]) -> CacheControl:
    seen: dict[str, str | None] = {}
    for line in values:
        for item in _split_list(line):
            name, eq, arg = item.partition("=")
            name = name.strip().lower()
            if not name or name in seen:
                continue
            if eq:
                arg = arg.strip()
                seen[name] = _unquote(arg) if arg[:1] == '"' else arg
            else:
                seen[name] = None
    if not seen:
        return _EMPTY
    max_age = s_maxage = None
    if "max-age" in seen:
        max_age = _delta_seconds(seen["max-age"])
        if max_age is None:
            max_age = 0
    if "s-maxage" in seen:
        s_maxage = _delta_seconds(seen["s-maxage"])
        if s_maxage is None:
            s_maxage = 0
    return CacheControl(
        max_age=max_age,
        s_maxage=s_maxage,
        no_store="no-store" in seen,
        no_cache="no-cache" in seen,
        private="private" in seen,
        public="public" in seen,
        must_revalidate="must-revalidate" in seen,
        proxy_revalidate="proxy-revalidate" in seen,
        immutable="immutable" in seen,
        no_transform="no-transform" in seen,
        must_understand="must-understand" in seen,
        stale_while_revalidate=_delta_seconds(seen.get("stale-while-revalidate")),
        stale_if_error=_delta_seconds(seen.get("stale-if-error")),
    )


_EMPTY = CacheControl()


def parse_cdn_cache_control(value: str) -> CacheControl | None:
    """Parse a CDN-Cache-Control field value (RFC 9213 §2.1, §3); None when the field is to be ignored.

    Several field lines must be joined with ", " by the caller (RFC 8941 §4.2). The field is ignored
    when it is not a valid Structured Fields Dictionary or when it is empty (RFC 9213 §2.2: only a
    "valid, non-empty value" overrides Cache-Control).
    """
    if value in _CDN_MEMO:
        return _CDN_MEMO[value]
    cc = _parse_cdn_cache_control(value)
    _remember(_CDN_MEMO, value, cc)
    return cc


def _parse_cdn_cache_control(value: str) -> CacheControl | None:
    members = _parse_sf_dictionary(value)
    if not members:
        return None

    def flag(name: str) -> bool:
        return name in members and members[name] is not False

    def integer(name: str) -> int | None:
        v = members.get(name)
        # bool is a subclass of int in Python; ?1 is not an Integer in Structured Fields.
        if type(v) is int and v >= 0:
            return min(v, DELTA_MAX)
        return None

    return CacheControl(
        max_age=integer("max-age"),
        s_maxage=integer("s-maxage"),
        no_store=flag("no-store"),
        no_cache=flag("no-cache"),
        private=flag("private"),
        public=flag("public"),
        must_revalidate=flag("must-revalidate"),
        proxy_revalidate=flag("proxy-revalidate"),
        immutable=flag("immutable"),
        no_transform=flag("no-transform"),
        must_understand=flag("must-understand"),
        stale_while_revalidate=integer("stale-while-revalidate"),
        stale_if_error=integer("stale-if-error"),
    )


# Structured Fields (RFC 9651, which obsoletes RFC 8941), only as much as a Dictionary needs. Member
# values are kept as Python values: int, float (Decimal), str (String, Token, Display String), bytes
# (Byte Sequence), bool, _Date or a tuple for an Inner List; parameters are validated and dropped.

_LCALPHA = frozenset("abcdefghijklmnopqrstuvwxyz")
_DIGITS = frozenset("0123456789")
_KEY_FIRST = _LCALPHA | {"*"}
_KEY_CHARS = _LCALPHA | _DIGITS | frozenset("_-.*")
_ALPHA = _LCALPHA | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TCHAR = _ALPHA | _DIGITS | frozenset("!#$%&'*+-.^_`|~")
_TOKEN_CHARS = _TCHAR | frozenset(":/")
_BASE64 = _ALPHA | _DIGITS | frozenset("+/=")
_LCHEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class _Date:
    seconds: int


class _SfError(ValueError):
    pass


class _SfParser:
    """A cursor over one field value; each method consumes what it parses or raises _SfError."""

    __slots__ = ("n", "pos", "s")

    def __init__(self, s: str) -> None:
        self.s = s
        self.pos = 0
        self.n = len(s)

    def peek(self) -> str:
        return self.s[self.pos] if self.pos < self.n else ""

    def skip(self, chars: str) -> None:
        while self.pos < self.n and self.s[self.pos] in chars:
            self.pos += 1

    def dictionary(self) -> dict[str, object]:
        out: dict[str, object] = {}
        while self.pos < self.n:
            key = self.key()
            if self.peek() == "=":
                self.pos += 1
                out[key] = self.item_or_inner_list()
            else:
                self.parameters()
                out[key] = True
            self.skip(" \t")
            if self.pos >= self.n:
                break
            if self.s[self.pos] != ",":
                raise _SfError
            self.pos += 1
            self.skip(" \t")
            if self.pos >= self.n:
                raise _SfError  # trailing comma
        return out

    def key(self) -> str:
        start = self.pos
        if self.peek() not in _KEY_FIRST:
            raise _SfError
        self.pos += 1
        while self.pos < self.n and self.s[self.pos] in _KEY_CHARS:
            self.pos += 1
        return self.s[start : self.pos]

    def parameters(self) -> None:
        while self.peek() == ";":
            self.pos += 1
            self.skip(" ")
            self.key()
            if self.peek() == "=":
                self.pos += 1
                self.bare_item()

    def item_or_inner_list(self) -> object:
        if self.peek() != "(":
            value = self.bare_item()
            self.parameters()
            return value
        self.pos += 1
        items: list[object] = []
        while True:
            self.skip(" ")
            if self.pos >= self.n:
                raise _SfError
            if self.s[self.pos] == ")":
                self.pos += 1
                self.parameters()
                return tuple(items)
            items.append(self.bare_item())
            self.parameters()
            if self.peek() not in (" ", ")"):
                raise _SfError

    def bare_item(self) -> object:
        c = self.peek()
        if c == "-" or c in _DIGITS:
            return self.number()
        if c == '"':
            return self.string()
        if c in _ALPHA or c == "*":
            start = self.pos
            self.pos += 1
            while self.pos < self.n and self.s[self.pos] in _TOKEN_CHARS:
                self.pos += 1
            return self.s[start : self.pos]
        if c == ":":
            end = self.s.find(":", self.pos + 1)
            if end < 0 or not _BASE64.issuperset(self.s[self.pos + 1 : end]):
                raise _SfError
            data = self.s[self.pos + 1 : end].encode("ascii")
            self.pos = end + 1
            return data
        if c == "?":
            flag = self.s[self.pos + 1 : self.pos + 2]
            if flag not in ("0", "1"):
                raise _SfError
            self.pos += 2
            return flag == "1"
        if c == "@":
            self.pos += 1
            value = self.number()
            if type(value) is not int:
                raise _SfError
            return _Date(value)
        if c == "%":
            return self.display_string()
        raise _SfError

    def number(self) -> int | float:
        start = self.pos
        if self.peek() == "-":
            self.pos += 1
        digits_start = self.pos
        dot = -1
        while self.pos < self.n:
            c = self.s[self.pos]
            if c in _DIGITS:
                self.pos += 1
            elif c == "." and dot < 0:
                dot = self.pos
                self.pos += 1
            else:
                break
        text = self.s[start : self.pos]
        if dot < 0:
            if not 0 < self.pos - digits_start <= 15:
                raise _SfError
            return int(text)
        if not (0 < dot - digits_start <= 12 and 0 < self.pos - dot - 1 <= 3):
            raise _SfError
        return float(text)

    def string(self) -> str:
        out: list[str] = []
        i = self.pos + 1
        while i < self.n:
            c = self.s[i]
            if c == "\\":
                nxt = self.s[i + 1 : i + 2]
                if nxt not in ('"', "\\"):
                    raise _SfError
                out.append(nxt)
                i += 2
            elif c == '"':
                self.pos = i + 1
                return "".join(out)
            elif " " <= c <= "~":
                out.append(c)
                i += 1
            else:
                raise _SfError
        raise _SfError

    def display_string(self) -> str:
        if self.s[self.pos + 1 : self.pos + 2] != '"':
            raise _SfError
        raw = bytearray()
        i = self.pos + 2
        while i < self.n:
            c = self.s[i]
            if c == "%":
                hx = self.s[i + 1 : i + 3]
                if len(hx) != 2 or not _LCHEX.issuperset(hx):
                    raise _SfError
                raw.append(int(hx, 16))
                i += 3
            elif c == '"':
                self.pos = i + 1
                try:
                    return raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise _SfError from None
            elif " " <= c <= "~":
                raw.append(ord(c))
                i += 1
            else:
                raise _SfError
        raise _SfError


def _parse_sf_dictionary(value: str) -> dict[str, object] | None:
    """A Structured Fields Dictionary (RFC 9651 §4.2, §4.2.2), or None if the value is not one."""
    parser = _SfParser(value.strip(" "))
    try:
        return parser.dictionary()
    except _SfError:
        return None
