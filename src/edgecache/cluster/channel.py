"""The message channel between the supervisor and one worker: JSON lines over a socket pair.

Messages (``t`` names the kind):
- worker → supervisor: ``hello`` (``position``: the ledger position it starts from),
  ``ack`` (``seq``, ``counts`` per selector), ``metrics`` (``id``, ``families``).
- supervisor → worker: ``wake`` (a purge was published), ``metrics?`` (``id``).

The channel carries no purge itself: the ledger table does (see ``follower.py``). End of file on
either side means the other process is gone.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

Message = dict[str, Any]


class Channel:
    """One end of a supervisor-worker socket pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        """Wrap a connected stream socket on the running loop."""
        reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024 * 1024)
        return cls(reader, writer)

    def send(self, message: Message) -> None:
        """Queue one message (dropped once the other side is gone)."""
        if self._writer.is_closing():
            return
        self._writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    async def receive(self) -> Message | None:
        """The next message, or None at end of file."""
        try:
            line = await self._reader.readline()
        except (ConnectionError, ValueError):
            return None
        if not line:
            return None
        message: Message = json.loads(line)
        return message

    def close(self) -> None:
        """Close this end."""
        self._writer.close()
