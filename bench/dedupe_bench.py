"""The worker's run-id store (beatd/runtime/seen.py) at 1k, 10k, 100k and 1M remembered ids.

    .venv/bin/python bench/dedupe_bench.py [--sizes 1000 10000 100000 1000000] [--samples 20000]

For each size a fresh store holds that many ids (bulk-filled with rows as the worker writes
them; the fill is not timed), then it times, call by call: a lookup of a remembered id and of
an unknown one (`get`, what every delivery costs), and a run's writes (`start`, commit,
`finish`, commit: one commit each, the worst case of the group commit). It prints their
distributions, the file's size on disk, the process's memory, the query plans, and checks the
bound: at capacity every commit forgets as many ids as it wrote, so the count stays at `size`.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from beatd.core.verdicts import Phase
from beatd.runtime.seen import SeenStore

FILL_BATCH = 10_000


def run_id(n: int) -> str:
    """An id as the scheduler makes them: the job's name and the slot."""
    day, second = divmod(n, 86_400)
    return f"job-{n % 997}@2026-{1 + day // 28 % 12:02d}-{1 + day % 28:02d}T{second:05d}Z"


def fill(store: SeenStore, count: int) -> None:
    """count rows as SeenStore writes them, in big transactions (not what is measured)."""
    db: sqlite3.Connection = store._db  # the bench's shortcut: a million start() calls is minutes
    row = ("done", 1, "", "", "2026-11-21T05:30:00.000+00:00")
    for first in range(0, count, FILL_BATCH):
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO runs (id, attempt, phase, starts, reason, detail, updated_at)"
            " VALUES (?, 1, ?, ?, ?, ?, ?)",
            ((run_id(n), *row) for n in range(first, min(first + FILL_BATCH, count))),
        )
        db.execute("COMMIT")


def timed(calls: int, call: Callable[[int], object]) -> list[float]:
    """Microseconds per call, call by call."""
    took = []
    clock = time.perf_counter
    for i in range(calls):
        started = clock()
        call(i)
        took.append((clock() - started) * 1e6)
    return took


def spread(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=100)
    return f"{q[49]:6.1f} {q[89]:6.1f} {q[98]:6.1f} {max(samples):8.0f}"


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def on_disk_mib(path: Path) -> float:
    files = [path, path.with_name(path.name + "-wal")]
    return sum(f.stat().st_size for f in files if f.exists()) / 2**20


def measure(size: int, samples: int, directory: Path) -> None:
    path = directory / f"seen-{size}.db"
    store = SeenStore(path, size)
    fill(store, size)
    store.close()
    store = SeenStore(path, size)  # it counts the ids it holds on opening
    ids = [run_id(random.randrange(size)) for _ in range(samples)]
    hit = timed(samples, lambda i: store.get(ids[i]))
    assert all(store.get(i) is not None for i in ids[:100])
    miss = timed(samples, lambda i: store.get(f"new@{i}"))
    writes = min(samples, 5000)

    def run(i: int) -> None:  # the store's part of one run, each write committed alone
        store.start(f"run@{i}", 1)
        store.commit()
        store.finish(f"run@{i}", 1, Phase.DONE)
        store.commit()

    write = timed(writes, run)
    kept = len(store)
    assert kept == size, f"{kept} ids kept, not {size}: the bound is not `size` ids"
    store.close()
    started = time.perf_counter()
    store = SeenStore(path, size)  # opening counts the ids once
    opened_ms = (time.perf_counter() - started) * 1000
    load = os.getloadavg()[0]
    print(f"{size:>9,}  get hit  {spread(hit)}")
    print(f"{'':>9}  get miss {spread(miss)}")
    print(f"{'':>9}  run      {spread(write)}   (start+commit+finish+commit)")
    print(f"{'':>9}  {on_disk_mib(path):.1f} MiB on disk ({kept:,} ids kept after {writes:,}"
          f" runs at capacity); RSS {rss_mib():.1f} MiB; opens in {opened_ms:.0f} ms;"
          f" load {load:.2f}")  # fmt: skip
    store.close()
    path.unlink()


def plans(directory: Path) -> None:
    store = SeenStore(directory / "plans.db", 10)
    for query, args in (
        ("SELECT attempt, phase, starts, reason, detail FROM runs WHERE id = ?", ("x",)),
        ("DELETE FROM runs WHERE seq IN (SELECT seq FROM runs ORDER BY seq LIMIT ?)", (1,)),
    ):
        plan = store._db.execute("EXPLAIN QUERY PLAN " + query, args).fetchall()
        print(f"# {query}: {'; '.join(row[-1] for row in plan)}")
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--samples", type=int, default=20_000)
    args = parser.parse_args()
    random.seed(14)
    print(f"# run-id store; Python {platform.python_version()}, SQLite {sqlite3.sqlite_version},"
          f" {os.cpu_count()} CPUs; times in microseconds: p50 p90 p99 max")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="beatd-dedupe-") as tmp:
        plans(Path(tmp))
        print(f"{'ids':>9}  {'':8} {'p50':>6} {'p90':>6} {'p99':>6} {'max':>8}")
        for size in args.sizes:
            measure(size, args.samples, Path(tmp))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"# peak RSS of the whole run {peak:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
