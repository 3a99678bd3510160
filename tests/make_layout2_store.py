"""Write ``tests/data/layout2``: the store ``disk_ops.setup_ops`` builds, written by the code of a
tree whose disk store has layout 2 (the commit before decision 0033, as main was):

    .venv/bin/python tests/make_layout2_store.py --src /work/main/src tests/data/layout2

``tests/test_disk_layout3.py`` converts a copy of it and compares it with the same store built by
this tree's code."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path


def main() -> None:
    """Build the store with the given tree's code and keep a compacted copy of it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", required=True, help="the src directory of a layout-2 tree")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, args.src)
    from disk_ops import apply, open_store, setup_ops
    from edgecache.store import disk_layout

    if disk_layout.LAYOUT != 2:
        sys.exit(f"{args.src} writes layout {disk_layout.LAYOUT}, not 2")
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp))
        for op in setup_ops():
            apply(store, op)
        store.close()
        shutil.rmtree(args.out, ignore_errors=True)
        args.out.mkdir(parents=True)
        import lmdb

        env = lmdb.open(tmp, max_dbs=64, readonly=True, lock=False)
        env.copy(str(args.out), compact=True)
        env.close()


if __name__ == "__main__":
    main()
