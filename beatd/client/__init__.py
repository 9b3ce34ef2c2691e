"""beatd's Python API for applications: publish a run of a job in the schedule file
(`trigger`, exactly like `beatd trigger`) or of a bare task for `beatd worker` (`publish`).

    from beatd import client
    run_id = client.trigger("nightly-report")                  # config: $BEATD_CONFIG
    run_id = client.publish("reports.render", [42], {"pdf": True}, config="/etc/beatd/app.yaml")

The module-level functions share one Client per configuration and process (a forked child
gets its own); `Client` and `AsyncClient` are there for explicit control.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from beatd.client.aio import AsyncClient
from beatd.client.runs import Expires
from beatd.client.sync import Client
from beatd.core.config import Config
from beatd.core.errors import BeatdError, BrokerError

__all__ = [
    "AsyncClient",
    "BeatdError",
    "BrokerError",
    "Client",
    "close",
    "default_client",
    "publish",
    "trigger",
]

# An application talks to one or two brokers: more configurations than this is a leak (a
# Config built per request), and each would hold a connection.
MAX_DEFAULT_CLIENTS = 8

_defaults: dict[tuple[str, Any], Client] = {}
_defaults_lock = threading.Lock()


def default_client(config: str | Path | Config | None = None) -> Client:
    """This process's shared Client for config (None: $BEATD_CONFIG, else /etc/beatd)."""
    key = _key(config)
    with _defaults_lock:
        client = _defaults.get(key)
        if client is None:
            if len(_defaults) >= MAX_DEFAULT_CLIENTS:
                raise BeatdError(
                    f"more than {MAX_DEFAULT_CLIENTS} configurations used through "
                    "beatd.client.trigger/publish; make a beatd.client.Client per broker instead"
                )
            client = _defaults[key] = Client(config)
        return client


def _key(config: str | Path | Config | None) -> tuple[str, Any]:
    if isinstance(config, Config):
        return ("config", id(config))  # the Client keeps it alive, so the id stays its own
    if config is None:
        return ("env", os.environ.get("BEATD_CONFIG"))
    return ("path", str(config))


def trigger(job: str, *, config: str | Path | Config | None = None) -> str:
    """Publish one run of job now, as `beatd trigger` does; return the run id."""
    return default_client(config).trigger(job)


def publish(
    task: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    routing_key: str | None = None,
    expires: Expires = None,
    job: str | None = None,
    config: str | Path | Config | None = None,
) -> str:
    """Publish a beatd-format run of task for `beatd worker`; return the run id."""
    return default_client(config).publish(
        task, args, kwargs, routing_key=routing_key, expires=expires, job=job
    )


@atexit.register
def close() -> None:
    """Close every shared client (also done at exit, so the broker sees a clean goodbye)."""
    with _defaults_lock:
        clients = list(_defaults.values())
        _defaults.clear()
    for client in clients:
        client.close()


def _after_fork() -> None:
    global _defaults_lock  # noqa: PLW0603  (a lock held at the fork would never be released)
    _defaults_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
