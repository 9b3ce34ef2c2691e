"""Logging for both daemons: lines on stderr, with a syslog priority prefix (`<3>`, as
sd-daemon(3) describes) when stderr is the journal, and a `job=... run_id=...` suffix on lines
about one run, so `journalctl -u beatd -p err` and `journalctl -u beatd --grep job=X` work.

Why a suffix rather than journald fields: native fields need the journal's own socket
(python-systemd, a C extension) and would bypass stderr, which is what every other deployment
(containers, a terminal, a pipe) reads. The suffix is plain text, greppable everywhere."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

# sd-daemon(3): "<3>" err, "<4>" warning, "<5>" notice, "<6>" info, "<7>" debug.
_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
FIELDS = ("job", "run_id")


def priority(levelno: int) -> int:
    """The syslog priority of a logging level."""
    for level, prio in _PRIORITY:
        if levelno >= level:
            return prio
    return 7


def run_fields(job: str, run_id: str | None = None) -> dict[str, str]:
    """`extra=` for a log call about a job (and one of its runs)."""
    return {"job": job} if run_id is None else {"job": job, "run_id": run_id}


def _field(value: str) -> str:
    return value if value and not any(c.isspace() or c in "\"'" for c in value) else repr(value)


class LineFormatter(logging.Formatter):
    """Appends `job=... run_id=...` from a record's extras; with journal=True, prefixes every
    line (a traceback too) with its priority, so journald files each at the right level."""

    def __init__(self, fmt: str, *, journal: bool) -> None:
        super().__init__(fmt)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = [
            f"{name}={_field(str(v))}" for name in FIELDS if (v := getattr(record, name, None))
        ]
        if fields:
            head, sep, tail = text.partition("\n")
            text = f"{head} {' '.join(fields)}{sep}{tail}"
        if self.journal:
            prefix = f"<{priority(record.levelno)}>"
            text = "\n".join(prefix + line for line in text.split("\n"))
        return text


def is_journal(env: Mapping[str, str], stream: TextIO) -> bool:
    """Whether stream is connected to the journal: systemd sets JOURNAL_STREAM to the device
    and inode of the stream it gave us, and a redirect (`2>file` in ExecStart) breaks the match."""
    value = env.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (int(dev), int(ino)) == (st.st_dev, st.st_ino)
    except (ValueError, OSError):
        return False


def setup(env: Mapping[str, str], stream: TextIO | None = None) -> logging.Handler:
    """Log to stream (stderr) at $BEATD_LOG_LEVEL (default INFO); leave the timestamps to the
    journal when it is there. pika's own logger is silenced: beatd.broker says once, with the
    cause, when the broker goes away and when it returns (pika wrote ~8 lines per retry)."""
    stream = stream or sys.stderr
    journal = is_journal(env, stream)
    level = env.get("BEATD_LOG_LEVEL", "INFO").upper()
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not journal:
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter(fmt, journal=journal))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "beatd", False)]:
        root.removeHandler(old)
    handler.beatd = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(getattr(logging, level, logging.INFO))
    pika_log = logging.getLogger("pika")
    pika_log.setLevel(logging.CRITICAL + 1)
    pika_log.propagate = False
    return handler
