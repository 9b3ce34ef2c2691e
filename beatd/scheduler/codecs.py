"""One codec per message format: how a job's runs are drafted, where they go, and what must
exist on the broker before they are published. Pure; the scheduler does the declaring."""

from __future__ import annotations

import functools
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from beatd.compat import celery_codec
from beatd.core.config import BrokerConfig, Config, Job, MessageFormat
from beatd.core.errors import Problem
from beatd.core.messages import BeatdTemplate, Draft, Outgoing, Run
from beatd.core.signing import Key, Signing, sign


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
        return self._template(run.job).draft(run)

    def signed_draft(self, run: Run, key: Key, signed_at: datetime) -> Draft:
        return self._template(run.job).signed_draft(run, key, signed_at)

    def _template(self, job: Job) -> BeatdTemplate:
        template = self._templates.get(job.name)
        if template is None or template.job is not job:
            template = self._templates[job.name] = BeatdTemplate(job, self.default_exchange)
        return template

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
    """The codec for each job of one configuration, and the signing of every draft."""

    def __init__(self, broker: BrokerConfig, signing: Signing | None = None) -> None:
        self.broker = broker
        self.signing = signing
        self._by_format: dict[MessageFormat, Codec] = {
            MessageFormat.BEATD: BeatdCodec(broker.exchange),
            MessageFormat.CELERY: CeleryCodec(),
        }

    def __getitem__(self, job: Job) -> Codec:
        return self._by_format[job.format]

    def draft(self, run: Run, signed_at: datetime | None = None) -> Draft:
        """run's message in its job's format, signed if the file has a signing key: as of
        signed_at if given (a burst drafted before its slot is signed as of the slot, and
        only the publish time is left to sign at the slot), else as of its publish time."""
        codec = self._by_format[run.job.format]
        if self.signing is None:
            return codec.draft(run)
        if signed_at is not None and isinstance(codec, BeatdCodec):
            return codec.signed_draft(run, self.signing.key, signed_at)
        return functools.partial(_signed, codec.draft(run), self.signing.key)

    def exchanges(self, jobs: tuple[Job, ...]) -> set[str]:
        """Every exchange of beatd's that these jobs publish to (the default always)."""
        found = {self.broker.exchange}
        for job in jobs:
            name = self[job].exchange(job)
            if name:
                found.add(name)
        return found


def _signed(draft: Draft, key: Key, published_at: datetime) -> Outgoing:
    """The message, with headers that sign it as of its publish time (a new dict: a job's
    drafts share their headers)."""
    message = draft(published_at)
    props = message.properties
    signature = sign(
        key,
        message_id=props.message_id,
        routing_key=message.routing_key,
        body=message.body,
        signed_at=published_at,
    )
    properties = replace(props, headers={**props.headers, **signature})
    return replace(message, properties=properties)


def check(config: Config, path: str) -> list[Problem]:
    """What a scheduler could not publish for the jobs of config, one problem per job."""
    codecs = Codecs(config.broker, config.signing)
    return [Problem(path, None, p) for job in config.jobs for p in codecs[job].problems(job)]
