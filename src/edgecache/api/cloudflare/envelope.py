"""The v4 envelope: every answer is JSON ``{success, errors, messages, result}``.

Rules: errors are raised as :class:`CfError` anywhere below a route and turned into the failure
envelope by the middleware in ``routes.py``; nothing else builds error bodies. Codes and messages
follow ``shared/reference/cloudflare-api.md`` §1.5 and §2.7.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web


class CfError(Exception):
    """A v4 API error: HTTP status, code, message, and an optional ``error_chain``."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        chain: list[tuple[int, str]] | None = None,
        extra: list[tuple[int, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.chain = chain or []
        self.extra = extra or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The failure envelope."""
        first: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.chain:
            first["error_chain"] = [{"code": c, "message": m} for c, m in self.chain]
        errors = [first] + [{"code": c, "message": m} for c, m in self.extra]
        return {"success": False, "errors": errors, "messages": [], "result": None}

    def payload(self) -> bytes:
        """The failure envelope's bytes, as :func:`failure` sends them."""
        return json.dumps(self.body()).encode()


def internal_error() -> CfError:
    """500/10001: what an unexpected failure below a route answers (it is logged, not shown)."""
    return CfError(500, 10001, "Internal server error")


def success_payload(result: Any, result_info: dict[str, int] | None = None) -> bytes:
    """The bytes of the success envelope around ``result``."""
    body: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return json.dumps(body).encode()


def success(result: Any, *, status: int = 200, result_info: dict[str, int] | None = None) -> web.Response:
    """The success envelope around ``result``."""
    # Bytes: aiohttp sends them as they are, where a str goes through its payload registry; the
    # same Content-Type on the wire.
    body = success_payload(result, result_info)
    return web.Response(status=status, body=body, content_type="application/json")


_ID_HEAD = b'{"success": true, "errors": [], "messages": [], "result": {"id": "'
_ID_TAIL = b'"}}'


def id_payload(job_id: str) -> bytes:
    """The bytes of ``success({"id": job_id})``, the answer of every accepted purge, from prebuilt
    bytes when the id needs no escaping (a job id is hex): the same body without building and
    encoding the envelope's dict on each purge."""
    if not (job_id.isascii() and job_id.isalnum()):
        return success_payload({"id": job_id})
    return _ID_HEAD + job_id.encode() + _ID_TAIL


def success_id(job_id: str) -> web.Response:
    """``success({"id": job_id})`` as a response (see :func:`id_payload`)."""
    return web.Response(body=id_payload(job_id), content_type="application/json")


def page_info(page: int, per_page: int, count: int, total: int) -> dict[str, int]:
    """``result_info`` of one page of a V4-paginated list (at least one page, even when empty)."""
    return {
        "page": page,
        "per_page": per_page,
        "count": count,
        "total_count": total,
        "total_pages": max(1, math.ceil(total / per_page)),
    }


def failure(err: CfError) -> web.Response:
    """The failure envelope for ``err``."""
    return web.Response(
        status=err.status, body=json.dumps(err.body()), content_type="application/json", headers=err.headers
    )


def no_route(path: str) -> CfError:
    """What the real API answers for an unknown route or an invalid identifier in the path."""
    return CfError(
        400,
        7003,
        f"Could not route to {path}, perhaps your object identifier is invalid?",
        extra=[(7000, "No route for that URI")],
    )
