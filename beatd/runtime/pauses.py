"""Files beside the scheduler's state file that the CLI reads without the daemon: where the
state is under the shipped systemd unit, the control socket's path, and the paused jobs
(`paused.json`, kept so a pause survives restarts and can be set while the daemon is stopped).
No asyncio and no pika here: `beatd list` imports this and should not pay for them."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from beatd.core.errors import BeatdError

log = logging.getLogger("beatd.scheduler")

# systemd's StateDirectory=beatd: where `beatd run` keeps its state under the shipped unit,
# looked at when the operator's shell has no STATE_DIRECTORY.
SYSTEMD_STATE = Path("/var/lib/beatd/state.db")


def socket_path(state: Path) -> Path:
    return state.with_name("beatd.sock")


def pauses_path(state: Path) -> Path:
    return state.with_name("paused.json")


def read_pauses(state: Path) -> dict[str, str]:
    """Paused job names and their notes; {} if none (or the file is unreadable: logged)."""
    path = pauses_path(state)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.error("%s: cannot read the paused jobs (%s); none are paused", path, exc)
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(name): str(note) for name, note in data.items()}


def write_pauses(state: Path, pauses: Mapping[str, str]) -> None:
    """Write the paused jobs atomically (a rename), so a crash leaves the old or new file."""
    path = pauses_path(state)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(dict(sorted(pauses.items())), indent=1) + "\n")
        temporary.replace(path)
    except OSError as exc:
        raise BeatdError(f"{path}: cannot record the paused jobs: {exc.strerror or exc}") from exc
