"""The state file: what survives a restart, and clear errors when it cannot be used."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from beatd.core.errors import StateError
from beatd.core.jobstate import JobState
from beatd.runtime.state import State, read_states

T0 = datetime(2026, 11, 21, 5, 30, tzinfo=UTC)


def test_saved_job_states_load_back_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "state.db"
    state = State(path)
    saved = JobState("a", "f1", T0, T0, T0 + timedelta(milliseconds=3), 5, 2, 1)
    state.save([saved, JobState("b", "f2", T0)])
    state.close()
    loaded = State(path).load()
    assert loaded["a"] == saved
    assert loaded["b"].last_slot is None
    assert read_states(path) == loaded


def test_forgotten_jobs_are_gone(tmp_path: Path) -> None:
    state = State(tmp_path / "s.db")
    state.save([JobState("a", "f", T0), JobState("b", "f", T0)])
    state.forget(["a"])
    assert set(state.load()) == {"b"}


def test_the_database_is_in_wal_mode(tmp_path: Path) -> None:
    State(tmp_path / "s.db").close()
    mode = sqlite3.connect(tmp_path / "s.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_reading_a_missing_state_file_gives_nothing_and_creates_nothing(tmp_path: Path) -> None:
    assert read_states(tmp_path / "none.db") == {}
    assert not (tmp_path / "none.db").exists()


def test_a_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match=r"s\.db: .*corrupt\? move it aside"):
        State(path)
    with pytest.raises(StateError, match="cannot read the state file"):
        read_states(path)


def test_rows_with_the_same_time_share_one_datetime(tmp_path: Path) -> None:
    state = State(tmp_path / "s.db")
    state.save([JobState("a", "f", T0, T0), JobState("b", "f", T0, None, T0)])
    loaded = State(tmp_path / "s.db").load()
    assert loaded["a"].cursor is loaded["a"].last_slot is loaded["b"].cursor
    assert loaded["b"].last_published_at is loaded["b"].cursor
    assert loaded["b"].last_slot is None


@pytest.mark.parametrize(
    ("column", "value"), [("cursor", "not a time"), ("last_slot", "2026-13-01"), ("cursor", None)]
)
def test_a_row_edited_by_hand_is_a_clear_error(
    tmp_path: Path, column: str, value: str | None
) -> None:
    path = tmp_path / "s.db"
    State(path).save([JobState("a", "f", T0)])
    db = sqlite3.connect(path)
    # A NULL cursor needs a table without the NOT NULL (an older or hand-made file).
    db.execute("CREATE TABLE copy AS SELECT * FROM jobs")
    db.execute("DROP TABLE jobs")
    db.execute("ALTER TABLE copy RENAME TO jobs")
    db.execute(f"UPDATE jobs SET {column} = ?", (value,))
    db.commit()
    db.close()
    with pytest.raises(StateError, match=r"s\.db: cannot read the state file"):
        State(path).load()
    with pytest.raises(StateError, match=r"s\.db: cannot read the state file"):
        read_states(path)


def test_an_unwritable_state_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateError, match="cannot use the state file"):
        State(blocker / "state.db")


def test_a_state_file_from_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    State(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="schema 99"):
        State(path)


def job_state(name: str, minute: int) -> JobState:
    return JobState(name, "fp", cursor=datetime(2026, 11, 21, 5, minute, tzinfo=UTC))


def test_a_state_file_deleted_while_running_is_written_anew_from_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 9, item 14: the daemon wrote into the unlinked file and, after a restart, treated
    # every job as new.
    path = tmp_path / "state.db"
    state = State(path)
    state.load()
    state.save([job_state("a", 1), job_state("b", 1)])
    for leftover in tmp_path.glob("state.db*"):
        leftover.unlink()
    state.save([job_state("a", 2)])
    state.close()
    assert "deleted or replaced" in caplog.text
    assert read_states(path) == {"a": job_state("a", 2), "b": job_state("b", 1)}


def test_a_full_disk_keeps_scheduling_from_memory_and_catches_up_when_there_is_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    state = State(path)
    state.load()
    state.save([job_state("a", 1)])
    pages = state._db.execute("PRAGMA page_count").fetchone()[0]
    state._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "disk is full"
    many = [job_state(f"job-{i:04d}-{'x' * 200}", 2) for i in range(200)]
    state.save(many)  # no exception: the scheduler goes on
    state.save([job_state("a", 3)])
    assert caplog.text.count("cannot write the state file") == 1, "said once, not per save"
    state._db.execute("PRAGMA max_page_count = 1000000")
    state.save([])
    state.close()
    assert len(read_states(path)) == 201
    assert read_states(path)["a"] == job_state("a", 3)
    assert "written again (201 jobs)" in caplog.text
