"""sd_notify over a real datagram socket, as systemd provides it in $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from beatd.runtime.systemd import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def test_ready_and_status_arrive_as_one_datagram(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    Notifier({"NOTIFY_SOCKET": path}).send(READY=1, STATUS="3 jobs; broker up")
    assert sock.recv(4096) == b"READY=1\nSTATUS=3 jobs; broker up"


def test_an_abstract_socket_address_works() -> None:
    name = f"beatd-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        Notifier({"NOTIFY_SOCKET": "@" + name}).send(WATCHDOG=1)
        assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_reloading_carries_the_monotonic_timestamp(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    Notifier({"NOTIFY_SOCKET": path}).reloading()
    lines = sock.recv(4096).decode().split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=") and lines[1].split("=")[1].isdigit()


def test_without_systemd_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_s is None
    notifier.send(READY=1)


def test_a_vanished_socket_does_not_stop_the_daemon(tmp_path: Path) -> None:
    Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).send(READY=1)


def test_the_watchdog_interval_is_read_for_this_process_only() -> None:
    mine = Notifier({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_s == 20.0
    other = Notifier({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_s is None


def test_a_reader_that_stopped_reading_never_blocks_the_sender(
    notify_socket: tuple[socket.socket, str],
) -> None:
    _sock, path = notify_socket  # bound, never read: its queue fills after a few datagrams
    notifier = Notifier({"NOTIFY_SOCKET": path})
    for _ in range(200):
        notifier.send(STATUS="x" * 1000)  # would hang here if the send blocked
