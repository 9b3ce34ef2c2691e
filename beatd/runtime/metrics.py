"""The Prometheus endpoint of both daemons (prometheus-client), off unless the file has a
`metrics:` section. Each daemon has its own registry, served over HTTP from a daemon thread;
the values are updated from the event loop (counters) or read at scrape time (gauges)."""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from beatd.core.errors import BeatdError
from beatd.core.plan import JobPlan
from beatd.core.ports import Clock, Outcome
from beatd.core.settle import handled

log = logging.getLogger("beatd.metrics")

# Seconds. Lateness: a burst of 10,000 takes about a second; a missed slot minutes or hours.
LATENESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
CONFIRM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)


class Endpoint:
    """A registry and the HTTP server that exposes it at /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._server: Any = None
        self.port = 0

    def serve(self, address: tuple[str, int]) -> None:
        """Start serving; BeatdError if the address cannot be bound."""
        host, port = address
        try:
            self._server, _thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise BeatdError(f"metrics: cannot listen on {host}:{port}: {exc.strerror}") from None
        self.port = self._server.server_address[1]
        log.info("metrics at http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class SchedulerMetrics(Endpoint):
    """A scheduler's metrics; a Report sink (told each step's plans and outcomes)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        r = self.registry
        self.published = Counter(
            "beatd_runs_published", "Runs the broker confirmed and routed", ["job"], registry=r
        )
        self.unroutable = Counter(
            "beatd_runs_unroutable",
            "Runs the broker returned: no queue bound for their routing key",
            ["job"],
            registry=r,
        )
        self.missed = Counter(
            "beatd_runs_missed",
            "Slots not published (misfire policy, expired)",
            ["job"],
            registry=r,
        )
        self.last_published = Gauge(
            "beatd_job_last_published_timestamp_seconds",
            "Slot time of the job's newest published run",
            ["job"],
            registry=r,
        )
        self.lateness = Histogram(
            "beatd_publish_lateness_seconds",
            "From a run's slot to the step that published it",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.confirm = Histogram(
            "beatd_publish_confirm_seconds",
            "From the start of a step to the broker's last confirm of its runs",
            buckets=CONFIRM_BUCKETS,
            registry=r,
        )
        self.connected = Gauge(
            "beatd_broker_connected", "1 while the broker connection is up", registry=r
        )
        self.jobs = Gauge("beatd_jobs_scheduled", "Enabled jobs in the schedule", registry=r)

    def watch(self, connected: Callable[[], bool], jobs: Callable[[], int]) -> None:
        """Read the broker state and job count at each scrape."""
        self.connected.set_function(lambda: 1.0 if connected() else 0.0)
        self.jobs.set_function(lambda: float(jobs()))

    def step(
        self, plans: Sequence[JobPlan], outcomes: Sequence[Outcome | None], now: datetime
    ) -> None:
        position = 0
        for job_plan in plans:
            name, count = job_plan.job.name, len(job_plan.runs)
            results = outcomes[position : position + count]
            position += count
            missed = job_plan.dropped.count if job_plan.dropped is not None else 0
            for run, result in zip(job_plan.runs, results[: handled(results)], strict=False):
                if result is Outcome.CONFIRMED:
                    self.published.labels(name).inc()
                    self.lateness.observe(max(0.0, (now - run.slot).total_seconds()))
                    self.last_published.labels(name).set(run.slot.timestamp())
                elif result is Outcome.UNROUTABLE:
                    self.unroutable.labels(name).inc()
                elif result is None:
                    missed += 1  # expired before it could be published
            if missed:
                self.missed.labels(name).inc(missed)
        if outcomes:
            self.confirm.observe(max(0.0, (self.clock() - now).total_seconds()))


class WorkerMetrics(Endpoint):
    """A worker's metrics: runs by outcome, their durations, the runs in flight."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.runs = Counter(
            "beatd_worker_runs",
            "Deliveries by outcome (succeeded, failed, timed_out, retried, duplicate, ...)",
            ["outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "beatd_worker_run_duration_seconds",
            "How long a run took, by task and result",
            ["task", "result"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.last_success = Gauge(
            "beatd_worker_last_success_timestamp_seconds",
            "When a run of the task last succeeded",
            ["task"],
            registry=r,
        )
        self.in_flight = Gauge("beatd_worker_runs_in_flight", "Runs executing now", registry=r)
        self.connected = Gauge(
            "beatd_broker_connected", "1 while the broker connection is up", registry=r
        )

    def watch(self, connected: Callable[[], bool], in_flight: Callable[[], int]) -> None:
        self.connected.set_function(lambda: 1.0 if connected() else 0.0)
        self.in_flight.set_function(lambda: float(in_flight()))

    def finished(self, task: str, result: str, took_s: float, at: datetime) -> None:
        """A run finished (succeeded, failed, timed_out, refused) after took_s seconds."""
        self.duration.labels(task, result).observe(took_s)
        if result == "succeeded":
            self.last_success.labels(task).set(at.timestamp())

    def tally(self) -> Tally[str]:
        """A collections.Counter for the worker's `counts` that also counts into runs."""
        return _CountingTally(self.runs)


class _CountingTally(Tally[str]):
    """The worker's `counts[outcome] += 1`, passed on to the runs counter."""

    def __init__(self, runs: Counter) -> None:
        super().__init__()
        self._runs = runs

    def __setitem__(self, key: str, value: int) -> None:
        delta = value - self.get(key, 0)
        super().__setitem__(key, value)
        if delta > 0:
            self._runs.labels(key).inc(delta)
