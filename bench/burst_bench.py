"""Bursts timed where they arrive: one recorder, a consumer in a process of its own bound to the
bench exchange, stamps each delivery with the wall clock; a burst's lateness is arrival - slot.
Publishers take turns in front of the same recorder, one at a time, each in its own process:

    .venv/bin/python bench/burst_bench.py [burst] [features] [reload] [profile] [--rounds N]

burst     N jobs (1k, 10k) `at:` the same second: `beatd run` against a raw pika publisher that
          drafted the same N messages (beatd's bytes) before the slot, as beatd drafts, then at
          the slot publishes them back to back with pipelined confirms. Alternately, N rounds.
features  the 10k burst with `history:`, `signing:`, `ha:` (each alone and all together) and
          with none of them, and raw pika, in turn.
reload    a daemon with 100k jobs, 10k of them `every: 30s`; the file is edited (100 jobs
          changed) at several offsets before a burst's slot, so the reload (read in a thread,
          then the adopt) overlaps the burst; each burst's last arrival against the bursts of
          the same daemon without a reload.
profile   the 10k slot pass in process under cProfile: the time by who spends it.

Timings are never test assertions; the README next to this file records the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import json
import math
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pika

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))
from beat_bench import raw_pika  # noqa: E402

from beatd.core.config import read_config  # noqa: E402
from beatd.core.messages import Run  # noqa: E402
from beatd.runtime.rabbitmq import Link  # noqa: E402
from beatd.runtime.state import State  # noqa: E402
from beatd.scheduler.codecs import BeatdCodec  # noqa: E402
from beatd.scheduler.scheduler import Scheduler  # noqa: E402

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
STOP = "burst-bench-stop"
PID = os.getpid()
EXCHANGE = f"bench.arrive.{PID}"
QUEUE = f"{EXCHANGE}.rec"
HISTORY = {"exchange": f"bench.arrive.events.{PID}", "stream": f"bench.arrive.history.{PID}"}
HA_NAME = f"bench-arrive-{PID}"
KEY = "k1"


def compact(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# The recorder ------------------------------------------------------------------------------


def record(out: str) -> None:
    """Consume the bench queue until the STOP message; write (arrival, message id) lines."""
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    arrivals: list[tuple[float, str]] = []
    clock = time.time

    def on_message(ch: object, _method: object, properties: object, _body: bytes) -> None:
        message_id = properties.message_id  # type: ignore[attr-defined]
        if message_id == STOP:
            channel.stop_consuming()
            return
        arrivals.append((clock(), message_id))

    channel.basic_consume(QUEUE_ARG, on_message, auto_ack=True)
    print("ready", flush=True)
    channel.start_consuming()
    with Path(out).open("w") as f:
        for at, message_id in arrivals:
            f.write(f"{at:.6f} {message_id}\n")
    connection.close()


QUEUE_ARG = QUEUE  # the recorder's queue (set from argv in the recorder process)


def declare() -> None:
    """The bench exchange and the recorder's queue bound to it."""
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    ch = connection.channel()
    ch.exchange_declare(EXCHANGE, "topic", durable=True)
    ch.queue_declare(QUEUE)
    ch.queue_bind(QUEUE, EXCHANGE, "#")
    connection.close()


