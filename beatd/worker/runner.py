"""How one task runs: a `command` as an argv in its own session (so a timeout can kill the
whole process group), or a `call` as a Python function in a thread.

`prepare` resolves a file's tasks up front (imports callables, looks up users, finds
executables) so a typo is a startup error, not a failure at 02:30 in the night.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import logging
import os
import pwd
import queue
import shutil
import signal
import threading
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from beatd.core import commands
from beatd.core.config import TaskConfig
from beatd.core.errors import ConfigError, Problem
from beatd.core.messages import iso_utc

log = logging.getLogger("beatd.run")

# After SIGTERM to a timed-out command's process group, this long before SIGKILL.
KILL_GRACE_S = 5.0
# After the main process exits, this long for its output pipes to close; if they stay open,
# something it started is still running in its process group, and is stopped like a timeout.
LEFTOVER_WAIT_S = 1.0
TAIL_LINES = 20
MAX_LINE = 4000
# Like cron, a command gets a small environment, not the worker's (which may hold the
# broker's password in BEATD_BROKER_URL).
_PASSED_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "HOME", "USER", "LOGNAME")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux: no parent-death signal
    _LIBC = None


@dataclass(frozen=True, slots=True)
class Account:
    """The user a command runs as, resolved at startup."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


@dataclass(frozen=True, slots=True)
class Task:
    """A task ready to run: its config, and the callable or account it resolved to."""

    config: TaskConfig
    function: Callable[..., Any] | None = None
    account: Account | None = None  # None: as the worker's own user

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True, slots=True)
class Invocation:
    """One run of a task, as the runner needs it."""

    run_id: str
    job: str
    task: str
    attempt: int
    scheduled_at: datetime
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    body: bytes  # the whole message, given to a command on stdin


