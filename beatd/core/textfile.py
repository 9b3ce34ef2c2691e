"""Reading an input file that may be hostile or mistaken: a regular file only (a FIFO would
block the reader forever, /dev/zero would fill memory), at most a stated size, UTF-8 text."""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_CONFIG_BYTES = 16 * 1024 * 1024  # a 100,000-job schedule is about 9 MB
MAX_SECRET_BYTES = 64 * 1024

_KINDS = (
    (stat.S_ISDIR, "is a directory, not a file"),
    (stat.S_ISFIFO, "is a FIFO (named pipe), not a regular file"),
    (stat.S_ISSOCK, "is a socket, not a regular file"),
    (stat.S_ISCHR, "is a character device, not a regular file"),
    (stat.S_ISBLK, "is a block device, not a regular file"),
)


class Unreadable(ValueError):
    """Why a file cannot be read, in words for an operator; line is set for bad UTF-8."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.line = line


def read_text(path: str | Path, limit: int) -> str:
    """The UTF-8 text of the regular file at path, if at most limit bytes; raise Unreadable."""
    try:
        _check(Path(path).stat(), limit)  # before opening: opening a FIFO blocks for a writer
        # O_NONBLOCK: should the path be swapped for a FIFO after the stat, open still returns.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise Unreadable("no such file") from None
    except OSError as exc:
        raise Unreadable(f"cannot read: {exc.strerror}") from None
    try:
        _check(os.fstat(fd), limit)
        data = _read_at_most(fd, limit + 1)
    except OSError as exc:
        raise Unreadable(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # it grew after the stat
        raise Unreadable(_too_big(len(data), limit))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise Unreadable(f"not UTF-8 text (byte {data[exc.start]:#04x})", line) from None


def _check(st: os.stat_result, limit: int) -> None:
    for test, reason in _KINDS:
        if test(st.st_mode):
            raise Unreadable(reason)
    if not stat.S_ISREG(st.st_mode):  # pragma: no cover - Linux has no other kinds
        raise Unreadable("is not a regular file")
    if st.st_size > limit:
        raise Unreadable(_too_big(st.st_size, limit))


def _read_at_most(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left > 0:  # bounded: each read returns at least one byte or ends the loop
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _too_big(size: int, limit: int) -> str:
    shown = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"
    return f"is {size:,} bytes; the limit is {shown}"
