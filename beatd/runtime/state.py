"""The scheduler's memory in SQLite (WAL): per job, how far its schedule has been handled, the
last slot the broker confirmed, the schedule's fingerprint and counters."""

from __future__ import annotations

import logging
import sqlite3
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path

from beatd.core.errors import StateError
from beatd.core.jobstate import JobState

log = logging.getLogger("beatd.scheduler")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    cursor TEXT NOT NULL,         -- slots at or before this are handled (published or dropped)
    last_slot TEXT,               -- the newest slot the broker confirmed
    last_published_at TEXT,
    published INTEGER NOT NULL DEFAULT 0,
    missed INTEGER NOT NULL DEFAULT 0,      -- dropped by the misfire policy
    unroutable INTEGER NOT NULL DEFAULT 0   -- returned by the broker: no queue bound
);
"""


# What reading a state file can raise: a bad file, a time that is not one, a NULL where a time
# must be (a file made by hand without the NOT NULL).
_UNREADABLE = (sqlite3.Error, ValueError, TypeError)


def _text(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


class State:
    """An open state database. Writes are one transaction per call.

    It keeps every job's row in memory too, so that a write that fails (a full disk, a file
    deleted or replaced under the daemon) costs nothing but a log line: the scheduler goes on
    from memory, and the next write puts every row back (bounded: one row per job).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_db(path, _SCHEMA, SCHEMA_VERSION, "the state file")
        self._inode = _inode(path)
        # The states themselves (the scheduler holds them anyway), made rows only to rewrite.
        self._rows: dict[str, JobState] = {}
        self._behind = False  # the file lacks rows that only memory has

    def load(self) -> dict[str, JobState]:
        try:
            states = _load(self._db)
        except _UNREADABLE as exc:
            raise StateError(f"{self.path}: cannot read the state file: {_reason(exc)}") from exc
        self._rows = dict(states)
        return states

    def save(self, states: Iterable[JobState]) -> None:
        states = list(states)
        if not states and not self._behind:
            return
        for state in states:
            self._rows[state.name] = state
        rows = _rows(states)
        self._write(lambda db: db.executemany(_UPSERT, rows))

    def forget(self, names: Iterable[str]) -> None:
        """Drop jobs no longer in the file, so a job re-added later starts fresh."""
        gone = [(n,) for n in names]
        for (name,) in gone:
            self._rows.pop(name, None)
        self._write(lambda db: db.executemany("DELETE FROM jobs WHERE name = ?", gone))

    def _write(self, change: Callable[[sqlite3.Connection], object]) -> None:
        try:
            if _inode(self.path) != self._inode:
                self._reopen()
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                if self._behind:  # everything, from memory: the file missed some writes
                    self._db.execute("DELETE FROM jobs")
                    self._db.executemany(_UPSERT, _rows(self._rows.values()))
                else:
                    change(self._db)
        except (sqlite3.Error, OSError, StateError) as exc:
            if not self._behind:
                log.error(
                    "%s: cannot write the state file (%s); scheduling from memory and trying "
                    "again at every save",
                    self.path,
                    _reason(exc),
                )
            self._behind = True
            return
        if self._behind:
            log.warning("%s: the state file is written again (%d jobs)", self.path, len(self._rows))
        self._behind = False

    def _reopen(self) -> None:
        log.warning(
            "%s: the state file was deleted or replaced while beatd ran; writing it anew "
            "from memory (%d jobs)",
            self.path,
            len(self._rows),
        )
        self._db.close()
        self._db = open_db(self.path, _SCHEMA, SCHEMA_VERSION, "the state file")
        self._inode = _inode(self.path)
        self._behind = True

    def close(self) -> None:
        self._db.close()


_UPSERT = "INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?,?,?)"


