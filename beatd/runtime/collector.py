"""Pausing Python's cyclic garbage collector while a big, long-lived structure is built.

A 100,000-job file becomes millions of objects that all live on; the collector would walk
them again and again while they are made (about a third of the load time). Pause it only
where no other thread runs: a daemon's start-up and the one-shot commands (`check`, `list`).
A reload runs beside the daemon's other threads and leaves the collector alone.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The collector off inside, back as it was after (also on an exception)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def settle() -> None:
    """After start-up or a reload: what exists now lives on (the jobs), so the collector's
    later full passes skip it instead of walking a million objects on the event loop
    (gc.freeze). What a reload replaced is freed by reference counting as before; only
    garbage in cycles at that moment stays, bounded by what one reload leaves."""
    gc.freeze()