class Recorder:
    def __init__(self, directory: Path) -> None:
        self.out = directory / "arrivals.txt"
        declare()
        self.process = subprocess.Popen(
            [sys.executable, __file__, "_record", QUEUE, str(self.out)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        self.process.stdout.readline()

    def arrivals(self) -> dict[str, list[float]]:
        """Stop the recorder; every arrival time by the slot in its message id."""
        connection = pika.BlockingConnection(pika.URLParameters(URL))
        ch = connection.channel()
        ch.basic_publish(EXCHANGE, "stop", b"", pika.BasicProperties(message_id=STOP))
        connection.close()
        self.process.wait(timeout=120)
        by_slot: dict[str, list[float]] = {}
        for line in self.out.read_text().splitlines():
            at, message_id = line.split(" ", 1)
            by_slot.setdefault(message_id.rsplit("@", 1)[1], []).append(float(at))
        return by_slot


def cleanup() -> None:
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    ch = connection.channel()
    for queue in (QUEUE, HISTORY["stream"], f"beatd.ha.{HA_NAME}.token"):
        ch.queue_delete(queue)
    ch.queue_delete(f"beatd.ha.{HA_NAME}.progress")
    for exchange in (EXCHANGE, HISTORY["exchange"]):
        ch.exchange_delete(exchange)
    connection.close()


# The publishers ----------------------------------------------------------------------------


def write_file(path: Path, variant: str, jobs: str) -> None:
    sections = {
        "history": f"history:\n  exchange: {HISTORY['exchange']}\n  stream: {HISTORY['stream']}\n",
        "signing": f"signing:\n  key: {KEY}\n  keys:\n    {KEY}: {path.parent / 'key'}\n",
        "ha": f"ha:\n  name: {HA_NAME}\n",
    }
    chosen = list(sections) if variant == "all" else [variant] if variant in sections else []
    (path.parent / "key").write_text("k" * 48)
    text = (
        f"broker:\n  exchange: {EXCHANGE}\nstate: {path.parent / 'state.db'}\n"
        + "".join(sections[name] for name in chosen)
        + f"jobs:\n{jobs}"
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(path)  # as a config manager does: the watcher sees one change


def at_jobs(n: int, slot: datetime, prefix: str = "j") -> str:
    return "".join(
        f"  {prefix}{i:06d}:\n    at: '{slot.isoformat()}'\n    task: bench.t\n" for i in range(n)
    )


class Daemon:
    """`beatd run -c path`; its stderr read by a thread, each line with the time it came."""

    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "beatd", "run", "-c", str(path)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        self.lines: list[tuple[float, str]] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._seen:
                self.lines.append((time.time(), line.rstrip()))
                self._seen.notify_all()

    def wait_for(self, text: str, timeout_s: float, after: int = 0) -> float | None:
        """When a line containing text came (None: not within timeout_s)."""
        deadline = time.monotonic() + timeout_s
        with self._seen:
            while True:
                for at, line in self.lines[after:]:
                    if text in line:
                        return at
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    return None
                self._seen.wait(left)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def raw(path: str, slot_iso: str) -> None:
    """The raw publisher: beatd's messages for the file's jobs, drafted and stamped before
    the slot, then at the slot published back to back with pipelined confirms."""
    slot = datetime.fromisoformat(slot_iso)
    config = read_config(path, {})
    codec = BeatdCodec(config.broker.exchange)
    prebuilt = []
    for job in config.jobs:
        m = codec.draft(Run(job, slot))(slot)
        p = m.properties
        properties = pika.BasicProperties(
            content_type=p.content_type,
            content_encoding=p.content_encoding,
            delivery_mode=2,
            message_id=p.message_id,
            type=p.type,
            app_id=p.app_id,
            timestamp=p.timestamp,
            headers=dict(p.headers),
        )
        prebuilt.append((m.exchange, m.routing_key, m.body, properties))

    async def at_the_slot() -> None:
        print("ready", flush=True)
        await asyncio.sleep(max(0.0, slot.timestamp() - time.time()))

    asyncio.run(raw_pika(prebuilt, before=at_the_slot))


@dataclass
class Burst:
    publisher: str
    n: int
    slot: datetime
    note: str = ""
    arrivals: list[float] = field(default_factory=list)

    def lateness_ms(self) -> list[float]:
        slot = self.slot.timestamp()
        return [(at - slot) * 1000 for at in self.arrivals]


def one_burst(directory: Path, publisher: str, n: int, margin_s: float) -> Burst:
    """One burst of n runs at a slot margin_s from now, by raw pika or by a daemon."""
    if publisher in ("ha", "all"):
        margin_s += 3  # the election: the lock, the progress read
    slot = datetime.fromtimestamp(math.ceil(time.time() + margin_s), UTC)
    path = directory / f"{publisher}.yaml"
    write_file(path, publisher, at_jobs(n, slot))
    for f in directory.glob("state.db*"):
        f.unlink()
    burst = Burst(publisher, n, slot)
    if publisher == "raw":
        process = subprocess.Popen(
            [sys.executable, __file__, "_raw", str(path), slot.isoformat()],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert process.stdout is not None
        process.stdout.readline()
        if time.time() > slot.timestamp() - 0.5:
            burst.note = "ready late"
        process.wait(timeout=120)
        return burst
    daemon = Daemon(path)
    try:
        ready = daemon.wait_for("leading" if publisher in ("ha", "all") else "connected to", 60)
        if ready is None or ready > slot.timestamp() - 1.0:
            burst.note = "ready late"
        daemon.wait_for("published", slot.timestamp() - time.time() + 60)
    finally:
        daemon.stop()
    return burst


def startup_margin(directory: Path, n: int) -> float:
    """Seconds from spawn to a connected daemon with n jobs, doubled, plus 1.5 s."""
    path = directory / "probe.yaml"
    write_file(path, "off", at_jobs(n, datetime(2099, 1, 1, tzinfo=UTC)))
    started = time.time()
    daemon = Daemon(path)
    ready = daemon.wait_for("connected to", 60)
    daemon.stop()
    for f in directory.glob("state.db*"):
        f.unlink()
    return 2 * ((ready or started + 10) - started) + 1.5


def describe(bursts: list[Burst]) -> str:
    last = [max(b.lateness_ms()) for b in bursts if b.arrivals]
    if not last:
        return "no complete burst"
    first, p50, p99 = (
        statistics.median(percentile(b.lateness_ms(), p) for b in bursts if b.arrivals)
        for p in (0, 50, 99)
    )
    return (
        f"last {statistics.median(last):7.1f} ms (range {min(last):.0f}-{max(last):.0f})  "
        f"first {first:6.1f}  p50 {p50:6.1f}  p99 {p99:6.1f} ms"
    )


def run_bursts(directory: Path, plan: list[tuple[str, int]], rounds: int) -> list[Burst]:
    """Each (publisher, n) of plan in turn, rounds times, in front of one recorder."""
    margins = {n: startup_margin(directory, n) for n in sorted({n for _, n in plan})}
    recorder = Recorder(directory)
    bursts = []
    for r in range(rounds):
        for publisher, n in plan:
            burst = one_burst(directory, publisher, n, margins[n])
            print(f"  round {r + 1} {publisher:>8} {n:>6} at {compact(burst.slot)} {burst.note}")
            bursts.append(burst)
            time.sleep(1)  # the broker's and recorder's tails of this burst
    by_slot = recorder.arrivals()
    for burst in bursts:
        burst.arrivals = by_slot.get(compact(burst.slot), [])
        if len(burst.arrivals) != burst.n:
            burst.note += f" {len(burst.arrivals)} of {burst.n} arrived"
    return bursts


def report(bursts: list[Burst], publishers: list[str], n: int, target: float) -> None:
    good = [b for b in bursts if b.n == n and not b.note]
    base = [max(b.lateness_ms()) for b in good if b.publisher == publishers[0]]
    for publisher in publishers:
        mine = [b for b in good if b.publisher == publisher]
        line = f"  {n:>6} {publisher:>8}: {describe(mine)}"
        last = [max(b.lateness_ms()) for b in mine]
        if base and last and publisher != publishers[0]:
            ratio = statistics.median(last) / statistics.median(base)
            line += f"   ratio {ratio:4.2f} to {publishers[0]} (target <= {target})"
        print(line + f"   ({len(mine)} bursts)")
    bad = [b for b in bursts if b.n == n and b.note]
    for b in bad:
        print(f"  left out: {b.publisher} {b.n} at {compact(b.slot)}: {b.note.strip()}")


def burst(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        plan = [("raw", 1000), ("beatd", 1000), ("raw", 10_000), ("beatd", 10_000)]
        bursts = run_bursts(Path(tmp), plan, rounds)
    print("last arrival after the slot, medians over rounds (one recorder for all):")
    for n in (1000, 10_000):
        report(bursts, ["raw", "beatd"], n, 1.2)


def features(rounds: int) -> None:
    variants = ["off", "history", "signing", "ha", "all"]
    with tempfile.TemporaryDirectory() as tmp:
        plan = [("raw", 10_000)] + [(v, 10_000) for v in variants]
        bursts = run_bursts(Path(tmp), plan, rounds)
    print("10k burst, last arrival after the slot, features on against off:")
    report(bursts, variants, 10_000, 1.25)
    report(bursts, ["raw", "off"], 10_000, 1.2)


# reload ------------------------------------------------------------------------------------


def reload_file(path: Path, n: int, burst_n: int, generation: int) -> None:
    """n jobs: burst_n `every: 30s`, the rest daily or nightly cron with args; 100 of those
    changed in each generation (what a reload finds to adopt)."""
    jobs = [f"  b{i:06d}:\n    every: 30s\n    task: bench.t\n" for i in range(burst_n)]
    for i in range(n - burst_n):
        kind = "every: 1d" if i % 2 else "cron: 'H 3 * * *'"
        if i < 100:
            kind = f"every: {1 + generation % 2}d"
        jobs.append(f"  m{i:06d}:\n    {kind}\n    task: bench.m{i % 100}\n    args: [{i}, 'x']\n")
    write_file(path, "off", "".join(jobs))


CONTROL_READ_S = 2.7


def reload(rounds: int, n: int = 100_000, burst_n: int = 10_000, control: bool = False) -> None:
    """Bursts of one daemon, every 30 s, with and without a reload overlapping them. control:
    the edits go to a copy the daemon does not watch, at the same moments (what the write of
    a 9 MB file costs the burst, without the reload)."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        path = directory / "reload.yaml"
        reload_file(path, n, burst_n, 0)
        edited = path
        if control:
            (directory / "unwatched").mkdir()
            edited = directory / "unwatched" / "reload.yaml"
        recorder = Recorder(directory)
        daemon = Daemon(path)
        bursts: list[Burst] = []
        try:
            if daemon.wait_for("connected to", 180) is None:
                raise SystemExit("the daemon did not start")
            # The first reload measures how long a reload takes here (read and adopt); the
            # control edits at the offsets of a reload of 2.7 s (this bench's quiet machine).
            took = CONTROL_READ_S
            if not control:
                # Just after a burst, so that this reload does not wait for one.
                time.sleep((time.time() // 30 + 1) * 30 + 2 - time.time())
                mark = len(daemon.lines)
                reload_file(path, n, burst_n, 1)
                asked = time.time()
                done = daemon.wait_for("reloaded", 120, after=mark)
                took = (done or asked) - asked
                print(f"  a reload of {n} jobs, alone: {took:.2f} s from the edit to `reloaded`")
            # Edited half a read before the slot (the daemon reads after the burst), a read
            # before it (the read may overrun into it), and well before it.
            offsets = [None, took * 0.5, None, took, None, took * 1.6 + 1]
            generation = 1
            for r in range(rounds):
                for offset in offsets:
                    slot_s = (time.time() // 30 + 1) * 30
                    if slot_s - time.time() < (offset or 0) + 1:
                        slot_s += 30
                    slot = datetime.fromtimestamp(slot_s, UTC)
                    note = "no reload" if offset is None else f"edited {offset:.2f} s before"
                    if offset is not None:
                        time.sleep(max(0.0, slot_s - offset - time.time()))
                        generation += 1
                        reload_file(edited, n, burst_n, generation)
                    mark = len(daemon.lines)
                    bursts.append(Burst("reload", burst_n, slot, note))
                    time.sleep(max(0.0, slot_s - time.time()) + 3)
                    print(f"  round {r + 1} burst at {compact(slot)}: {note}")
                    if offset is not None and not control:
                        daemon.wait_for("reloaded", 120, after=mark)
                        for at, line in daemon.lines[mark:]:
                            if "reload" in line:
                                print(f"    {at - slot_s:+7.2f} s  {line[-110:]}")
        finally:
            daemon.stop()
        by_slot = recorder.arrivals()
    for b in bursts:
        b.arrivals = by_slot.get(compact(b.slot), [])
    base = [max(b.lateness_ms()) for b in bursts if b.note == "no reload" and b.arrivals]
    print(f"{burst_n} `every: 30s` of {n} jobs, last arrival after the slot:")
    firsts = [min(b.lateness_ms()) for b in bursts if b.note == "no reload" and b.arrivals]
    print(f"  without a reload: last {', '.join(f'{v:.0f}' for v in base)} ms", end="")
    print(f" (first {', '.join(f'{v:.0f}' for v in firsts)} ms)")
    for b in bursts:
        if b.note != "no reload" and b.arrivals:
            last = max(b.lateness_ms())
            delay = last - statistics.median(base) if base else float("nan")
            print(
                f"  {b.note}: first {min(b.lateness_ms()):6.0f} ms, last {last:7.0f} ms, "
                f"delay {delay:+6.0f} ms (target <= 100)  ({len(b.arrivals)} of {b.n})"
            )


# profile -----------------------------------------------------------------------------------


async def _profiled_pass(path: Path, slot: datetime) -> pstats.Stats:
    """The daemon's pass at a slot, drafted 0.4 s before as the daemon does, under cProfile
    from the first publish to the last confirm recorded."""
    config = read_config(path, {})
    now = [slot - timedelta(seconds=0.4)]
    scheduler = Scheduler(config, State(config.state), Link, clock=lambda: now[0])
    scheduler.start()
    await scheduler.link.channel(30)
    scheduler.prepare(now[0])
    now[0] = slot
    profile = cProfile.Profile()
    profile.enable()
    await scheduler.step(slot)
    profile.disable()
    await scheduler.close()
    return pstats.Stats(profile)


def profile(rounds: int, n: int = 10_000) -> None:
    """Where the slot pass's own time goes, by who spends it: beatd's code, pika's, the
    socket writes, the event loop (waiting for confirms included), the rest."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "profile.yaml"
        slot = datetime(2030, 1, 1, tzinfo=UTC)
        write_file(path, "off", at_jobs(n, slot))
        declare()
        stats = asyncio.run(_profiled_pass(path, slot))
    groups: dict[str, float] = {}
    functions: list[tuple[float, str]] = []
    for (filename, line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        tottime = row[2]
        if "/beatd/" in filename:
            group = "beatd"
        elif "/pika/" in filename:
            group = "pika"
        elif "asyncio" in filename or name in ("<method 'poll' of 'select.epoll' objects>",):
            group = "event loop (and waiting for confirms)"
        elif "send" in name:
            group = "socket send()"
        elif "sqlite" in name or "executemany" in name:
            group = "sqlite"
        else:
            group = "other (builtins called by either)"
        groups[group] = groups.get(group, 0.0) + tottime
        where = f"{Path(filename).parent.name}/{Path(filename).name}:{line}({name})"
        functions.append((tottime, where if "/" in filename else name))
    total = sum(groups.values())
    print(f"profile of the {n}-run slot pass (cProfile inflates small calls): {total:.2f} s")
    for group, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {group:<40} {seconds:6.3f} s  {100 * seconds / total:5.1f}%")
    print("  beatd's own functions, tottime:")
    mine = [(t, w) for t, w in functions if w.startswith(("core/", "scheduler/", "runtime/"))]
    for seconds, where in sorted(mine, reverse=True)[:8]:
        print(f"    {seconds:6.3f} s  {where}")


@contextlib.contextmanager
def broker_objects() -> Iterator[None]:
    try:
        yield
    finally:
        cleanup()


if __name__ == "__main__":
    if sys.argv[1:2] == ["_record"]:
        QUEUE_ARG = sys.argv[2]
        record(sys.argv[3])
        sys.exit(0)
    if sys.argv[1:2] == ["_raw"]:
        raw(sys.argv[2], sys.argv[3])
        sys.exit(0)
    commands = {"burst": burst, "features": features, "reload": reload, "profile": profile}
    commands["reload-control"] = functools.partial(reload, control=True)
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "commands",
        nargs="*",
        metavar="COMMAND",
        help=f"one or more of {', '.join(commands)} (default: burst features reload)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    unknown = [name for name in args.commands if name not in commands]
    if unknown:
        parser.error(f"unknown command {unknown[0]!r} (one of {', '.join(commands)})")
    names = args.commands or ["burst", "features", "reload"]
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()}, {json.dumps(names)}")
    with broker_objects():
        for name in names:
            commands[name](args.rounds)
            print(f"  (load average now {os.getloadavg()})")
