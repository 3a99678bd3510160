from edgecache.edge.http1 import Request

MAX_LINES: int
"""Field lines a head read here may have; one with more is left to llhttp."""

class HeadReader:
    """Reads a server's ordinary request heads without llhttp (decision 0031)."""

    def __init__(
        self, request_type: type[Request], max_line: int, max_count: int, max_bytes: int, /
    ) -> None: ...
    def read(self, data: bytes, start: int, client_ip: str, /) -> tuple[int, Request] | None:
        """The head at ``data[start:]`` as the Request the parser's callbacks would build, and the
        offset after it, when it is whole and of the narrow shape (``_reqhead.c``); else None."""
