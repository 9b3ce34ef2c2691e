"""The worker's run-id store: phases, restart counting, eviction, surviving a reopen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from beatd.core.errors import StateError
from beatd.core.verdicts import Phase, Seen
from beatd.runtime.seen import SeenStore


def test_an_unknown_id_is_not_seen(tmp_path: Path) -> None:
    store = SeenStore(tmp_path / "seen.db", 10)
    assert store.get("job@1") is None


def test_a_started_run_is_remembered_as_running_then_done(tmp_path: Path) -> None:
    store = SeenStore(tmp_path / "seen.db", 10)
    assert store.start("job@1", 1) == Seen("job@1", 1, Phase.RUNNING, starts=1)
    store.finish("job@1", 1, Phase.DONE)
    assert store.get("job@1") == Seen("job@1", 1, Phase.DONE, starts=1)


def test_starting_the_same_attempt_again_counts_the_restarts(tmp_path: Path) -> None:
    store = SeenStore(tmp_path / "seen.db", 10)
    store.start("job@1", 1)
    assert store.start("job@1", 1).starts == 2
    assert store.start("job@1", 1).starts == 3


def test_a_new_attempt_starts_counting_afresh(tmp_path: Path) -> None:
    store = SeenStore(tmp_path / "seen.db", 10)
    store.start("job@1", 1)
    store.finish("job@1", 1, Phase.RETRY, "failed", "exit status 3")
    assert store.get("job@1") == Seen("job@1", 1, Phase.RETRY, 1, "failed", "exit status 3")
    assert store.start("job@1", 2) == Seen("job@1", 2, Phase.RUNNING, starts=1)


def test_committed_writes_survive_closing_and_reopening(tmp_path: Path) -> None:
    store = SeenStore(tmp_path / "seen.db", 10)
    store.start("job@1", 1)
    store.finish("job@1", 1, Phase.DEAD, "timed_out", "after 5s")
    store.commit()
    store.close()
    reopened = SeenStore(tmp_path / "seen.db", 10)
    assert reopened.get("job@1") == Seen("job@1", 1, Phase.DEAD, 1, "timed_out", "after 5s")


def test_writes_not_committed_are_lost_as_in_a_crash_but_the_store_itself_sees_them(
    tmp_path: Path,
) -> None:
    store = SeenStore(tmp_path / "seen.db", 10)
    store.start("job@1", 1)
    store.commit()
    store.finish("job@1", 1, Phase.DONE)
    store.start("job@2", 1)
    assert store.get("job@1") == Seen("job@1", 1, Phase.DONE, starts=1)
    other = SeenStore(tmp_path / "seen.db", 10)  # another reader sees only what is committed
    assert other.get("job@1") == Seen("job@1", 1, Phase.RUNNING, starts=1)
    assert other.get("job@2") is None
    other.close()
    store.close()
    reopened = SeenStore(tmp_path / "seen.db", 10)
    assert reopened.get("job@1") == Seen("job@1", 1, Phase.RUNNING, starts=1)
    assert reopened.get("job@2") is None


def test_a_write_that_fails_fails_the_commit_of_every_write_since_the_last(
    tmp_path: Path,
) -> None:
    store = SeenStore(tmp_path / "seen.db", 10)
    store.start("job@1", 1)
    store._db.execute("CREATE TRIGGER refuse BEFORE INSERT ON runs WHEN NEW.id = 'bad@1' "
                      "BEGIN SELECT RAISE(ABORT, 'disk full, say'); END")  # fmt: skip
    with pytest.raises(StateError, match="cannot write the run-id store: disk full, say"):
        store.start("bad@1", 1)
    store.start("job@2", 1)  # written after the failure, in the same pass
    with pytest.raises(StateError, match="cannot write the run-id store: disk full, say"):
        store.commit()
    assert store.get("job@1") is None
    assert store.get("job@2") is None
    store.start("job@3", 1)  # the next commit is a fresh start
    store.commit()
    assert store.get("job@3") is not None


def test_beyond_its_size_the_least_recently_touched_ids_are_forgotten(tmp_path: Path) -> None:
    store = SeenStore(tmp_path / "seen.db", 3)
    for n in range(3):
        store.start(f"job@{n}", 1)
        store.commit()
    store.finish("job@0", 1, Phase.DONE)  # touched again: now the most recent
    store.start("job@3", 1)
    store.commit()
    assert len(store) == 3
    assert store.get("job@1") is None
    assert {store.get(f"job@{n}") is not None for n in (0, 2, 3)} == {True}


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "seen.db"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StateError, match=r"seen\.db: cannot use the worker's run-id store"):
        SeenStore(path, 10)


def test_a_store_from_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "seen.db"
    SeenStore(path, 10).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="schema 99 is not 1"):
        SeenStore(path, 10)


def test_the_directory_is_created(tmp_path: Path) -> None:
    store = SeenStore(tmp_path / "a" / "b" / "seen.db", 10)
    store.start("job@1", 1)
    assert (tmp_path / "a" / "b" / "seen.db").exists()


def test_it_remembers_size_ids_however_often_each_was_written(tmp_path: Path) -> None:
    """Every run writes its id at least twice (start, then finish; a retry four times): the
    bound counts ids, not writes."""
    store = SeenStore(tmp_path / "seen.db", 10)
    for n in range(25):
        store.start(f"job@{n}", 1)
        store.commit()
        store.finish(f"job@{n}", 1, Phase.RETRY, "failed")
        store.finish(f"job@{n}", 1, Phase.DONE, "failed")
        store.commit()
    assert len(store) == 10
    assert [n for n in range(25) if store.get(f"job@{n}") is not None] == list(range(15, 25))
    store.close()
    reopened = SeenStore(tmp_path / "seen.db", 10)  # and it counts what it finds on opening
    reopened.start("job@25", 1)
    reopened.commit()
    assert len(reopened) == 10
    assert reopened.get("job@15") is None
