"""The message channel between the supervisor and one worker: JSON lines over a socket pair.

Messages (``t`` names the kind):
- worker → supervisor: ``hello`` (``position``: the ledger position it starts from),
  ``acks`` (``acks``: ``[seq, counts per selector]`` for each purge reclaimed since the last one,
  in seq order), ``metrics`` (``id``, ``families``).
- supervisor → worker: ``metrics?`` (``id``).

Published purges travel apart, one datagram each on a wake socket, as JSON ``wake`` messages
(``after``, the position published before it, and ``purge``, the committed purge with its
selectors, see :func:`encode_purge`), so that a worker can read them without waiting for its event
loop (``worker.py``). The ledger table stays the record (see ``follower.py``): the purge in a
``wake`` only saves the worker a read of the row it announces, when that row is the next one the
worker needs. A worker that missed a message, or was behind already, reads the table as before.
End of file on either side of the channel means the other process is gone.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from edgecache.purge.selectors import Everything, Host, Mode, Prefix, Purge, Selector, Tag, Url

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


def encode_purge(purge: Purge) -> list[Any]:
    """A purge as JSON values: seq, zone, mode, time, then one list per selector, in order (the
    acknowledgements count per selector in this order)."""
    return [purge.seq, purge.zone, purge.mode.value, purge.at, [_encode_selector(s) for s in purge.selectors]]


def decode_purge(value: list[Any]) -> Purge:
    """The inverse of :func:`encode_purge`."""
    seq, zone, mode, at, selectors = value
    return Purge(int(seq), str(zone), Mode(mode), tuple(_decode_selector(s) for s in selectors), float(at))


def _encode_selector(selector: Selector) -> list[Any]:
    match selector:
        case Url(key=key):
            return ["u", key]
        case Tag(tag=tag, host=host):
            return ["t", tag, host]
        case Host(host=host):
            return ["h", host]
        case Prefix(prefix=prefix):
            return ["p", prefix]
        case Everything():
            return ["e"]
    raise TypeError(f"not a selector: {selector!r}")


def _decode_selector(value: list[Any]) -> Selector:
    match value:
        case ["u", str(key)]:
            return Url(key)
        case ["t", str(tag), str() | None as host]:
            return Tag(tag, host)
        case ["h", str(host)]:
            return Host(host)
        case ["p", str(prefix)]:
            return Prefix(prefix)
        case ["e"]:
            return Everything()
    raise ValueError(f"not a selector: {value!r}")
