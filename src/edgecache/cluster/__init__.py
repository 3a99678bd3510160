"""Coordination between the processes of a node (and, later, the nodes of a cluster).

- ``follower``: the one "follow the ledger from my position" mechanism and its ``Waker`` interface.
- ``board``: the shared-memory position words of one node's processes (the processes' waker).
- ``acks``: per-process acknowledgements aggregated into task completions.
- ``channel``: the message pipe between the supervisor and one worker.
- ``supervisor`` / ``worker``: ``[runtime] workers = N`` processes on one data port, one control plane.
- ``collector``: ``/metrics`` for the node as a whole and per process.
- ``fill_locks``: which process fetches a new object, the others waiting for it in the disk tier
  (docs/decisions/0021-coalescing-fills-across-workers.md).

See docs/decisions/0014-following-the-ledger.md.
"""
