"""What a worker's fill-writer child holds open, as real processes.

A worker is given its descriptors by the supervisor (the position board, its channel, its wake-up
socket, with ``listen = "shared"`` the listening socket). What a user would notice if its fill
writer inherited them: a child that only writes fills keeps the node's data port open (it would
stay bound, in LISTEN, while that child outlives its worker) and holds the worker's channel to
the supervisor. In both listen modes, each worker serves, and its fill writer holds no socket and
no mapping of the board.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers_node import VersionedOrigin, WorkerNode, children, wait_for


@pytest.fixture(scope="module")
def origin() -> Iterator[VersionedOrigin]:
    o = VersionedOrigin()
    yield o
    o.close()


def _descriptors(pid: int) -> list[str]:
    """What each open descriptor of ``pid`` points at (``socket:[inode]``, ``/memfd:name``, paths)."""
    fds = Path(f"/proc/{pid}/fd")
    found = []
    for fd in os.listdir(fds):
        try:
            found.append(os.readlink(fds / fd))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("listen", ["shared", "reuseport"])
def test_a_fill_writer_holds_none_of_its_workers_descriptors(
    origin: VersionedOrigin, tmp_path: Path, listen: str
) -> None:
    node = WorkerNode(tmp_path, origin, listen=listen)
    try:
        conn = node.connection()
        try:
            assert node.get(conn, f"/descriptors/{listen}")[:2] == (200, "MISS")
        finally:
            conn.close()
        workers = node.workers()
        assert len(workers) == 2
        answers = list(node.spread(f"/descriptors/{listen}", at_least=1))
        assert {status for status, _, _, _ in answers} == {200}
        assert {pid for _, _, _, pid in answers} == set(workers)
        writers: dict[int, list[int]] = {}

        def started() -> bool:
            writers.update({w: children(w, b"edgecache.edge.fillwriter") for w in workers})
            return all(len(found) == 1 for found in writers.values())

        wait_for(started)
        for worker, (writer,) in writers.items():
            held = _descriptors(writer)
            assert not [d for d in held if d.startswith("socket:")], (worker, held)
            assert not [d for d in held if "edgecache-positions" in d], (worker, held)
            # What it is given on purpose it still holds: the disk's key filter (its own pass_fds).
            assert any("edgecache-disk-keys" in d for d in held), (worker, held)
            # The worker itself still holds the board, which it was given.
            assert any("edgecache-positions" in d for d in _descriptors(worker))
    finally:
        assert node.stop() == 0
