"""Benchmark beatd at scale: 1k, 10k and 100k jobs in one schedule file.

Targets (issue #14, item 2): 100,000 jobs: READY=1 within 3 s of start and peak RSS at most
150 MiB; `beatd check` and `beatd list` of 10,000 jobs under 0.5 s, of 100,000 under 4 s.

    .venv/bin/python bench/scale_bench.py                       # 1k, 10k, 100k
    .venv/bin/python bench/scale_bench.py --sizes 100000 --repeats 1

The file is list_bench's realistic mix (cron, `H` cron, intervals, one-offs, args, kwargs,
jitter, zones). Every measurement is a fresh process:
- floor: libyaml emitting the file's parse events, nothing built (a process of its own too),
  so that ratios to it hold on a loaded machine;
- check, list: `python -m beatd check|list -c FILE` from start to exit, wall and CPU seconds;
- ready: `python -m beatd run -c FILE` from spawn to its READY=1 on a notify socket of ours;
- peak RSS: the daemon's VmHWM one second after READY (the first plan is made before READY);
  per job: (peak RSS - peak RSS of a 10-job file) / jobs.
- reload (100k only): in one process, the file read again in a thread as `beatd run` reloads
  it and compared with the running jobs, while the event loop ticks every 5 ms: the loop's
  longest stall during the read, and the time the scheduler then takes to apply what changed
  on the loop (nothing, for the same file: the line measures the fixed cost).
The daemon's broker URL is a closed port on 127.0.0.1, so the shared RabbitMQ takes no load:
READY does not wait for the broker (the link connects in the background). beatd's bytecode is
compiled first, as installing a package does: with PYTHONDONTWRITEBYTECODE set (this kind of
machine sets it) every process would otherwise compile beatd's modules again (0.08 s).
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import gc
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from list_bench import NOW, schedule_file

READY_TIMEOUT_S = 120.0
TARGETS = {  # jobs: (check/list seconds, READY seconds, peak RSS MiB)
    10_000: (0.5, None, None),
    100_000: (4.0, 3.0, 150.0),
}
CLOSED_PORT_URL = "amqp://guest:guest@127.0.0.1:1/%2F"


def write_file(directory: Path, count: int) -> Path:
    text = schedule_file(count, directory / f"state-{count}.db")
    text = text.replace("amqp://guest:guest@localhost:5672/%2F", CLOSED_PORT_URL)
    path = directory / f"jobs-{count}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# The floor: libyaml emitting the parse events of the same file, nothing built from them.
FLOOR = """
import sys
from yaml._yaml import CParser
from yaml.events import StreamEndEvent
with open(sys.argv[1], encoding="utf-8") as file:
    get = CParser(file.read()).get_event
while type(get()) is not StreamEndEvent:
    pass
