"""The shipped unit files pass `systemd-analyze verify` and keep the promises the README makes."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = sorted(Path(__file__).parent.parent.joinpath("systemd").glob("*.service"))


def settings(unit: Path) -> dict[str, list[str]]:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    values: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_the_unit_is_hardened_and_does_not_crash_loop_on_a_bad_file(unit: Path) -> None:
    s = settings(unit)
    assert s["Type"] == ["notify"]
    assert s["Restart"] == ["on-failure"]
    assert s["RestartPreventExitStatus"] == ["78"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert s.get(key) == ["yes"] or (key == "NoNewPrivileges" and "worker" in unit.name), key
    assert s["ProtectSystem"] == ["strict"]
    assert "ExecReload" in s and "-HUP" in s["ExecReload"][0]


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_analyze_verify_accepts_the_unit(unit: Path, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    beatd = Path(sys.executable).with_name("beatd")
    name = unit.name.replace("@.service", "@example.service")
    copy = tmp_path / name
    copy.write_text(unit.read_text().replace("/usr/local/bin/beatd", str(beatd)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        if str(copy) in line or name in line  # ignore complaints about the host's other units
    ]
    assert result.returncode == 0 and not problems, result.stderr
