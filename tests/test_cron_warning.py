"""`beatd check` warns when a 6-field cron expression reads differently in croniter's order."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from beatd.cli import main
from beatd.core.config import croniter_order_warnings, parse_config

FILE = """\
jobs:
  ping:
    cron: "0 0 * * * 5"
    task: t
  pong:
    cron: "0 0 * * * 5"
    task: t
  fast:
    cron: "* * * * * *"
    task: t
  plain:
    cron: "0 5 * * *"
    task: t
  seconds:
    cron: "30 0 0 * * mon"
    task: t
"""


def test_one_warning_per_ambiguous_expression_with_both_readings() -> None:
    config = parse_config(FILE, "beatd.yaml", {})
    assert [str(w) for w in croniter_order_warnings(config)] == [
        "beatd.yaml:2: job 'ping' (and 1 more): cron: warning: '0 0 * * * 5' puts seconds first "
        "(every hour on Fri); if you meant croniter's seconds last (at 00:00:05 daily), "
        "write '5 0 0 * * *'"
    ]


def test_check_prints_the_warning_and_still_says_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "beatd.yaml"
    path.write_text(textwrap.dedent(FILE), encoding="utf-8")
    assert main(["check", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{path}: OK, 5 jobs (5 enabled)")
    assert err.splitlines() == [
        f"{path}:2: job 'ping' (and 1 more): cron: warning: '0 0 * * * 5' puts seconds first "
        "(every hour on Fri); if you meant croniter's seconds last (at 00:00:05 daily), "
        "write '5 0 0 * * *'"
    ]
