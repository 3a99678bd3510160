"""The API 3.0 envelope: ``{"Response": {<fields>, "RequestId": "<uuid>"}}``, errors included.

Rules (reference ``edgeone-api.md`` §2.5):
- Every answer is HTTP 200 with ``Content-Type`` exactly ``application/json`` (no charset) and a
  ``RequestId``. The official Python SDK turns any other status into ``ServerNetworkError`` (losing
  the code), ignores errors whose Content-Type differs from that exact string, and raises
  ``KeyError`` on an error without ``RequestId``. One exception: an ``Expect`` the server cannot
  meet is HTTP 417 (decision 0030), the status HTTP gives it; the SDK never sends one.
- Errors are raised as :class:`EoError` anywhere below the dispatcher and turned into the error
  envelope there; nothing else builds error bodies.
- Codes are the reference's (§2.4, §2.6). Messages copy the live service's wording where it has been
  seen in public (MissingParameter, UnknownParameter, InvalidParameter); the rest are ours, in the
  same style. The SDK never inspects them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web


class EoError(Exception):
    """An API 3.0 error: ``Code`` (e.g. ``AuthFailure.SignatureFailure``) and ``Message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def new_request_id() -> str:
    return str(uuid.uuid4())


def _payload(response: dict[str, Any]) -> bytes:
    return json.dumps({"Response": response}).encode()


def success_payload(request_id: str, fields: Mapping[str, Any]) -> bytes:
    """The success envelope's bytes: ``fields`` plus ``RequestId``."""
    if "RequestId" in fields or "Error" in fields:
        raise ValueError("an action's result must not carry RequestId or Error")
    return _payload({**fields, "RequestId": request_id})


def failure_payload(request_id: str, err: EoError) -> bytes:
    """The error envelope's bytes for ``err``."""
    return _payload({"Error": {"Code": err.code, "Message": err.message}, "RequestId": request_id})


def response(payload: bytes, status: int = 200) -> web.Response:
    """An envelope's bytes as the answer: ``Content-Type`` exactly ``application/json``, and 200
    unless the HTTP layer itself refuses the request (``status``: a 417 for an unmet ``Expect``,
    decision 0030)."""
    # body= (bytes) rather than text=: aiohttp would append "; charset=utf-8" to a text body's type.
    return web.Response(status=status, body=payload, content_type="application/json")


def missing_parameter(name: str) -> EoError:
    return EoError("MissingParameter", f"The request is missing a required parameter `{name}`.")


def invalid_parameter(name: str, expected: str) -> EoError:
    """A parameter of the wrong JSON type or syntax; ``expected`` says what it should be."""
    return EoError("InvalidParameter", f"Parameter `{name}` type error: expected {expected}.")


def invalid_parameter_value(name: str, reason: str) -> EoError:
    """A parameter of the right type whose value is not acceptable; ``reason`` says why."""
    return EoError("InvalidParameterValue", f"The value of parameter `{name}` is invalid: {reason}.")


def unknown_parameter(name: str) -> EoError:
    return EoError("UnknownParameter", f"The parameter `{name}` is not recognized.")
