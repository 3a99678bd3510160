"""Pages a paced purge's commit writes to SQLite's WAL, by the B-tree they belong to.

Run: ``.venv/bin/python bench/purge_pages.py [--n N] [--gap S] [--before SRC]`` (seconds). A child
(``src`` first on the path; with ``--before``, another tree's too) runs ``--n`` purges through the
product's ``PurgeService.submit``, ``--gap`` apart, each acknowledged as the reclaimer does (the
same driver as ``bench/purge_steps.py --instructions``), while a reader holds a snapshot from before
the first purge, so that no checkpoint restarts the WAL: every frame the purges' commits wrote is
still in it. The WAL is then read frame by frame (24-byte frame headers: the page number, and the
database size on a commit's last frame) and each page named by SQLite's ``dbstat`` table (the table
or index it belongs to). Counts, not timings: the machine's load does not move them (decision 0034).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import struct
import sys
from collections import Counter
from pathlib import Path

import uvloop
from _tree_child import child_figures

HERE = Path(__file__).resolve().parent
FRAME_HEADER = 24
WAL_HEADER = 32


def wal_frames(wal: Path, page_size: int, skip: int) -> list[tuple[int, bool]]:
    """(page number, ends a commit) of each frame of ``wal`` after its first ``skip`` frames, up to
    the first whose salts are not the header's (a frame left from before the WAL last restarted)."""
    data = wal.read_bytes()
    salts = data[16:24]
    out = []
    at = WAL_HEADER + skip * (FRAME_HEADER + page_size)
    while at + FRAME_HEADER + page_size <= len(data) and data[at + 8 : at + 16] == salts:
        page, size_after = struct.unpack(">II", data[at : at + 8])
        out.append((page, size_after != 0))
        at += FRAME_HEADER + page_size
    return out


def child(tmp: Path, n: int, gap: float) -> None:
    """Run the purges on ``tmp``'s database with a snapshot held; print the frames they wrote, by
    B-tree, as JSON."""
    sys.path.insert(0, str(HERE))
    from purge_steps import _service_db, _service_purges

    _service_db(tmp)
    db = tmp / "edgecache.db"
    wal = Path(f"{db}-wal")
    reader = sqlite3.connect(db, isolation_level=None)
    page_size = int(reader.execute("PRAGMA page_size").fetchone()[0])
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
    before = wal.read_bytes() if wal.exists() else b""
    uvloop.run(_service_purges(tmp, n, gap))
    # The first commit restarts the WAL (new salts) when everything in it had been checkpointed:
    # then every valid frame is the purges'.
    kept = len(before) >= WAL_HEADER and before[16:24] == wal.read_bytes()[16:24]
    skip = (len(before) - WAL_HEADER) // (FRAME_HEADER + page_size) if kept else 0
    frames = wal_frames(wal, page_size, skip)
    reader.execute("COMMIT")
    names = dict(reader.execute("SELECT pageno, name FROM dbstat"))
    reader.close()
    commits = sum(1 for _page, end in frames if end)
    by_tree = Counter(names.get(page, f"page {page} (freed)") for page, _end in frames)
    print(json.dumps({"commits": commits, "frames": len(frames), "by_tree": by_tree}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--gap", type=float, default=0.02)
    p.add_argument("--before", type=Path, help="another tree's src, counted the same way")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.n, args.gap)
        return
    sides = [("this tree", HERE.parent / "src")] + ([("before", args.before)] if args.before else [])
    print(
        f"### WAL pages per commit, {args.n} purges {args.gap * 1000:.0f} ms apart through `PurgeService`\n"
    )
    print("| code | commits | pages | pages per commit | by B-tree, per commit |")
    print("|---|---:|---:|---:|---|")
    for name, src in sides:
        c = child_figures(__file__, src, "--n", str(args.n), "--gap", str(args.gap))
        commits = int(c["commits"])  # type: ignore[call-overload]
        frames = int(c["frames"])  # type: ignore[call-overload]
        by_tree: dict[str, int] = c["by_tree"]  # type: ignore[assignment]
        trees = ", ".join(
            f"{tree} {k / commits:.2f}" for tree, k in sorted(by_tree.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        print(f"| {name} (`{src}`) | {commits} | {frames} | {frames / commits:.2f} | {trees} |")


if __name__ == "__main__":
    main()
