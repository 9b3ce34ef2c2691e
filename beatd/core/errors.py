"""The exception tree: every error beatd raises on purpose is a BeatdError."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

MAX_MESSAGE_CHARS = 500
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: one problem is one line
# on a terminal and in the journal, whatever a hostile file puts in a name or value.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """text with control characters escaped, cut to limit characters."""
    shown = CONTROL_CHARACTERS.sub(lambda m: repr(m.group())[1:-1], text[: limit + 1])
    return shown if len(shown) <= limit else f"{shown[: limit - 1]}…"


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
        return one_line(f"{where}: {self.message}")


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
