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
