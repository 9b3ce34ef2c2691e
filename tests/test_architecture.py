"""The direction of the architecture: the pure core imports no I/O and none of the layers
above it, pika lives only in the runtime, and nothing in the core reads the wall clock."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "beatd"
IO_MODULES = {"pika", "sqlite3", "asyncio", "signal", "threading", "socket", "subprocess"}
ABOVE_CORE = {"beatd.scheduler", "beatd.worker", "beatd.runtime", "beatd.compat", "beatd.cli"}
CLOCK_READS = {("datetime", "now"), ("datetime", "utcnow"), ("date", "today"),
               ("time", "time"), ("time", "monotonic"), ("time", "perf_counter")}  # fmt: skip


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module


def clock_reads(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and (node.func.value.id, node.func.attr) in CLOCK_READS
        ):
            yield node.lineno, f"{node.func.value.id}.{node.func.attr}()"


@pytest.mark.parametrize("path", modules("core"), ids=lambda p: p.name)
def test_the_core_does_no_io_and_knows_nothing_above_it(path: Path) -> None:
    bad = [
        f"{path.name}:{line}: imports {name}"
        for line, name in imports(path)
        if name.split(".")[0] in IO_MODULES or any(name.startswith(m) for m in ABOVE_CORE)
    ]
    bad += [f"{path.name}:{line}: reads the clock: {call}" for line, call in clock_reads(path)]
    assert bad == []


@pytest.mark.parametrize("folder", ["core", "scheduler", "worker", "compat"])
def test_only_the_runtime_imports_pika_or_sqlite(folder: str) -> None:
    bad = [
        f"{path.relative_to(PACKAGE)}:{line}: imports {name}"
        for path in modules(folder)
        for line, name in imports(path)
        if name.split(".")[0] in {"pika", "sqlite3"}
    ]
    assert bad == []


def test_the_daemon_logic_reads_the_clock_only_through_what_it_is_given() -> None:
    bad = [
        f"{path.relative_to(PACKAGE)}:{line}: {call}"
        for folder in ("scheduler", "worker")
        for path in modules(folder)
        for line, call in clock_reads(path)
    ]
    assert bad == []


def test_the_walk_would_notice_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import sqlite3\nfrom beatd.runtime import state\nx = time.monotonic()\n")
    assert [name for _, name in imports(sample)] == ["sqlite3", "beatd.runtime"]
    assert [call for _, call in clock_reads(sample)] == ["time.monotonic()"]


def test_the_cli_loads_no_broker_or_event_loop_until_a_command_needs_one() -> None:
    # `beatd list` and `check` are run by hand and by reload hooks: asyncio and pika are about
    # a third of their start-up, so only the commands that talk to a broker import them
    import subprocess
    import sys

    probe = "import sys, beatd.cli; print(sorted({'asyncio', 'pika'} & set(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]", f"importing beatd.cli loads {loaded}"
