"""The worker's memory of recent runs in SQLite (WAL): for each run id, which attempt it is on
and how far it got. Bounded: beyond `size` ids the least recently touched are forgotten; a lookup
is one search of the index on the id, so it costs the same at 1,000 ids as at 1,000,000.

It is what lets the worker tell a duplicate (a scheduler re-publishing after a crash, a
message redelivered after a connection drop) from a run it has not done yet, across restarts.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from beatd.core.errors import StateError
from beatd.core.verdicts import Phase, Seen
from beatd.runtime.clock import system_clock
from beatd.runtime.state import open_db

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY,      -- rewritten on every write: eviction order is recency
    id TEXT NOT NULL UNIQUE,
    attempt INTEGER NOT NULL,     -- 1 for the first delivery, then 2, 3, ... for retries
    phase TEXT NOT NULL,
    starts INTEGER NOT NULL,      -- how often this attempt was started (> 1: a crash under it)
    reason TEXT NOT NULL,         -- for dead/retry: why
    detail TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


class SeenStore:
    """An open store. start() and finish() write into an open transaction; commit() makes
    everything written since the last commit durable at once. The worker commits once per pass
    of its event loop (group commit) and acts on a write only after its commit: a commit costs
    most of a write (the WAL frames of the pages it touched), so runs that start or end together
    share one. Each call is short and runs on the event loop's thread: cheaper than handing it
    to a thread."""

    def __init__(self, path: Path, size: int, clock: Callable[[], datetime] = system_clock) -> None:
        self.path = path
        self.clock = clock
        self.size = size
        self._db = open_db(path, _SCHEMA, SCHEMA_VERSION, "the worker's run-id store")
        # Ids held once committed (counted once, on opening), and new ids written since. The
        # bound counts ids: a run writes its id two to four times, and each write takes a new
        # seq, so the seqs alone would keep a half or a quarter of `size` ids.
        try:
            self._ids = int(self._db.execute("SELECT count(*) FROM runs").fetchone()[0])
        except sqlite3.Error as exc:
            self._db.close()
            raise StateError(f"{path}: cannot read the run-id store: {exc}") from exc
        self._added = 0
        self._writes = 0  # writes since the last commit
        # Why the writes since the last commit were lost: a failed statement can roll back the
        # whole transaction (SQLITE_FULL, SQLITE_IOERR), so commit() must fail for every writer.
        self._lost = ""

    def get(self, run_id: str) -> Seen | None:
        """The id's newest record, written (if not yet committed) by this store included."""
        try:
            row = self._db.execute(
                "SELECT attempt, phase, starts, reason, detail FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot read the run-id store: {exc}") from exc
        if row is None:
            return None
        return Seen(run_id, row[0], Phase(row[1]), row[2], row[3], row[4])

    def start(self, run_id: str, attempt: int) -> Seen:
        """Record that an attempt starts now; a restart of the same attempt counts up."""
        before = self.get(run_id)
        again = before is not None and before.attempt == attempt and before.phase is Phase.RUNNING
        seen = Seen(run_id, attempt, Phase.RUNNING, before.starts + 1 if again and before else 1)
        self._write(seen, new=before is None)
        return seen

    def finish(
        self, run_id: str, attempt: int, phase: Phase, reason: str = "", detail: str = ""
    ) -> None:
        before = self.get(run_id)
        starts = before.starts if before is not None and before.attempt == attempt else 1
        self._write(Seen(run_id, attempt, phase, starts, reason, detail[:2000]), new=before is None)

    def commit(self) -> None:
        """Make every write since the last commit durable, and forget the ids beyond `size`;
        StateError if they could not be (they are then all lost)."""
        try:
            if self._lost:
                raise sqlite3.OperationalError(self._lost)
            if not self._writes:
                return
            ids = self._ids + self._added
            if ids > self.size:
                # The oldest seqs first, along the primary key: a commit forgets as many ids
                # as it added (all the excess at once if `size` was lowered).
                forgotten = self._db.execute(
                    "DELETE FROM runs WHERE seq IN (SELECT seq FROM runs ORDER BY seq LIMIT ?)",
                    (ids - self.size,),
                ).rowcount
                ids -= forgotten
            self._db.commit()
            self._ids = ids
        except sqlite3.Error as exc:
            self._abandon()
            raise StateError(f"{self.path}: cannot write the run-id store: {exc}") from exc
        finally:
            self._added = self._writes = 0
            self._lost = ""

    def _write(self, seen: Seen, *, new: bool) -> None:
        now = self.clock().isoformat(timespec="milliseconds")
        try:
            if not self._db.in_transaction:
                self._db.execute("BEGIN IMMEDIATE")
            # REPLACE deletes the old row and inserts one with the next seq: the id
            # becomes the most recent, so eviction forgets the least recently touched.
            self._db.execute(
                "INSERT OR REPLACE INTO runs (id, attempt, phase, starts, reason, detail,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    seen.id, seen.attempt, seen.phase.value, seen.starts,
                    seen.reason, seen.detail, now,
                ),
            )  # fmt: skip
        except sqlite3.Error as exc:
            self._lost = self._lost or str(exc)
            self._abandon()
            raise StateError(f"{self.path}: cannot write the run-id store: {exc}") from exc
        self._added += new
        self._writes += 1

    def _abandon(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # closed, or the file has gone: nothing to undo
            if self._db.in_transaction:
                self._db.rollback()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM runs").fetchone()[0])

    def close(self) -> None:
        """Close the file; writes not committed are lost, as in a crash (nothing acted on them)."""
        self._db.close()