class Status(Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    # Not started: the message's args are not what the task allows. verdicts.judge refuses
    # these before a run starts; this is the runner's own guard behind it.
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Result:
    status: Status
    exit_code: int | None = None
    detail: str = ""
    output: str = ""  # the tail: last lines of stdout/stderr, or the result or traceback
    # A callable that overran its timeout cannot be stopped (Python threads cannot be
    # killed); this resolves when its thread finally returns. Its slot stays taken until then.
    lingering: asyncio.Future[None] | None = None


def prepare(
    tasks: Mapping[str, TaskConfig], file: str, env: Mapping[str, str], euid: int
) -> dict[str, Task]:
    """Resolve every task; raise ConfigError naming each one that cannot run."""
    problems: list[Problem] = []
    prepared = {}
    for name, config in tasks.items():
        where = f"task {name!r}: "
        try:
            if config.call is not None:
                prepared[name] = Task(config, function=_resolve_callable(config.call))
            else:
                account = _account(config.user, euid) if config.user is not None else None
                _check_command(config, env)
                prepared[name] = Task(config, account=account)
        except ValueError as exc:
            problems.append(Problem(file, config.line or None, f"{where}{exc}"))
    if problems:
        raise ConfigError(problems)
    return prepared


def _resolve_callable(ref: str) -> Callable[..., Any]:
    module_name, _, attribute = ref.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # an import runs arbitrary code: any error is the module's
        raise ValueError(
            f"call: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"call: {module_name!r} has no {attribute!r}") from None
    if not callable(target):
        raise ValueError(f"call: {ref} is a {type(target).__name__}, not callable")
    return target  # type: ignore[no-any-return]


def _account(user: str, euid: int) -> Account | None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"user: no such user {user!r}") from None
    if entry.pw_uid == euid:
        return None  # already that user: nothing to switch
    if euid != 0:
        raise ValueError(
            f"user: switching to {user!r} needs the worker to run as root (it runs as uid {euid})"
        )
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


def _check_command(config: TaskConfig, env: Mapping[str, str]) -> None:
    assert config.command is not None
    program = config.command[0]
    if config.cwd is not None and not Path(config.cwd).is_dir():
        raise ValueError(f"cwd: {config.cwd!r} is not a directory")
    if "/" in program:
        path = Path(config.cwd or ".") / program
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ValueError(f"command: {program!r} is not an executable file")
        return
    search = config.env.get("PATH") or env.get("PATH") or DEFAULT_PATH
    if shutil.which(program, path=search) is None:
        raise ValueError(f"command: {program!r} not found on PATH ({search})")


async def run(
    task: Task, invocation: Invocation, env: Mapping[str, str], threads: Threads | None = None
) -> Result:
    """Run one task to its end (or its timeout); never raises for the task's own failures."""
    timeout_s = task.config.timeout.total_seconds() if task.config.timeout else None
    if task.function is not None:
        return await _run_call(task.function, invocation, timeout_s, threads or Threads(1))
    return await _run_command(task, invocation, env, timeout_s)


class Threads:
    """Daemon threads for `call:` tasks, started as needed up to `size`.

    Not concurrent.futures: it joins its threads at exit, so one call stuck past its timeout
    would keep the worker from ever exiting. With `size` = the worker's concurrency there is
    always a thread for a free slot: a stuck call keeps its slot as well as its thread.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._threads = 0
        self._busy = 0  # jobs submitted and not yet finished
        self._lock = threading.Lock()

    @property
    def busy(self) -> int:
        """Jobs submitted and not yet finished."""
        return self._busy

    def submit(self, job: Callable[[], None]) -> None:
        """Run job (which must not raise) in one of the threads."""
        with self._lock:
            self._busy += 1
            start = self._busy > self._threads and self._threads < self.size
            if start:
                self._threads += 1
        if start:
            name = f"beatd-call-{self._threads}"
            threading.Thread(target=self._serve, name=name, daemon=True).start()
        self._jobs.put(job)

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            finally:
                with self._lock:
                    self._busy -= 1


# Callables


async def _run_call(
    function: Callable[..., Any], invocation: Invocation, timeout_s: float | None, threads: Threads
) -> Result:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[bool, Any]] = loop.create_future()

    def target() -> None:
        try:
            outcome = (True, function(*invocation.args, **invocation.kwargs))
        except BaseException as exc:  # even SystemExit: the task failed, the worker goes on
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop has closed: the worker is exiting
            loop.call_soon_threadsafe(_resolve, done, outcome)

    threads.submit(target)
    try:
        ok, value = await asyncio.wait_for(asyncio.shield(done), timeout_s)
    except TimeoutError:
        log.warning(
            "run %s: %s still running after its %gs timeout; a thread cannot be stopped, so "
            "its slot stays taken until it returns",
            invocation.run_id,
            invocation.task,
            timeout_s,
        )
        lingering: asyncio.Future[None] = loop.create_future()
        done.add_done_callback(lambda _f: _resolve(lingering, None))
        return Result(
            Status.TIMED_OUT, detail=f"timed out after {timeout_s:g}s", lingering=lingering
        )
    if not ok:
        tail = "".join(traceback.format_exception(value)[-TAIL_LINES:])[-MAX_LINE:]
        for line in tail.rstrip().splitlines():
            log.info("run %s: %s", invocation.run_id, line)
        return Result(Status.FAILED, detail=f"{type(value).__name__}: {value}"[:500], output=tail)
    # The worker logs it on its `succeeded` line: one line a run, not two.
    shown = "" if value is None else repr(value)
    if len(shown) > MAX_LINE:
        shown = shown[:MAX_LINE] + "..."
    return Result(Status.SUCCEEDED, output=shown)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


# Commands


def argv_of(task: TaskConfig, args: Sequence[Any]) -> list[str]:
    """The command's argv for a message's args; ArgsRefused unless its `args:` allows them."""
    assert task.command is not None
    return commands.command_argv(task.command, task.args, args)


def environment(task: Task, invocation: Invocation, base: Mapping[str, str]) -> dict[str, str]:
    """The command's environment: a few of the worker's variables, the task's `env`, and the
    run's BEATD_* variables."""
    env = {k: v for k, v in base.items() if k in _PASSED_ENV or k.startswith("LC_")}
    env.setdefault("PATH", DEFAULT_PATH)
    if task.account is not None:
        account = task.account
        env.update(HOME=account.home, USER=account.name, LOGNAME=account.name)
    env.update(task.config.env)
    env.update(
        BEATD_JOB=invocation.job,
        BEATD_TASK=invocation.task,
        BEATD_RUN_ID=invocation.run_id,
        BEATD_SCHEDULED_AT=iso_utc(invocation.scheduled_at),
        BEATD_ATTEMPT=str(invocation.attempt),
    )
    return env


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's own protocol, plus a future for the exit of the main process alone:
    Process.wait() also waits for the output pipes to close, which anything the command
    left running in the background keeps open."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        _resolve(self.exited, None)


async def _run_command(
    task: Task, invocation: Invocation, base_env: Mapping[str, str], timeout_s: float | None
) -> Result:
    try:
        argv = argv_of(task.config, invocation.args)
    except commands.ArgsRefused as exc:
        log.warning("run %s: refused, not started: %s", invocation.run_id, exc)
        return Result(Status.REFUSED, detail=f"refused: {exc}")
    switch: dict[str, Any] = {}
    if task.account is not None:
        account = task.account
        switch = {"user": account.uid, "group": account.gid, "extra_groups": list(account.groups)}
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _Protocol(loop),
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=task.config.cwd,
            env=environment(task, invocation, base_env),
            start_new_session=True,  # its own session and process group: killable as one
            preexec_fn=_die_with_worker(os.getpid()),
            **switch,
        )
    except (OSError, ValueError) as exc:  # ValueError: a NUL, which the file check rules out
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Result(Status.FAILED, detail=f"cannot start {argv[0]}: {detail}")
    process = asyncio.subprocess.Process(transport, protocol, loop)
    group = _Group(process.pid, protocol.exited, asyncio.create_task(process.wait()))
    log.debug("run %s: started %s as pid %d", invocation.run_id, argv, process.pid)
    output = _Output(invocation.run_id)
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    feeder = asyncio.create_task(_feed(process.stdin, invocation.body))
    group.pumps = [
        asyncio.create_task(output.pump(process.stdout, "stdout")),
        asyncio.create_task(output.pump(process.stderr, "stderr")),
    ]
    timed_out = finished = False
    try:
        await asyncio.wait_for(asyncio.shield(protocol.exited), timeout_s)
        done, _ = await asyncio.wait([group.closed], timeout=LEFTOVER_WAIT_S)
        # The group itself, too: a command that exits at once can be reaped before the pipes'
        # wait starts, and then that wait does not see the processes it left holding them.
        if not done or _group_alive(group.pgid):
            log.warning(
                "run %s: %s exited but left processes running in its group; stopping them",
                invocation.run_id,
                argv[0],
            )
            await group.stop()
        finished = True
    except TimeoutError:
        timed_out = True
        await group.stop()
        finished = True
    finally:
        if not finished:  # cancelled (a forced stop): leave nothing of it behind
            await asyncio.shield(group.stop())
        feeder.cancel()
        transport.close()  # a process that escaped the group may still hold the pipes
        _, stuck = await asyncio.wait(group.pumps, timeout=LEFTOVER_WAIT_S)
        for pump in stuck:
            pump.cancel()
    code = process.returncode
    if timed_out:
        return Result(
            Status.TIMED_OUT, code, f"timed out after {timeout_s:g}s; process group killed",
            output.tail(),
        )  # fmt: skip
    if code == 0:
        return Result(Status.SUCCEEDED, 0, output=output.tail())
    return Result(Status.FAILED, code, _describe_exit(code), output.tail())


