"""Prototype: which engine for the persistent tier? lmdb vs SQLite BLOBs vs files plus an index.

One command, prints a table (decision 0009 quotes it):

    .venv/bin/python bench/disk_engines.py [--quick]

Workload per object size (1 KiB, 64 KiB, 8 MiB), same for each engine:
- write: N objects in batches of ``BATCH`` per durable commit (lmdb: commit with sync; SQLite: WAL,
  synchronous=FULL; files: write + fsync each file, then the index row in one SQLite commit);
- read hot: random keys, every page already in the page cache (what a disk hit costs right after
  the object was written or read);
- read cold-ish: the same, after closing the store, dropping its pages from the page cache
  (``posix_fadvise(DONTNEED)``, unprivileged, per file) and reopening it, so reads go to the device
  (a virtual disk here, which may still cache underneath: hence "-ish").
Every read returns the object's bytes (a copy), as the data plane needs. Figures are per object,
median of ``REPEAT`` runs; the machine is shared, so they are noisy.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lmdb

BATCH = 64
REPEAT = 3


class Engine:
    name = ""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        raise NotImplementedError

    def read(self, key: bytes) -> bytes | None:
        raise NotImplementedError

    def drop_cache(self) -> None:
        for path in self.root.rglob("*"):
            if path.is_file():
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)

    def close(self) -> None:
        raise NotImplementedError


class Lmdb(Engine):
    name = "lmdb"
    readahead = False

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.env = lmdb.open(str(root), map_size=8 << 30, max_dbs=4, readahead=self.readahead)

    def write_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        with self.env.begin(write=True) as txn:
            for k, v in items:
                txn.put(k, v)

    def read(self, key: bytes) -> bytes | None:
        with self.env.begin() as txn:
            v = txn.get(key)
        return v  # type: ignore[no-any-return]

    def close(self) -> None:
        self.env.close()


class LmdbReadahead(Lmdb):
    name = "lmdb readahead"
    readahead = True


class Sqlite(Engine):
    name = "sqlite blob"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.db = sqlite3.connect(root / "c.db", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS o (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")

    def write_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO o VALUES (?, ?)", items)
        self.db.execute("COMMIT")

    def read(self, key: bytes) -> bytes | None:
        row = self.db.execute("SELECT v FROM o WHERE k = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        self.db.close()


class Files(Engine):
    name = "files + index"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.db = sqlite3.connect(root / "index.db", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS i (k BLOB PRIMARY KEY, f TEXT) WITHOUT ROWID")

    def _path(self, key: bytes) -> Path:
        h = hashlib.sha256(key).hexdigest()
        return self.root / h[:2] / h

    def write_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        rows = []
        for k, v in items:
            path = self._path(k)
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                f.write(v)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            rows.append((k, path.name))
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO i VALUES (?, ?)", rows)
        self.db.execute("COMMIT")

    def read(self, key: bytes) -> bytes | None:
        row = self.db.execute("SELECT f FROM i WHERE k = ?", (key,)).fetchone()
        if row is None:
            return None
        with open(self.root / row[0][:2] / row[0], "rb") as f:
            return f.read()

    def close(self) -> None:
        self.db.close()


def _timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(engine_cls: type[Engine], size: int, count: int, reads: int) -> tuple[float, float, float]:
    """Median seconds per object for write, hot read and cold-ish read."""
    writes, hots, colds = [], [], []
    rnd = random.Random(7)
    for _ in range(REPEAT):
        root = Path(tempfile.mkdtemp(prefix="edgecache-engines-", dir=os.environ.get("BENCH_DIR")))
        try:
            eng = engine_cls(root)
            keys = [f"http://bench.example/obj/{i}?v={size}".encode() for i in range(count)]
            body = os.urandom(size)

            def write_all(eng: Engine = eng, keys: list[bytes] = keys, body: bytes = body) -> None:
                for i in range(0, len(keys), BATCH):
                    eng.write_batch([(k, body) for k in keys[i : i + BATCH]])

            writes.append(_timed(write_all) / count)
            sample = [rnd.choice(keys) for _ in range(reads)]

            def read_all(eng: Engine = eng, sample: list[bytes] = sample) -> None:
                for k in sample:
                    assert eng.read(k) is not None

            read_all()
            hots.append(_timed(read_all) / reads)
            # Closed first: pages a process still maps are not dropped (lmdb maps its file).
            eng.close()
            eng.drop_cache()
            eng = engine_cls(root)
            colds.append(_timed(lambda eng=eng: read_all(eng)) / reads)
            eng.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return statistics.median(writes), statistics.median(hots), statistics.median(colds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer objects (a smoke run)")
    args = ap.parse_args()
    scale = 10 if args.quick else 1
    workloads = [(1024, 20_000 // scale, 20_000 // scale), (65536, 2_000 // scale, 2_000 // scale)]
    workloads.append((8 << 20, max(2, 16 // scale), max(4, 32 // scale)))
    print(
        f"{'engine':<15}{'size':>8}{'objects':>9}{'write µs/obj':>14}{'hot read µs':>13}{'cold read µs':>14}"
    )
    for size, count, reads in workloads:
        for cls in (Lmdb, LmdbReadahead, Sqlite, Files):
            w, h, c = run(cls, size, count, reads)
            label = f"{size // 1024} KiB" if size < 1 << 20 else f"{size >> 20} MiB"
            print(f"{cls.name:<15}{label:>8}{count:>9}{w * 1e6:>14.1f}{h * 1e6:>13.1f}{c * 1e6:>14.1f}")


if __name__ == "__main__":
    main()
