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


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_reload_checks_the_file_the_daemon_runs_before_sending_sighup(unit: Path) -> None:
    s = settings(unit)
    config = s["ExecStart"][0].split(" -c ")[1]
    # The scheduler checks what it uses; the worker also resolves its tasks, as at its start.
    skip = "" if "worker" in unit.name else "--skip-tasks "
    assert s["ExecReload"] == [
        f"/usr/local/bin/beatd check {skip}-c {config}",  # fails the reload on a bad edit
        "/bin/kill -HUP $MAINPID",
    ]


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_the_reload_check_fails_on_a_file_its_daemon_would_refuse(
    unit: Path, tmp_path: Path
) -> None:
    if "worker" in unit.name:
        text = "worker: {queue: q}\ntasks:\n  t: {command: [no-such-program-beatd-test]}\n"
    else:
        text = "jobs:\n  j: {cron: '61 * * * *', task: t}\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(text, encoding="utf-8")
    argv = settings(unit)["ExecReload"][0].split()
    argv[0] = str(Path(sys.executable).with_name("beatd"))
    argv[argv.index("-c") + 1] = str(bad)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert done.stderr.startswith(f"{bad}:") and "Traceback" not in done.stderr


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