def _die_with_worker(worker_pid: int) -> Callable[[], None] | None:
    """In the child, before exec: the kernel SIGKILLs it when the worker dies, even by
    SIGKILL, so a restarted worker never runs a second copy beside it (issue 9 item 17).
    Python applies `user`/`group` before this, and a change of user would clear the setting.
    Only ctypes and os calls: nothing here may take a lock another thread could hold."""
    libc = _LIBC
    if libc is None or not hasattr(libc, "prctl"):
        return None

    def child() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != worker_pid:  # the worker died before the line above
            os.kill(os.getpid(), signal.SIGKILL)

    return child


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"killed by signal {name}"
    return f"exit status {code}"


@dataclass
class _Group:
    """A command's process group: its leader's exit, and its pipes closing (when every
    process holding them is gone: as far as a pipe can tell, the whole group)."""

    pgid: int
    exited: asyncio.Future[None]
    closed: asyncio.Task[int]
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self) -> None:
        """SIGTERM the group, SIGKILL whatever is left after KILL_GRACE_S."""
        _signal_group(self.pgid, signal.SIGTERM)
        both: list[asyncio.Future[Any]] = [self.exited, self.closed]
        await asyncio.wait(both, timeout=KILL_GRACE_S)
        _signal_group(self.pgid, signal.SIGKILL)
        await self.exited
        rest: list[asyncio.Future[Any]] = [self.closed, *self.pumps]
        await asyncio.wait(rest, timeout=LEFTOVER_WAIT_S)


def _group_alive(pgid: int) -> bool:
    """Whether any process is left in the group (its leader is reaped by now)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    """Give the message on stdin as one line; a command that does not read it is fine."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        if not data.endswith(b"\n"):
            # Without it, the shell's `read -r msg` returns 1 at the end of input and stops
            # a `set -e` script (issue 9 item 6).
            stdin.write(b"\n")
        await stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.close()
        await stdin.wait_closed()


class _Output:
    """Streams a command's output to the log, line by line, and keeps the tail for events."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)

    async def pump(self, stream: asyncio.StreamReader, name: str) -> None:
        pending = b""
        while chunk := await stream.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._line(name, line)
            if len(pending) > MAX_LINE:  # no newline in sight: do not buffer without bound
                self._line(name, pending)
                pending = b""
        if pending:
            self._line(name, pending)

    def _line(self, name: str, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE] + "..."
        if not text.isprintable():  # a \r or an escape sequence would rewrite the log's lines
            text = "".join(c if c.isprintable() or c == "\t" else _escape(c) for c in text)
        log.info("run %s %s: %s", self.run_id, name, text)
        self._tail.append(text)

    def tail(self) -> str:
        return "\n".join(self._tail)[-MAX_LINE:]


def _escape(char: str) -> str:
    return repr(char)[1:-1]
