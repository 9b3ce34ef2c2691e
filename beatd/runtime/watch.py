"""Noticing edits of the schedule file: Linux inotify on its directory (editors and config
managers replace files by rename, so watching the file itself would miss them), falling back
to a 2-second stat poll where inotify is unavailable."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import struct
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("beatd.watch")

_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_MASK = _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_MOVED_FROM | _IN_CREATE | _IN_DELETE | _IN_ATTRIB
_EVENT = struct.Struct("iIII")
POLL_S = 2.0
MAX_LINKS = 40  # as the kernel: a longer chain of symlinks is a loop


DEBOUNCE_S = 0.2  # editors write a file in several steps: act once it is quiet


class FileWatch:
    """Calls on_change (from the event loop) once the file changed and has been quiet for
    DEBOUNCE_S."""

    def __init__(self, path: str | Path, on_change: Callable[[], None]) -> None:
        self.path = Path(path)
        self.on_change = on_change
        self._fd: int | None = None
        self._poll: asyncio.TimerHandle | None = None
        self._pending: asyncio.TimerHandle | None = None
        self._names: set[str] = set()
        self._watches: dict[Path, int] = {}  # directory: inotify watch descriptor
        self._last = self._signature()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._fd = _inotify_init()
            self._rewatch()
        except OSError as exc:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                self._watches.clear()
            log.info("inotify unavailable (%s); checking %s every %.0fs", exc, self.path, POLL_S)
            self._poll = loop.call_later(POLL_S, self._check)
            return
        loop.add_reader(self._fd, self._read)

    def _rewatch(self) -> None:
        """Watch the directories of every link on the way to the file, as they are now: a
        symlink swapped to a file elsewhere must bring that file's directory in."""
        assert self._fd is not None
        hops = _hops(self.path)
        self._names = {hop.name for hop in hops} | {"..data"}  # Kubernetes ConfigMap volumes
        # Resolved: one directory reached by two spellings is one inotify watch, not two.
        wanted = {hop.parent.resolve() for hop in hops}
        for directory in sorted(wanted - self._watches.keys()):
            self._watches[directory] = _add_watch(self._fd, directory)
        for directory in self._watches.keys() - wanted:
            _remove_watch(self._fd, self._watches.pop(directory))

    def _read(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        offset, touched = 0, False
        while offset + _EVENT.size <= len(data):
            _wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            touched = touched or os.fsdecode(name) in self._names
        if touched:
            self._changed()

    def _check(self) -> None:
        if self._pending is None and self._signature() != self._last:
            self._changed()
        self._poll = asyncio.get_running_loop().call_later(POLL_S, self._check)

    def _changed(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        self._pending = asyncio.get_running_loop().call_later(DEBOUNCE_S, self._settled)

    def _settled(self) -> None:
        self._pending = None
        if self._fd is not None:
            try:
                self._rewatch()
            except OSError as exc:  # a directory on the way is gone: the next change retries
                log.warning("cannot watch for edits of %s: %s", self.path, exc)
        signature = self._signature()
        if signature != self._last:
            self._last = signature
            self.on_change()

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def stop(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
            self._watches.clear()
        for handle in (self._poll, self._pending):
            if handle is not None:
                handle.cancel()
        self._poll = self._pending = None


def _hops(path: Path) -> list[Path]:
    """The path, each symlink it goes through, and the file it ends at."""
    hops = [path.absolute()]
    for _ in range(MAX_LINKS):
        if not hops[-1].is_symlink():
            break
        hops.append((hops[-1].parent / hops[-1].readlink()).absolute())
    return [*hops, path.resolve()]  # resolve() also follows links among the directories


_LIBC = ctypes.CDLL(None, use_errno=True)


def _inotify_init() -> int:
    fd = _LIBC.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1 failed")
    return int(fd)


def _add_watch(fd: int, directory: Path) -> int:
    wd = _LIBC.inotify_add_watch(fd, os.fsencode(directory), _MASK)
    if wd < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot watch {directory}: {os.strerror(errno)}")
    return int(wd)


def _remove_watch(fd: int, wd: int) -> None:
    _LIBC.inotify_rm_watch(fd, wd)  # fails only if the directory went away: nothing to undo
