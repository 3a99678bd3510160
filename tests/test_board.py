"""The workers' position board: what a child process of the node can and cannot reach."""

from __future__ import annotations

import subprocess
import sys

from edgecache.cluster.board import PositionBoard

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
