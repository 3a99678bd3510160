"""TC3-HMAC-SHA256 request verification (reference ``edgeone-api.md`` §2.3, §2.4). Pure: no I/O,
no clock (``now`` is a parameter).

Rules:
- Two steps, so that the SecretKey lookup (I/O, in the dispatcher) sits where the reference's order
  puts it: :func:`prepare` does every check that needs no key (Authorization syntax, timestamp,
  ±300 s skew) and builds the string to sign; :func:`verify` then checks ``X-TC-Token``, the
  credential scope's date and service, and the signature (constant-time comparison).
- Canonical headers are built generically from ``SignedHeaders`` in the order listed (the SDK signs
  ``content-type;host``, other clients sign more); ``content-type`` and ``host`` must be among them.
  Values are the received ones, trimmed. The signature doc says values are lower-cased too while the
  SDK signs them as sent, so when lower-casing changes them both forms are accepted.
- The payload hash is over the raw bytes received, never a re-serialisation; with
  ``X-TC-Content-SHA256: UNSIGNED-PAYLOAD`` (an SDK option) it is the hash of that literal.
- Only the headers listed in ``SignedHeaders`` are covered: the official SDK does not sign
  ``X-TC-Action``/``X-TC-Version``, so without TLS a man in the middle could replay a body under
  another action within the 300 s window. That is the protocol, not this module; use TLS.

Outcomes (codes from the reference):
- ``AuthFailure.InvalidAuthorization``: no or several ``Authorization`` headers, another algorithm,
  a malformed ``Credential`` (not ``<SecretId>/<YYYY-MM-DD>/<service>/tc3_request``), ``SignedHeaders``
  without ``content-type``/``host`` or naming a header absent from (or repeated in) the request, a
  ``Signature`` that is not 64 lower-case hex digits.
- ``MissingParameter`` / ``InvalidParameter``: ``X-TC-Timestamp`` absent / not Unix seconds.
- ``AuthFailure.SignatureExpire``: ``|now - X-TC-Timestamp| > 300``.
- ``AuthFailure.TokenFailure``: ``X-TC-Token`` sent; this server issues no temporary credentials.
- ``AuthFailure.SignatureFailure``: the scope's date is not the UTC date of the timestamp, its
  service is not ``teo`` (reference §2.4 step 7: a client that dates its scope in local time fails
  this way against Tencent Cloud too), or the signature differs.
``InvalidSecretId`` and ``SecretIdNotFound`` are decided by the dispatcher, which owns the lookup;
their errors are built here with the other authentication errors.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from edgecache.api.edgeone.envelope import EoError, invalid_parameter, missing_parameter

ALGORITHM = "TC3-HMAC-SHA256"
SERVICE = "teo"
TERMINATOR = "tc3_request"
MAX_SKEW_S = 300
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
REQUIRED_SIGNED_HEADERS = ("content-type", "host")

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_HEADER_NAME = re.compile(r"[a-z0-9-]+")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
# 12 digits reach the year 33658: a bound that keeps int() and date arithmetic trivially safe.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_FIELDS = ("Credential", "SignedHeaders", "Signature")


def invalid_authorization(detail: str) -> EoError:
    return EoError(
        "AuthFailure.InvalidAuthorization",
        f"The Authorization header does not conform to TC3-HMAC-SHA256: {detail}.",
    )


def signature_failure(detail: str = "") -> EoError:
    message = "The provided credentials could not be validated. Please check your signature is correct."
    return EoError("AuthFailure.SignatureFailure", f"{message} {detail}".rstrip())


def invalid_secret_id() -> EoError:
    return EoError("AuthFailure.InvalidSecretId", "Invalid key (not a TencentCloud API key type).")


def secret_id_not_found() -> EoError:
    return EoError(
        "AuthFailure.SecretIdNotFound",
        "The SecretId is not found, please ensure that your SecretId is correct.",
    )


@dataclass(frozen=True, slots=True)
class Authorization:
    """The parts of an ``Authorization: TC3-HMAC-SHA256 ...`` header."""

    secret_id: str
    date: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A request that passed every check not needing the SecretKey."""

    authorization: Authorization
    timestamp: int
    token: str | None
    strings_to_sign: tuple[str, ...]
    """One, or two when lower-casing the signed header values changes them."""


