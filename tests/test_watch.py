"""Edits of the schedule file are noticed: in place, by rename (editors), by symlink swap."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from beatd.runtime import watch
from beatd.runtime.watch import FileWatch


async def changes_after(path: Path, edit, *, poll: bool = False) -> int:  # type: ignore[no-untyped-def]
    seen = asyncio.Event()
    count = 0

    def on_change() -> None:
        nonlocal count
        count += 1
        seen.set()

    w = FileWatch(path, on_change)
    if poll:
        w._fd = None
        w._poll = asyncio.get_running_loop().call_later(0.05, w._check)
    else:
        w.start()
    try:
        edit()
        await asyncio.wait_for(seen.wait(), 5)
        await asyncio.sleep(0.1)
    finally:
        w.stop()
    return count


def test_an_in_place_write_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "beatd.yaml"
    path.write_text("jobs: {}\n")
    assert asyncio.run(changes_after(path, lambda: path.write_text("jobs: {a: 1}\n"))) >= 1


def test_a_rename_over_the_file_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "beatd.yaml"
    path.write_text("jobs: {}\n")

    def replace() -> None:
        new = tmp_path / ".beatd.yaml.swp"
        new.write_text("jobs: {b: 2}\n")
        new.replace(path)

    assert asyncio.run(changes_after(path, replace)) >= 1


def test_a_swapped_symlink_is_noticed(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    (tmp_path / "v1" / "beatd.yaml").write_text("jobs: {}\n")
    (tmp_path / "v2" / "beatd.yaml").write_text("jobs: {c: 3}\n")
    (tmp_path / "..data").symlink_to("v1")
    path = tmp_path / "beatd.yaml"
    path.symlink_to(Path("..data") / "beatd.yaml")

    def swap() -> None:
        (tmp_path / "..data_tmp").symlink_to("v2")
        (tmp_path / "..data_tmp").replace(tmp_path / "..data")

    assert asyncio.run(changes_after(path, swap)) >= 1


def test_an_unrelated_file_in_the_directory_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "beatd.yaml"
    path.write_text("jobs: {}\n")

    async def scenario() -> int:
        count = 0

        def on_change() -> None:
            nonlocal count
            count += 1

        w = FileWatch(path, on_change)
        w.start()
        (tmp_path / "other.txt").write_text("x")
        await asyncio.sleep(0.3)
        w.stop()
        return count

    assert asyncio.run(scenario()) == 0


def test_without_inotify_the_file_is_polled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "beatd.yaml"
    path.write_text("jobs: {}\n")
    monkeypatch.setattr(watch, "POLL_S", 0.05)
    assert asyncio.run(changes_after(path, lambda: path.write_text("x: 1\n"), poll=True)) >= 1


def test_after_a_symlink_swap_to_another_directory_edits_of_the_new_target_are_noticed(
    tmp_path: Path,
) -> None:
    # /etc/beatd/beatd.yaml -> /srv/v1/beatd.yaml, then swapped to /srv/v2/beatd.yaml: the
    # watch must move on to v2's directory, or later edits there go unnoticed (issue 9, #18).
    for name in ("etc", "v1", "v2"):
        (tmp_path / name).mkdir()
    (tmp_path / "v1" / "beatd.yaml").write_text("jobs: {}\n")
    (tmp_path / "v2" / "beatd.yaml").write_text("jobs: {a: 1}\n")
    path = tmp_path / "etc" / "beatd.yaml"
    path.symlink_to(tmp_path / "v1" / "beatd.yaml")

    async def scenario() -> int:
        changed = asyncio.Event()
        count = 0

        def on_change() -> None:
            nonlocal count
            count += 1
            changed.set()

        w = FileWatch(path, on_change)
        w.start()
        try:
            swap = tmp_path / "etc" / ".beatd.yaml.new"
            swap.symlink_to(tmp_path / "v2" / "beatd.yaml")
            swap.replace(path)
            await asyncio.wait_for(changed.wait(), 5)
            changed.clear()
            (tmp_path / "v2" / "beatd.yaml").write_text("jobs: {a: 2, b: 3}\n")
            await asyncio.wait_for(changed.wait(), 5)
        finally:
            w.stop()
        return count

    assert asyncio.run(scenario()) == 2


def test_the_old_targets_directory_is_no_longer_watched_after_a_swap(tmp_path: Path) -> None:
    for name in ("etc", "v1", "v2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "beatd.yaml").write_text("jobs: {}\n")
    path = tmp_path / "etc" / "link.yaml"
    path.symlink_to(Path("..") / "v1" / "beatd.yaml")

    async def scenario() -> set[Path]:
        w = FileWatch(path, lambda: None)
        w.start()
        try:
            path.unlink()
            path.symlink_to(tmp_path / "v2" / "beatd.yaml")
            w._settled()
            return set(w._watches)
        finally:
            w.stop()

    assert asyncio.run(scenario()) == {tmp_path / "etc", tmp_path / "v2"}