"""


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: str, path: Path) -> tuple[float, float]:
    """Wall seconds from start to exit, and the CPU seconds the process used (on a shared
    machine the wall time is mostly waiting for a core)."""
    if command == "floor":
        argv = [sys.executable, "-c", FLOOR, str(path)]
    else:
        extra = ["--now", NOW] if command == "list" else []
        argv = [sys.executable, "-m", "beatd", command, "-c", str(path), *extra]
    cpu, start = _cpu_of_children(), time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start, _cpu_of_children() - cpu


def median_of(command: str, path: Path, repeats: int) -> tuple[float, float]:
    runs = [timed(command, path) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def ready(path: Path, directory: Path) -> tuple[float, float]:
    """Seconds from spawn to READY=1, and peak RSS (MiB) one second after it."""
    address = str(directory / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(READY_TIMEOUT_S)
        env = {**os.environ, "NOTIFY_SOCKET": address}
        start = time.perf_counter()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "beatd", "run", "-c", str(path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while b"READY=1" not in sock.recv(65536):
                pass
            elapsed = time.perf_counter() - start
            time.sleep(1.0)
            peak = _status_kib(daemon.pid, "VmHWM") / 1024
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
            Path(address).unlink()
    return elapsed, peak


async def _reload_lag(path: Path) -> tuple[float, float, float]:
    from datetime import UTC, datetime  # noqa: PLC0415

    from beatd.scheduler.changes import compare  # noqa: PLC0415
    from beatd.scheduler.daemon import load_schedule  # noqa: PLC0415
    from beatd.scheduler.scheduler import Scheduler  # noqa: PLC0415
    from tests.fakebroker import FakeBroker, MemoryStore  # noqa: PLC0415

    now = datetime(2026, 6, 15, 10, 7, 13, tzinfo=UTC)
    gc.disable()  # as the daemon starts: collector off, then what start-up built frozen
    scheduler = Scheduler(
        load_schedule(str(path), os.environ), MemoryStore(), FakeBroker().connect, clock=lambda: now
    )
    gc.freeze()
    running = scheduler.jobs

    def read() -> tuple[Any, Any]:  # as SchedulerDaemon._read: read and compare in the thread
        config = load_schedule(str(path), os.environ)
        return config, compare(running, config, now, slots=True)

    reading = asyncio.create_task(asyncio.to_thread(read))
    started, lag = time.perf_counter(), 0.0
    while not reading.done():
        tick = time.perf_counter()
        await asyncio.sleep(0.005)
        lag = max(lag, time.perf_counter() - tick - 0.005)
    read = time.perf_counter() - started
    gc.enable()
    adopting = time.perf_counter()
    config, changes = reading.result()
    await scheduler.reload(config, now, changes)
    return read, lag, time.perf_counter() - adopting


def reload_lag(path: Path) -> None:
    """A reload's read in a thread: how long the loop stalls at most, and the adopt after."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    read, lag, adopt = asyncio.run(_reload_lag(path))
    print(
        f"reload of {path.name}: read in a thread {read:.2f} s, longest loop stall meanwhile"
        f" {lag * 1000:.0f} ms (target 100 ms), then adopted on the loop in {adopt * 1000:.0f} ms"
    )


def mark(value: float, target: float | None) -> str:
    if target is None:
        return "-"
    return f"{target:g} ({'met' if value <= target else 'MISSED'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3, help="per size and measurement")
    args = parser.parse_args()
    compileall.compile_dir(Path(__file__).resolve().parent.parent / "beatd", quiet=1)
    load1, load5, _ = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}"
        f", {platform.system()} {platform.release()}; load average {load1:.2f} / {load5:.2f}"
    )
    print()
    print(
        "| jobs | file | floor | check | list | READY | check, list in floors"
        " | CPU: floor, check, list | peak RSS | per job | targets |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        _, base_rss = ready(write_file(directory, 10), directory)
        for size in args.sizes:
            path = write_file(directory, size)
            timed("check", path)  # warm the OS file cache and the bytecode
            floor, floor_cpu = median_of("floor", path, args.repeats)
            check, check_cpu = median_of("check", path, args.repeats)
            listed, list_cpu = median_of("list", path, args.repeats)
            runs = [ready(path, directory) for _ in range(args.repeats)]  # 1st: a new state
            start = statistics.median(r[0] for r in runs)
            peak = max(r[1] for r in runs)
            per_job = (peak - base_rss) * 1024 * 1024 / size
            quick, ready_target, rss_target = TARGETS.get(size, (None, None, None))
            print(
                f"| {size:,} | {path.stat().st_size / 1e6:.1f} MB | {floor:.3f} s"
                f" | {check:.3f} s | {listed:.3f} s | {start:.2f} s"
                f" | {check / floor:.1f}, {listed / floor:.1f}"
                f" | {floor_cpu:.2f}, {check_cpu:.2f}, {list_cpu:.2f} s"
                f" | {peak:.0f} MiB | {per_job:,.0f} B"
                f" | {mark(max(check, listed), quick)}, {mark(start, ready_target)},"
                f" {mark(peak, rss_target)} |"
            )
        print()
        print(f"peak RSS of a 10-job daemon (the base for per job): {base_rss:.0f} MiB")
        load1, load5, _ = os.getloadavg()
        print(f"load average at the end: {load1:.2f} / {load5:.2f}")
        if 100_000 in args.sizes:
            reload_lag(directory / "jobs-100000.yaml")


if __name__ == "__main__":
    main()