def parse_authorization(value: str) -> Authorization:
    """Parse ``TC3-HMAC-SHA256 Credential=<id>/<date>/<service>/tc3_request, SignedHeaders=a;b,
    Signature=<hex>`` (fields in any order, spaces around commas optional)."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise invalid_authorization(f"the algorithm must be {ALGORITHM}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, eq, val = part.strip().partition("=")
        if not eq or key not in _FIELDS or key in fields:
            raise invalid_authorization("expected Credential=..., SignedHeaders=..., Signature=...")
        fields[key] = val.strip()
    if len(fields) != len(_FIELDS):
        raise invalid_authorization("expected Credential=..., SignedHeaders=..., Signature=...")
    scope = fields["Credential"].split("/")
    if (
        len(scope) != 4
        or not scope[0]
        or not _DATE.fullmatch(scope[1])
        or not scope[2]
        or scope[3] != TERMINATOR
    ):
        raise invalid_authorization(f"Credential must be <SecretId>/<YYYY-MM-DD>/{SERVICE}/{TERMINATOR}")
    names = tuple(fields["SignedHeaders"].split(";"))
    if not all(_HEADER_NAME.fullmatch(n) for n in names) or len(set(names)) != len(names):
        raise invalid_authorization("SignedHeaders must be distinct lower-case header names joined by ';'")
    if not all(n in names for n in REQUIRED_SIGNED_HEADERS):
        raise invalid_authorization("SignedHeaders must include content-type and host")
    if not _SIGNATURE.fullmatch(fields["Signature"]):
        raise invalid_authorization("Signature must be 64 lower-case hexadecimal digits")
    return Authorization(scope[0], scope[1], scope[2], names, fields["Signature"])


def utc_date(timestamp: int) -> str:
    """The ``YYYY-MM-DD`` UTC date of a Unix time: the date a credential scope must carry."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def _first(received: dict[str, list[str]], name: str) -> str | None:
    values = received.get(name)
    return values[0] if values else None


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def string_to_sign(
    *,
    method: str,
    query: str,
    signed_headers: Iterable[tuple[str, str]],
    payload_hash: str,
    timestamp: str,
    credential_scope: str,
) -> str:
    """The reference's StringToSign for the given canonical parts (URI fixed to ``/``)."""
    pairs = list(signed_headers)
    canonical = "\n".join(
        (
            method,
            "/",
            query,
            "".join(f"{name}:{value}\n" for name, value in pairs),
            ";".join(name for name, _ in pairs),
            payload_hash,
        )
    )
    return "\n".join((ALGORITHM, timestamp, credential_scope, _sha256_hex(canonical.encode("utf-8"))))


def prepare(
    *, method: str, query: str, headers: Iterable[tuple[str, str]], body: bytes, now: float
) -> SignedRequest:
    """Check everything that needs no SecretKey and build the string(s) to sign.

    ``headers`` are the request's (name, value) pairs, repeats included; ``query`` the raw query
    string; ``now`` the server's Unix time.
    """
    received: dict[str, list[str]] = {}
    for name, value in headers:
        received.setdefault(name.lower(), []).append(value.strip())
    auth_values = received.get("authorization", [])
    if not auth_values:
        raise invalid_authorization("the header is missing (only TC3-HMAC-SHA256 signing is supported)")
    if len(auth_values) > 1:
        raise invalid_authorization("the header is repeated")
    auth = parse_authorization(auth_values[0])
    ts_text = _first(received, "x-tc-timestamp")
    if ts_text is None:
        raise missing_parameter("Timestamp")
    if not _TIMESTAMP.fullmatch(ts_text):
        raise invalid_parameter("Timestamp", "Unix time in whole seconds")
    timestamp = int(ts_text)
    if abs(now - timestamp) > MAX_SKEW_S:
        raise EoError(
            "AuthFailure.SignatureExpire",
            f"The signature is expired, please request again: Timestamp {timestamp} and the server "
            f"time {int(now)} differ by more than {MAX_SKEW_S} seconds.",
        )
    values = []
    for name in auth.signed_headers:
        found = received.get(name)
        if found is None:
            raise invalid_authorization(f"signed header {name} is not in the request")
        if len(found) > 1:
            raise invalid_authorization(f"signed header {name} is repeated")
        values.append(found[0])
    unsigned = _first(received, "x-tc-content-sha256") == UNSIGNED_PAYLOAD
    payload_hash = _sha256_hex(UNSIGNED_PAYLOAD.encode("ascii") if unsigned else body)
    scope = f"{auth.date}/{auth.service}/{TERMINATOR}"
    candidates: list[str] = []
    for vals in (values, [v.lower() for v in values]):
        sts = string_to_sign(
            method=method,
            query=query,
            signed_headers=zip(auth.signed_headers, vals, strict=True),
            payload_hash=payload_hash,
            timestamp=ts_text,
            credential_scope=scope,
        )
        if sts not in candidates:
            candidates.append(sts)
    return SignedRequest(auth, timestamp, _first(received, "x-tc-token"), tuple(candidates))


def signature(secret_key: str, date: str, service: str, string_to_sign: str) -> str:
    """Lower-case hex HMAC-SHA256 of ``string_to_sign`` under the key derived from ``secret_key``
    (``"TC3" + SecretKey`` → date → service → ``tc3_request``)."""
    k_date = hmac.new(("TC3" + secret_key).encode("utf-8"), date.encode("utf-8"), hashlib.sha256).digest()
    k_service = hmac.new(k_date, service.encode("utf-8"), hashlib.sha256).digest()
    k_signing = hmac.new(k_service, TERMINATOR.encode("utf-8"), hashlib.sha256).digest()
    return hmac.new(k_signing, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def verify(request: SignedRequest, secret_key: str) -> None:
    """Raise the reference's error unless ``request`` is signed with ``secret_key``."""
    if request.token is not None:
        raise EoError(
            "AuthFailure.TokenFailure",
            "Temporary credentials (X-TC-Token) are not supported here; sign with a SecretId and SecretKey.",
        )
    auth = request.authorization
    expected_date = utc_date(request.timestamp)
    if auth.date != expected_date:
        raise signature_failure(f"The credential date must be {expected_date}, the UTC date of Timestamp.")
    if auth.service != SERVICE:
        raise signature_failure(f"The credential service must be {SERVICE}.")
    matched = False
    for sts in request.strings_to_sign:
        # Every candidate is computed and compared, so timing does not tell which form matched.
        matched |= hmac.compare_digest(signature(secret_key, auth.date, auth.service, sts), auth.signature)
    if not matched:
        raise signature_failure()
