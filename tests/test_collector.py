"""The cyclic collector is paused only around start-up and one-shot loads, and always restored."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from beatd import cli
from beatd.runtime import collector


@pytest.fixture
def enabled_after() -> Iterator[None]:
    yield
    gc.enable()


@pytest.mark.usefixtures("enabled_after")
@pytest.mark.parametrize("before", [True, False])
def test_paused_turns_the_collector_off_inside_and_back_as_it_was(before: bool) -> None:
    (gc.enable if before else gc.disable)()
    with collector.paused():
        assert not gc.isenabled()
    assert gc.isenabled() is before


@pytest.mark.usefixtures("enabled_after")
def test_paused_restores_the_collector_when_the_body_raises() -> None:
    gc.enable()
    with pytest.raises(ValueError, match="bad"), collector.paused():
        raise ValueError("bad")
    assert gc.isenabled()


@pytest.mark.usefixtures("enabled_after")
def test_what_was_built_while_paused_is_frozen_before_the_collector_is_back() -> None:
    # Frozen after: the first allocation would otherwise walk all of it as young objects.
    gc.enable()
    gc.unfreeze()
    with collector.paused():
        built = [[i] for i in range(1000)]
    assert gc.get_freeze_count() >= len(built)
    gc.unfreeze()
    with pytest.raises(ValueError, match="bad"), collector.paused():
        built = [[i] for i in range(1000)]
        raise ValueError("bad")
    assert gc.get_freeze_count() == 0  # a failed build is garbage: left to the collector


@pytest.mark.usefixtures("enabled_after")
@pytest.mark.parametrize("command", ["check", "list"])
def test_check_and_list_leave_the_collector_on(tmp_path: Path, command: str) -> None:
    gc.enable()
    good = tmp_path / "good.yaml"
    good.write_text(f"state: {tmp_path / 's.db'}\njobs: {{a: {{every: 1h, task: t.a}}}}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs: {a: {every: 0s, task: t.a}}\n")
    assert cli.main([command, "-c", str(good)]) == 0
    assert gc.isenabled()
    assert cli.main([command, "-c", str(bad)]) == 1
    assert gc.isenabled()
