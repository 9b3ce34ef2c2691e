"""One codec per message format: how a job's runs are drafted, where they go, and what must
exist on the broker before they are published. Pure; the scheduler does the declaring."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Protocol

from beatd.compat import celery_codec
from beatd.core.config import BrokerConfig, Config, Job, MessageFormat
from beatd.core.errors import Problem
from beatd.core.messages import BeatdTemplate, Draft, Outgoing, Run


class Codec(Protocol):
    def draft(self, run: Run) -> Draft:
        """run's message, waiting only for its publish time."""
        ...

    def exchange(self, job: Job) -> str | None:
        """An exchange of beatd's to declare (with broker.exchange_type) before publishing."""
        ...

    def queue(self, job: Job) -> str | None:
        """A queue to make sure of before publishing."""
        ...

    def problems(self, job: Job) -> list[str]:
        """Why this job's messages could not be published; checked once, at load."""
        ...


class BeatdCodec:
    """The beatd format; each job's template is kept between runs (a burst then costs string
    formatting, not json.dumps)."""

    def __init__(self, default_exchange: str) -> None:
        self.default_exchange = default_exchange
        self._templates: dict[str, BeatdTemplate] = {}

    def draft(self, run: Run) -> Draft:
        job = run.job
        template = self._templates.get(job.name)
        if template is None or template.job is not job:
            template = self._templates[job.name] = BeatdTemplate(job, self.default_exchange)
        return template.draft(run)

    def exchange(self, job: Job) -> str | None:
        return job.exchange or self.default_exchange

    def queue(self, job: Job) -> str | None:
        return None

    def problems(self, job: Job) -> list[str]:
        return []


class CeleryCodec:
    """Celery's protocol 2 on Celery's own routes: the exchange is Celery's, not beatd's."""

    def draft(self, run: Run) -> Draft:
        return functools.partial(_celery_at, run)

    def exchange(self, job: Job) -> str | None:
        return None

    def queue(self, job: Job) -> str | None:
        return celery_codec.route(job)[2]

    def problems(self, job: Job) -> list[str]:
        return celery_codec.job_problems(job)


def _celery_at(run: Run, published_at: datetime) -> Outgoing:
    return celery_codec.celery_message(run, published_at, "")


class Codecs:
    """The codec for each job of one broker configuration."""

    def __init__(self, broker: BrokerConfig) -> None:
        self.broker = broker
        self._by_format: dict[MessageFormat, Codec] = {
            MessageFormat.BEATD: BeatdCodec(broker.exchange),
            MessageFormat.CELERY: CeleryCodec(),
        }

    def __getitem__(self, job: Job) -> Codec:
        return self._by_format[job.format]

    def exchanges(self, jobs: tuple[Job, ...]) -> set[str]:
        """Every exchange of beatd's that these jobs publish to (the default always)."""
        found = {self.broker.exchange}
        for job in jobs:
            name = self[job].exchange(job)
            if name:
                found.add(name)
        return found


def check(config: Config, path: str) -> list[Problem]:
    """What a scheduler could not publish for the jobs of config, one problem per job."""
    codecs = Codecs(config.broker)
    return [Problem(path, None, p) for job in config.jobs for p in codecs[job].problems(job)]
