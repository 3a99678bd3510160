"""The workers' position board: what a child process of the node can and cannot reach."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgecache.cluster.board import HOLDER_BITS, PositionBoard
from edgecache.cluster.fill_locks import FillLocks

STAT_FD = "import os, sys; os.fstat(int(sys.argv[1]))"


def test_only_a_child_given_the_board_can_reach_it() -> None:
    """The supervisor passes the board to each worker; any other child (a fill writer, a helper
    program run by the node) must not inherit a writable view of every worker's position."""
    board = PositionBoard.create(2)
    try:
        board.publish(7)
        stray = subprocess.run(
            [sys.executable, "-c", STAT_FD, str(board.fd)], close_fds=False, capture_output=True
        )
        assert stray.returncode != 0
        assert b"Bad file descriptor" in stray.stderr
        given = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from edgecache.cluster.board import PositionBoard; "
                "print(PositionBoard(int(sys.argv[1]), 2).published)",
                str(board.fd),
            ],
            pass_fds=(board.fd,),
            capture_output=True,
            text=True,
            check=True,
        )
        assert given.stdout.strip() == "7"
    finally:
        board.close()


def test_a_board_refuses_more_slots_than_a_claim_can_name() -> None:
    """A fill claim names its holder (slot + 1) in ``HOLDER_BITS``: with one slot more, the last
    slot's claims would name slot 0's holder bits, and the supervisor clearing slot 0's claims
    after it reaped that worker would clear the live last worker's too."""
    with pytest.raises(ValueError, match=f"at most {(1 << HOLDER_BITS) - 1} worker slots"):
        PositionBoard.create(1 << HOLDER_BITS)
    board = PositionBoard.create((1 << HOLDER_BITS) - 1)
    try:
        last = FillLocks(board, board.slots - 1)
        token = last.token("http://test.example/board/last-slot")
        assert last.take(token)
        assert board.clear_claims(0) == 0
        assert board.clear_claims(board.slots - 1) == 1
    finally:
        board.close()
