"""systemd's notify protocol (sd_notify(3)) over $NOTIFY_SOCKET: READY, STATUS, WATCHDOG,
RELOADING, STOPPING. A no-op when not started by systemd. Twenty lines do not earn a dependency.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


class Notifier:
    """Sends notify datagrams; silent when there is no socket (not under systemd)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # Linux abstract namespace
            address = "\0" + address[1:]
        self._address = address
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        wanted = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_s = int(watchdog_usec) / 1e6 if watchdog_usec.isdigit() and wanted else None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, **fields: object) -> None:
        """notify(READY=1, STATUS="...") -> "READY=1\\nSTATUS=..."; errors are ignored, as
        sd_notify's are: a lost status line must never stop the scheduler."""
        if not self._address:
            return
        payload = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        flags = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        try:  # a socket per message, as libsystemd's sd_notify does: nothing to keep open
            with socket.socket(socket.AF_UNIX, flags) as sock:
                # Non-blocking: a reader that stopped reading (its queue holds only ~10
                # datagrams) must cost a status line, never a stuck scheduler.
                sock.sendto(payload, self._address)
        except OSError:
            pass

    def reloading(self) -> None:
        # Type=notify-reload wants MONOTONIC_USEC with RELOADING=1 (systemd 253+); older
        # systemd ignores the extra field.
        self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
