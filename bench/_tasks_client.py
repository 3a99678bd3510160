"""Two EdgeOne API 3.0 clients for the task benchmark: the official SDK, and a minimal signed raw one.

- :func:`sdk_client`: ``tencentcloud-sdk-python-teo``'s ``TeoClient`` pointed at the node with
  ``HttpProfile(protocol="http", endpoint=..., keepAlive=True)``, as the tests do. One client owns one
  ``requests.Session``, so calls from one client reuse one keep-alive connection.
- :class:`RawClient`: ``http.client`` over one keep-alive connection, signing TC3-HMAC-SHA256 exactly as
  the SDK does (``content-type;host`` signed, hashed JSON payload), decoding the JSON answer into dicts.
  It measures the server without the SDK's own per-call cost (request/response model objects,
  ``requests``), so the difference between the two is the SDK's overhead.
Both raise on an API error (``Response.Error``) with its code; every call is bounded by a timeout.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.teo.v20220901 import teo_client

VERSION = "2022-09-01"
SERVICE = "teo"


def no_proxy() -> None:
    """Talk to 127.0.0.1 directly, whatever the environment says about proxies."""
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(var, None)
    os.environ["NO_PROXY"] = "127.0.0.1"


def sdk_client(port: int, secret_id: str, secret_key: str, timeout: int = 30) -> Any:
    """The official client, on one keep-alive session."""
    profile = ClientProfile(
        httpProfile=HttpProfile(
            protocol="http", endpoint=f"127.0.0.1:{port}", reqTimeout=timeout, keepAlive=True
        )
    )
    return teo_client.TeoClient(credential.Credential(secret_id, secret_key), "", profile)


class ApiError(RuntimeError):
    """An answer with ``Response.Error``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class RawClient:
    """Signed API 3.0 calls over one ``http.client`` keep-alive connection."""

    def __init__(self, port: int, secret_id: str, secret_key: str, timeout: float = 30.0) -> None:
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _headers(self, action: str, body: bytes) -> dict[str, str]:
        ts = int(time.time())
        date = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")
        ct = "application/json"
        canonical = "\n".join(
            (
                "POST",
                "/",
                "",
                f"content-type:{ct}\nhost:{self.host}\n",
                "content-type;host",
                hashlib.sha256(body).hexdigest(),
            )
        )
        scope = f"{date}/{SERVICE}/tc3_request"
        to_sign = f"TC3-HMAC-SHA256\n{ts}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        key = _hmac(_hmac(_hmac(("TC3" + self.secret_key).encode(), date), SERVICE), "tc3_request")
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        return {
            "Content-Type": ct,
            "Host": self.host,
            "X-TC-Action": action,
            "X-TC-Version": VERSION,
            "X-TC-Timestamp": str(ts),
            "X-TC-Language": "en-US",
            "Authorization": (
                f"TC3-HMAC-SHA256 Credential={self.secret_id}/{scope}, "
                f"SignedHeaders=content-type;host, Signature={signature}"
            ),
        }

    def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """``Response`` of one action (without ``RequestId``); raises :class:`ApiError`."""
        body = json.dumps(params).encode()
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self._conn.request("POST", "/", body=body, headers=self._headers(action, body))
                resp = self._conn.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
        answer: dict[str, Any] = json.loads(data)["Response"]
        err = answer.get("Error")
        if err:
            raise ApiError(err.get("Code", "?"), err.get("Message", ""))
        return answer