def _rows(states: Iterable[JobState]) -> list[tuple[object, ...]]:
    # Jobs share their times (a first start's 100k rows: one cursor), so each distinct time
    # is written out once: 100k rows, 0.15 -> 0.05 s. (Equal instants share one text, in
    # the offset of the first: the file holds instants.)
    texts: dict[datetime | None, str | None] = {None: None}

    def text(moment: datetime | None) -> str | None:
        found = texts.get(moment, _UNSEEN)
        if found is _UNSEEN:
            if len(texts) > _TIMES_KEPT:
                texts.clear()
                texts[None] = None
            found = texts[moment] = _text(moment)
        return found  # type: ignore[return-value]

    return [
        (
            s.name,
            s.fingerprint,
            text(s.cursor),
            text(s.last_slot),
            text(s.last_published_at),
            s.published,
            s.missed,
            s.unroutable,
        )
        for s in states
    ]


_UNSEEN = object()


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _load(db: sqlite3.Connection) -> dict[str, JobState]:
    # 100k rows: names and fingerprints interned (the config's are: one string each, not
    # two), and jobs with the same schedule share their cursor and last slot (one datetime per
    # distinct text). About 20 MB less at 100k jobs, and the daemon's peak is at this point.
    times: dict[str, datetime] = {}

    def parsed(text: str) -> datetime:
        if len(times) >= _TIMES_KEPT:
            times.clear()
        moment = times[text] = datetime.fromisoformat(text)
        return moment

    result = {}
    # Written out for speed (100k rows: 0.23 -> 0.15 s): rows unpacked by name, a known time
    # looked up once, the tuple made without JobState's keyword-taking __new__.
    intern, new, known = sys.intern, tuple.__new__, times.get
    for (
        row_name,
        fingerprint,
        cursor_text,
        slot_text,
        published_text,
        published,
        missed,
        unroutable,
    ) in db.execute(
        "SELECT name, fingerprint, cursor, last_slot, last_published_at, published, missed,"
        " unroutable FROM jobs"
    ):
        cursor = known(cursor_text) or parsed(cursor_text)
        last_slot = None if slot_text is None else known(slot_text) or parsed(slot_text)
        last_published_at = (
            None if published_text is None else known(published_text) or parsed(published_text)
        )
        name = intern(row_name)
        result[name] = new(
            JobState,
            (
                name,
                intern(fingerprint),
                cursor,
                last_slot,
                last_published_at,
                published,
                missed,
                unroutable,
            ),
        )
    return result


_TIMES_KEPT = 10_000  # distinct times remembered while loading (jobs share a few)


def read_states(path: Path) -> Mapping[str, JobState]:
    """Read the state file without changing it (for `beatd list`); {} if there is none yet."""
    if not path.exists():
        return {}
    try:
        return _read_only(path, "mode=ro")
    except sqlite3.OperationalError:
        pass  # e.g. the daemon's user owns the WAL index; see below
    except _UNREADABLE as exc:
        raise StateError(f"{path}: cannot read the state file: {_reason(exc)}") from exc
    try:
        # immutable=1 skips the WAL, so it may show slightly older LAST times: fine for a display.
        return _read_only(path, "immutable=1")
    except _UNREADABLE as exc:
        raise StateError(f"{path}: cannot read the state file: {_reason(exc)}") from exc


def _read_only(path: Path, mode: str) -> dict[str, JobState]:
    db = sqlite3.connect(f"file:{path}?{mode}", uri=True)
    try:
        return _load(db)
    finally:
        db.close()


def open_db(path: Path, schema: str, version: int, what: str) -> sqlite3.Connection:
    """Open (creating it and its directory) a WAL-mode SQLite file holding schema at version;
    raise StateError naming the file and what it is for."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except (sqlite3.Error, OSError) as exc:
        raise StateError(f"{path}: cannot use {what}: {_reason(exc)}") from exc
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across a crash of the process in WAL mode; only power loss can
        # lose the last commit, and then work is done again under the same id: at least once.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);" + schema
        )
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(version),))
        elif row[0] != str(version):
            raise StateError(
                f"{path}: {what}: schema {row[0]} is not {version}; "
                "was it written by another beatd version?"
            )
    except sqlite3.Error as exc:
        db.close()
        raise StateError(f"{path}: cannot use {what}: {_reason(exc)}") from exc
    except StateError:
        db.close()
        raise
    return db


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if "file is not a database" in text or "malformed" in text:
        return f"{text} (corrupt? move it aside and beatd starts afresh)"
    return text
