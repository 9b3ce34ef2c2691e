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
    """The collector off inside, back as it was after (also on an exception).

    What was built inside lives on (a config's jobs), so unless the body raised it is then
    frozen (gc.freeze): the collector's later passes skip it instead of walking a million
    objects on the event loop. Frozen before the collector is back on, since everything
    built meanwhile counts as young: the first allocation after would walk all of it (0.1 s
    at 100k jobs). What a reload replaced is freed by reference counting as before; only
    garbage in cycles at that moment stays, bounded by what one reload leaves."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if was_enabled:
            gc.enable()
