"""The Prometheus endpoints, scraped over HTTP and read with prometheus-client's own parser:
the scheduler daemon over the in-memory broker with a fake clock, the worker over the same."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from beatd.core.config import parse_config
from beatd.core.errors import ConfigError
from beatd.runtime.metrics import SchedulerMetrics, WorkerMetrics
from beatd.runtime.systemd import Notifier
from beatd.scheduler.daemon import SchedulerDaemon
from beatd.worker.daemon import observed
from tests.clock import FakeClock, utc
from tests.fakebroker import FakeBroker, Queue
from tests.rabbit import async_wait_until
from tests.steps import Beat, driven, schedule
from tests.worker_steps import Pool, message

T0 = utc(2026, 11, 21, 5, 30)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_scheduler_serves_runs_lateness_and_broker_state(tmp_path: Path) -> None:
    path = tmp_path / "beatd.yaml"
    path.write_text(
        f"broker:\n  exchange: beatd\nstate: {tmp_path / 'state.db'}\n"
        "metrics:\n  listen: 127.0.0.1:0\njobs:\n"
        "  routed:\n    every: 1m\n    task: t.routed\n"
        "  lonely:\n    every: 1m\n    task: t.lonely\n"
        "  paused:\n    every: 1m\n    task: t.off\n    enabled: false\n"
    )
    broker = FakeBroker()
    broker.exchanges["beatd"] = "topic"
    broker.queues["q"] = Queue("q", {})
    broker.bindings.add(("beatd", "q", "t.routed"))
    clock = FakeClock(T0 - timedelta(seconds=1))
    daemon = SchedulerDaemon(
        str(path), {}, connect=broker.connect, clock=clock, notifier=Notifier({}), watch_file=False
    )
    got: list[Samples] = []

    async def body() -> None:
        task = asyncio.create_task(daemon.run())
        await async_wait_until(lambda: daemon.metrics is not None and daemon.metrics.port != 0)
        assert daemon.metrics is not None
        for i in (1, 2):  # 05:30 and 05:31, each 0.5 s late
            clock.advance(seconds=1.5 if i == 1 else 60)
            daemon.wake()
            await async_wait_until(
                lambda i=i: (
                    len(broker.queues["q"].ready) == i
                    and daemon.scheduler is not None
                    and daemon.scheduler.counters.unroutable == i
                )
            )
        got.append(await asyncio.to_thread(scrape, daemon.metrics.port))
        daemon.request_stop()
        assert await task == 0

    asyncio.run(body())
    samples = got[0]
    assert samples[("beatd_runs_published_total", (("job", "routed"),))] == 2
    assert samples[("beatd_runs_unroutable_total", (("job", "lonely"),))] == 2
    assert ("beatd_runs_published_total", (("job", "lonely"),)) not in samples
    assert samples[("beatd_publish_lateness_seconds_count", ())] == 2
    assert samples[("beatd_publish_lateness_seconds_bucket", (("le", "0.25"),))] == 0
    assert samples[("beatd_publish_lateness_seconds_bucket", (("le", "0.5"),))] == 2
    assert samples[("beatd_publish_confirm_seconds_count", ())] == 2
    assert samples[("beatd_broker_connected", ())] == 1
    assert samples[("beatd_jobs_scheduled", ())] == 2, "enabled jobs only"
    slot = (T0 + timedelta(minutes=1)).timestamp()
    assert samples[("beatd_job_last_published_timestamp_seconds", (("job", "routed"),))] == slot


def test_missed_slots_are_counted_per_job() -> None:
    async def body() -> Samples:
        config = schedule("  j:\n    every: 1m\n    task: t.j\n    misfire: skip\n")
        beat = Beat(config, T0 - timedelta(seconds=1))
        beat.broker.queues["q"] = Queue("q", {})
        beat.broker.bindings.add(("beatd", "q", "#"))
        scheduler = await beat.start()
        await beat.step(T0)
        await beat.crash()
        beat.clock.now = T0 + timedelta(minutes=5, seconds=30)
        scheduler = await beat.start()
        metrics = SchedulerMetrics(beat.clock)
        scheduler.report.sinks.append(metrics)
        metrics.serve(("127.0.0.1", 0))
        try:
            await beat.step()
            return await asyncio.to_thread(scrape, metrics.port)
        finally:
            metrics.close()

    samples = asyncio.run(body())
    # 05:31-05:34 missed; 05:35 is 30 s late, within the 60 s grace, so on time
    assert samples[("beatd_runs_missed_total", (("job", "j"),))] == 4
    assert samples[("beatd_runs_published_total", (("job", "j"),))] == 1


@driven
async def test_the_worker_serves_outcomes_durations_and_runs_in_flight(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    pool = Pool(tmp_path, {"t.rec": {"call": "tests.worker_tasks:record"}}, now=T0)
    worker = await pool.start()
    metrics = observed(worker, WorkerMetrics())
    metrics.serve(("127.0.0.1", 0))
    try:
        pool.publish(message("t.rec", "a@1", args=[str(out), 1]))
        pool.publish(message("t.nope", "b@1"))
        await pool.settle()
        pool.publish(message("t.rec", "a@1", args=[str(out), 1]))  # a second copy
        await pool.settle()
        samples = await asyncio.to_thread(scrape, metrics.port)
    finally:
        metrics.close()
        await pool.stop()
    assert [json.loads(line)["args"] for line in out.read_text().splitlines()] == [[1]]
    runs = {k[1][0][1]: v for k, v in samples.items() if k[0] == "beatd_worker_runs_total"}
    assert runs == {"succeeded": 1, "unknown_task": 1, "duplicate": 1}
    done = (("result", "succeeded"), ("task", "t.rec"))
    assert samples[("beatd_worker_run_duration_seconds_count", done)] == 1
    assert samples[("beatd_worker_runs_in_flight", ())] == 0
    assert samples[("beatd_broker_connected", ())] == 1
    assert ("beatd_worker_last_success_timestamp_seconds", (("task", "t.rec"),)) in samples


def test_metrics_are_off_by_default_and_a_bad_address_is_a_config_error() -> None:
    assert parse_config("jobs: {}\n", "b.yaml", {}).metrics is None
    assert parse_config("metrics: {}\njobs: {}\n", "b.yaml", {}).metrics == ("127.0.0.1", 9464)
    assert parse_config("metrics:\n  listen: '[::1]:9100'\n", "b.yaml", {}).metrics == (
        "::1",
        9100,
    )
    with pytest.raises(ConfigError) as caught:
        parse_config("metrics:\n  listen: 127.0.0.1:99999\n", "b.yaml", {})
    assert [str(p) for p in caught.value.problems] == [
        "b.yaml:2: metrics: listen: '127.0.0.1:99999': the port must be a number from 0 to 65535"
    ]


def test_a_port_in_use_stops_the_scheduler_at_start_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    taken = WorkerMetrics()
    taken.serve(("127.0.0.1", 0))
    path = tmp_path / "beatd.yaml"
    path.write_text(
        f"state: {tmp_path / 'state.db'}\nmetrics:\n  listen: 127.0.0.1:{taken.port}\n"
        "jobs:\n  j:\n    every: 1m\n    task: t.j\n"
    )
    daemon = SchedulerDaemon(
        str(path), {}, connect=FakeBroker().connect, notifier=Notifier({}), watch_file=False
    )
    try:
        assert asyncio.run(daemon.run()) == 78
    finally:
        taken.close()
    assert f"cannot start: metrics: cannot listen on 127.0.0.1:{taken.port}: " in caplog.text
