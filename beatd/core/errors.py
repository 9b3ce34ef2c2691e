"""The exception tree: every error beatd raises on purpose is a BeatdError."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class BeatdError(Exception):
    """Base of every error beatd reports to a user."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input file, with where it is."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


class ConfigError(BeatdError):
    """An input file is missing, unreadable or invalid; carries every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class CronError(BeatdError):
    """A cron expression cannot be parsed; the message names the field."""


class StateError(BeatdError):
    """The state database is corrupt, unwritable or from an unknown version."""


class BrokerError(BeatdError):
    """RabbitMQ could not be reached or refused an operation."""
