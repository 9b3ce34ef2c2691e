"""Shell completion and the man page: generated from the parser, so they follow it; job and task
names come from the file through the hidden `beatd _complete`."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from beatd import cli, shell

BIN = Path(sys.executable).parent  # where the `beatd` console script is
FILE = """jobs:
  heartbeat: {every: 30s, task: monitoring.ping}
  nightly-report: {cron: "30 2 * * *", task: reports.nightly}
tasks:
  monitoring.ping: {command: [/bin/true]}
  reports.nightly: {command: [/bin/true]}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "beatd.yaml"
    path.write_text(FILE)
    return path


def complete(script: str, *words: str) -> list[str]:
    """COMPREPLY for the command line `words` (the last one being completed), in real bash."""
    line = " ".join(f"'{w}'" for w in words)
    program = f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _beatd\n"
    program += 'printf "%s\\n" "${COMPREPLY[@]}"\n'
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("BEATD_CONFIG", None)
    done = subprocess.run(
        ["bash", "--norc", "--noprofile"],
        input=program,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return [line for line in done.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def bash_script() -> str:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    return shell.bash(cli._parser())


def test_bash_completes_commands_but_not_the_hidden_helper(bash_script: str) -> None:
    assert complete(bash_script, "beatd", "") == [
        *(c.name for c in shell.commands(cli._parser())),
        "-h",
        "--help",
        "--version",
    ]
    assert "_complete" not in complete(bash_script, "beatd", "")
    assert complete(bash_script, "beatd", "imp") == ["import-celery", "import-crontab"]


def test_bash_completes_job_names_from_the_file_given_with_c(
    bash_script: str, config: Path
) -> None:
    assert complete(bash_script, "beatd", "trigger", "-c", str(config), "") == [
        "heartbeat",
        "nightly-report",
    ]
    assert complete(bash_script, "beatd", "list", "-c", str(config), "--job", "ni") == [
        "nightly-report"
    ]
    # The position after the job is not a job again: only options are left.
    after = complete(bash_script, "beatd", "trigger", "-c", str(config), "heartbeat", "")
    assert after == ["-h", "--help", "-c", "--config"]


def test_bash_completes_options_and_choices(bash_script: str) -> None:
    assert "--json" in complete(bash_script, "beatd", "list", "--")
    assert complete(bash_script, "beatd", "completion", "") == ["bash", "zsh"]
    assert complete(bash_script, "beatd", "list", "--count", "") == []


def test_a_missing_or_broken_file_completes_nothing_and_says_nothing(
    bash_script: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("jobs: [unclosed\n")
    for path in (broken, tmp_path / "missing.yaml"):
        assert complete(bash_script, "beatd", "trigger", "-c", str(path), "") == []


def test_the_hidden_helper_prints_job_and_task_names(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["_complete", "tasks", "-c", str(config)]) == 0
    assert capsys.readouterr().out.split() == ["monitoring.ping", "reports.nightly"]
    assert cli.main(["_complete", "jobs", "-c", str(config) + ".missing"]) == 0
    assert capsys.readouterr() == ("", "")


def test_an_option_added_to_the_parser_is_completed_without_touching_the_script() -> None:
    parser = argparse.ArgumentParser(prog="beatd")
    sub = parser.add_subparsers()
    worker = sub.add_parser("worker", help="x")
    worker.add_argument("--run", metavar="TASK")
    worker.add_argument("-c", "--config", metavar="FILE")
    script = shell.bash(parser)
    assert '"worker --run") echo "tasks"' in script
    assert '"worker -c"|"worker --config") echo "path"' in script


def test_zsh_runs_the_same_script_through_bashcompinit() -> None:
    script = shell.zsh(cli._parser())
    assert "bashcompinit" in script
    assert script.endswith(shell.bash(cli._parser()))
    zsh = shutil.which("zsh")
    if zsh is not None:
        done = subprocess.run(
            [zsh, "-n"], input=script, capture_output=True, text=True, check=False
        )
        assert (done.returncode, done.stderr) == (0, "")


def test_the_man_page_renders_without_warnings_and_documents_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["man"]) == 0
    roff = capsys.readouterr().out
    assert roff.startswith(".TH BEATD 1 ")
    assert ".SH NAME\nbeatd \\- " in roff
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed: only the roff structure was checked")
    done = subprocess.run(
        [groff, "-man", "-Tutf8", "-ww", "-P-cbou", "-rLL=200n"],
        input=roff,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    page = done.stdout
    for command in shell.commands(cli._parser()):
        assert f"beatd {command.name} [" in page, command.name
    assert "--output-dir DIR" in page.replace("\u2010", "-")
    assert "EXIT STATUS" in page
    assert "_complete" not in page
