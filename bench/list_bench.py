"""Benchmark `beatd list`: config load and the whole command for 1k, 10k and 100k jobs.

Target (issue #2): 10,000 jobs listed in under 1 s, end to end, on a 2-core machine.

    .venv/bin/python bench/list_bench.py                # 1k, 10k, 100k
    .venv/bin/python bench/list_bench.py --sizes 10000 --repeats 15

Every measurement runs in a fresh process, so caches start cold as they do for a user:
- load: `read_config` alone (read, YAML, validation), timed inside the process after imports;
- list: `python -m beatd list -c FILE` from start to exit, output to /dev/null;
- phases (10k only): where one list spends its time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S_PER_10K = 1.0
NOW = "2026-06-15T10:07:13Z"  # fixed, so every run lists the same thing

CRONS = [
    "*/5 * * * *", "*/15 * * * *", "0 * * * *", "30 2 * * *", "0 9 * * 1-5",
    "0 0 * * 0", "15 3 1 * *", "0 */6 * * *", "45 23 L * *", "0 8 * * 1#1",
    "H * * * *", "H H * * *", "H/15 * * * *", "H H(0-5) * * 1-5", "H(0-29)/10 * * * *",
    "H H H * *", "0 30 4 * * *", "@daily", "@hourly", "0 12 * jan,jul mon",
]  # fmt: skip
EVERY = ["30s", "1m", "5m", "15m", "1h", "6h", "1d", "500ms", "1h30m", "2d"]
ZONES = ["America/New_York", "Asia/Kolkata", "Australia/Sydney", "Europe/London", "UTC"]
TEAMS = ["billing", "search", "reports", "auth", "media", "ops", "mail", "data"]


def schedule_file(count: int, state: Path, seed: int = 2026) -> str:
    """A realistic schedule: mostly cron (a third with H), intervals, a few one-offs."""
    rng = random.Random(seed)
    lines = [
        "timezone: Europe/Berlin",
        f"state: {state}",
        "broker:",
        "  url: amqp://guest:guest@localhost:5672/%2F",
        "defaults:",
        "  misfire: once",
        "  grace: 60s",
        "jobs:",
    ]
    for i in range(count):
        team = rng.choice(TEAMS)
        lines.append(f"  {team}-job-{i:06d}:")
        kind = rng.random()
        if kind < 0.6:
            lines.append(f'    cron: "{rng.choice(CRONS)}"')
            if rng.random() < 0.2:
                lines.append(f"    timezone: {rng.choice(ZONES)}")
        elif kind < 0.98:
            lines.append(f"    every: {rng.choice(EVERY)}")
        else:
            lines.append(f'    at: "2027-{rng.randint(1, 12):02d}-01T06:00:00+01:00"')
        lines.append(f"    task: {team}.task_{rng.randint(1, 40)}")
        if rng.random() < 0.3:
            lines.append(f"    args: [{rng.randint(1, 90)}, {team}]")
        if rng.random() < 0.2:
            lines.append(f"    kwargs: {{dry_run: false, limit: {rng.randint(1, 1000)}}}")
        if rng.random() < 0.1:
            lines.append(f"    jitter: {rng.choice(['30s', '5m', '1h'])}")
        if rng.random() < 0.1:
            lines.append(f"    routing_key: {team}.urgent")
            lines.append(f"    priority: {rng.randint(1, 9)}")
            lines.append("    expires: 10m")
        if rng.random() < 0.03:
            lines.append("    enabled: false")
    return "\n".join(lines) + "\n"


LOAD = """
import os, sys, time
from beatd.core.config import read_config
start = time.perf_counter()
read_config(sys.argv[1], os.environ)
print(time.perf_counter() - start)
"""

PHASES = """
import json, os, sys, time
t0 = time.perf_counter()
from datetime import datetime
from pathlib import Path
from beatd.core import listing
from beatd.core.config import read_config
from beatd.runtime.state import read_states
from beatd.core.yamlfile import parse
t1 = time.perf_counter()
parse(open(sys.argv[1], encoding="utf-8").read(), sys.argv[1])
t2 = time.perf_counter()
config = read_config(sys.argv[1], os.environ)  # YAML again, each job validated as read
t3 = time.perf_counter()
now = datetime.fromisoformat(sys.argv[2])
runs = listing.with_inactive(list(listing.upcoming(config.jobs, now)), config.jobs)
t4 = time.perf_counter()
list(listing.table(runs, read_states(Path(config.state)), now, config.timezone))
t5 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "YAML": t2 - t1, "validation": (t3 - t2) - (t2 - t1),
                  "next runs": t4 - t3, "table": t5 - t4}))
"""


def timed_list(path: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "beatd", "list", "-c", str(path), "--now", NOW],
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - start


def timed_load(path: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-c", LOAD, str(path)], capture_output=True, text=True, check=True
    )
    return float(out.stdout)


def phases(path: Path, repeats: int) -> dict[str, float]:
    samples = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", PHASES, str(path), NOW],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for _ in range(repeats)
    ]
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]}


def summary(samples: list[float]) -> tuple[float, float]:
    """Median and 90th percentile."""
    p90 = statistics.quantiles(samples, n=10, method="inclusive")[-1]
    return statistics.median(samples), p90


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=9, help="per size (100k: a third)")
    args = parser.parse_args()

    load1, load5, _ = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}"
        f", {platform.system()} {platform.release()}; load average {load1:.2f} / {load5:.2f}"
    )
    print()
    print("| jobs | file | load median | load p90 | list median | list p90 | target | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path = Path(tmp) / f"jobs-{size}.yaml"
            path.write_text(schedule_file(size, Path(tmp) / "state.db"), encoding="utf-8")
            repeats = max(3, args.repeats // 3) if size >= 100_000 else args.repeats
            timed_list(path)  # warm the OS file cache and bytecode
            loads = [timed_load(path) for _ in range(repeats)]
            lists = [timed_list(path) for _ in range(repeats)]
            load_median, load_p90 = summary(loads)
            list_median, list_p90 = summary(lists)
            # The target is for 10k jobs; the other sizes show how it scales.
            target = (
                f"{TARGET_S_PER_10K:g} s | {list_median / TARGET_S_PER_10K:.2f}"
                if size == 10_000
                else "- | -"
            )
            print(
                f"| {size:,} | {path.stat().st_size / 1e6:.1f} MB | {load_median:.3f} s"
                f" | {load_p90:.3f} s | {list_median:.3f} s | {list_p90:.3f} s | {target} |"
            )
        if 10_000 in args.sizes:
            path = Path(tmp) / "jobs-10000.yaml"
            parts = phases(path, args.repeats)
            print()
            print("10k jobs, median of each phase in a fresh process: " + ", ".join(
                f"{key} {value:.3f} s" for key, value in parts.items()
            ))  # fmt: skip


if __name__ == "__main__":
    main()
