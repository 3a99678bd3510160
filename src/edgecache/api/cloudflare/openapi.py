"""The OpenAPI 3.1 document of the v4 routes this node serves (``GET /client/v4/openapi.json``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

_STRINGS = {"type": "array", "items": {"type": "string"}, "minItems": 1}
_FILE_WITH_HEADERS = {
    "type": "object",
    "required": ["url"],
    "properties": {
        "url": {"type": "string"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
PURGE_BODY = {
    "anyOf": [
        {"title": "Purge by tags", "type": "object", "required": ["tags"], "properties": {"tags": _STRINGS}},
        {
            "title": "Purge by hostnames",
            "type": "object",
            "required": ["hosts"],
            "properties": {"hosts": _STRINGS},
        },
        {
            "title": "Purge by prefixes",
            "type": "object",
            "required": ["prefixes"],
            "properties": {"prefixes": _STRINGS},
        },
        {
            "title": "Purge everything",
            "type": "object",
            "required": ["purge_everything"],
            "properties": {"purge_everything": {"type": "boolean", "const": True}},
        },
        {
            "title": "Purge files",
            "type": "object",
            "required": ["files"],
            "properties": {"files": {"type": "array", "minItems": 1, "items": {"type": "string"}}},
        },
        {
            "title": "Purge files with URL and headers",
            "type": "object",
            "required": ["files"],
            "properties": {
                "files": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"anyOf": [{"type": "string"}, _FILE_WITH_HEADERS]},
                }
            },
        },
    ]
}
_MESSAGE = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {"code": {"type": "integer", "minimum": 1000}, "message": {"type": "string"}},
}
_FAILURE = {
    "type": "object",
    "required": ["success", "errors", "messages", "result"],
    "properties": {
        "success": {"const": False},
        "errors": {"type": "array", "items": _MESSAGE, "minItems": 1},
        "messages": {"type": "array", "items": _MESSAGE},
        "result": {"type": "null"},
    },
}
_PURGE_SUCCESS = {
    "type": "object",
    "required": ["success", "errors", "messages", "result"],
    "properties": {
        "success": {"const": True},
        "errors": {"type": "array", "items": _MESSAGE},
        "messages": {"type": "array", "items": _MESSAGE},
        "result": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "Job id"}},
        },
    },
}


def _operation(summary: str, description: str) -> dict[str, Any]:
    def failure(text: str) -> dict[str, Any]:
        return {"description": text, "content": {"application/json": {"schema": _FAILURE}}}

    return {
        "summary": summary,
        "description": description,
        "security": [{"api_token": []}, {"api_email": [], "api_key": []}],
        "parameters": [
            {
                "name": "zone_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            }
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": PURGE_BODY}}},
        "responses": {
            "200": {
                "description": "Accepted: durable and in effect on this node",
                "content": {"application/json": {"schema": _PURGE_SUCCESS}},
            },
            "400": failure(
                "Invalid request: 6003/6007/9106 headers and JSON; 1012/1013/1014/1092 body shape; "
                "1094/1101/1111 too many items; 1100 tag; 1114/1115 host or prefix; 1082 URL outside "
                "the zone; 7003/7000 unknown zone or route"
            ),
            "403": failure("10000: unknown credential, or no Cache Purge permission for this zone"),
            "429": failure("1134: the account's purge rate limit; see Retry-After"),
        },
    }


def build() -> dict[str, Any]:
    """The whole document."""
    purge_description = (
        "Hard purge: matched entries are deleted. Selectors: files (URLs, optionally with cache-key "
        "headers selecting one variant), tags (case-insensitive), hosts, prefixes (host/path, string "
        "prefix, every query string), or purge_everything."
    )
    invalidate_description = (
        "Soft purge: matched entries become stale and are revalidated with the origin; "
        "stale-while-revalidate and stale-if-error count from the purge."
    )
    purge_op = _operation("Purge cached content", purge_description)
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgecache Cloudflare v4 API", "version": "1"},
        "servers": [{"url": "/client/v4"}, {"url": "/"}],
        "components": {
            "securitySchemes": {
                "api_token": {"type": "http", "scheme": "bearer"},
                "api_email": {"type": "apiKey", "in": "header", "name": "X-Auth-Email"},
                "api_key": {"type": "apiKey", "in": "header", "name": "X-Auth-Key"},
            }
        },
        "paths": {
            "/zones/{zone_id}/purge_cache": {
                "post": {**purge_op, "operationId": "zone-purge"},
                "delete": {**purge_op, "operationId": "zone-purge-delete"},
            },
            "/zones/{zone_id}/invalidate_cache": {
                "post": {
                    **_operation("Invalidate cached content", invalidate_description),
                    "operationId": "zone-invalidate",
                }
            },
        },
    }


DOCUMENT = build()


async def document(request: web.Request) -> web.Response:
    """Serve the document."""
    return web.json_response(DOCUMENT)
