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
