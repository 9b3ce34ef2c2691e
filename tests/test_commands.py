"""What a command task takes from a message (beatd.core.commands), and how `args:`,
`args_separator:` and `worker.max_body` are written in the file. Pure."""

from __future__ import annotations

import re
import textwrap
from typing import Any

import pytest

from beatd.core.commands import (
    MAX_ARG_BYTES,
    MAX_ARGS,
    ArgsMode,
    ArgsPolicy,
    ArgsRefused,
    command_argv,
)
from beatd.core.config import Config, parse_config
from beatd.core.errors import ConfigError

ENV = "/usr/bin/env"
FORGED = ["/bin/sh", "-c", "id > /tmp/x"]  # issue 12: what ran as the worker's user


def shapes(*patterns: str, separator: str = "--") -> ArgsPolicy:
    return ArgsPolicy(ArgsMode.SHAPES, tuple(re.compile(p) for p in patterns), separator)


def test_a_command_without_args_policy_refuses_the_forged_message_of_issue_12() -> None:
    with pytest.raises(ArgsRefused, match="the message has 3 args and this command takes none"):
        command_argv([ENV], ArgsPolicy(), FORGED)


def test_a_command_without_args_policy_runs_as_written_when_the_message_has_none() -> None:
    assert command_argv([ENV, "-i"], ArgsPolicy(), []) == [ENV, "-i"]


def test_append_puts_args_after_the_separator_as_strings_or_json() -> None:
    argv = command_argv(
        ["/usr/bin/tar", "-cf", "x.tar"],
        ArgsPolicy(ArgsMode.APPEND),
        ["--checkpoint-action=exec=sh", 30, True, None, {"a": "ä"}],
    )
    assert argv == [
        "/usr/bin/tar", "-cf", "x.tar",
        "--", "--checkpoint-action=exec=sh", "30", "true", "null", '{"a": "ä"}',
    ]  # fmt: skip


def test_a_custom_separator_is_used_as_given() -> None:
    policy = ArgsPolicy(ArgsMode.APPEND, separator="--end-of-options")
    assert command_argv(["/usr/bin/git", "log"], policy, ["x"])[2:] == ["--end-of-options", "x"]


def test_without_a_separator_no_arg_may_look_like_an_option() -> None:
    policy = ArgsPolicy(ArgsMode.APPEND, separator="")
    assert command_argv(["/bin/echo"], policy, ["a", "b-c"]) == ["/bin/echo", "a", "b-c"]
    with pytest.raises(ArgsRefused, match="arg 1 '-n' starts with '-'"):
        command_argv(["/bin/echo"], policy, ["a", "-n"])


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ([30], None),
        (["30"], None),
        ([12345], r"arg 0 '12345' does not match '\[0-9\]\{1,4\}'"),
        (["30; rm -rf /"], "does not match"),  # a whole match, not a search
        (["30\n"], "does not match"),
        ([30, 31], "the message has 2 args and this command takes 1"),
        ([], None),  # no args at all: the command as written
    ],
)
def test_shapes_take_exactly_one_arg_per_pattern_matching_it_whole(
    args: list[Any], reason: str | None
) -> None:
    policy = shapes("[0-9]{1,4}")
    if reason is None:
        argv = command_argv(["/usr/local/bin/cleanup", "--days"], policy, args)
        assert argv[2:] == (["--", str(args[0])] if args else [])
    else:
        with pytest.raises(ArgsRefused, match=reason):
            command_argv(["/usr/local/bin/cleanup", "--days"], policy, args)


def test_args_execve_cannot_take_are_refused_rather_than_crashing_the_start() -> None:
    append = ArgsPolicy(ArgsMode.APPEND)
    with pytest.raises(ArgsRefused, match="arg 1 contains a NUL"):
        command_argv(["/bin/true"], append, ["a", "b\0c"])
    with pytest.raises(ArgsRefused, match=f"longer than {MAX_ARG_BYTES} bytes"):
        command_argv(["/bin/true"], append, ["x" * (MAX_ARG_BYTES + 1)])
    with pytest.raises(ArgsRefused, match=f"more than {MAX_ARGS}"):
        command_argv(["/bin/true"], append, ["x"] * (MAX_ARGS + 1))


def test_a_refusal_reason_is_one_short_line_even_for_a_huge_or_hostile_arg() -> None:
    with pytest.raises(ArgsRefused) as caught:
        command_argv(["/bin/true"], shapes("a"), ["\n" * 10_000 + "\x1b[2J"])
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


# --- the file -----------------------------------------------------------------------------


def load(text: str) -> Config:
    return parse_config(textwrap.dedent(text), "w.yaml", {})


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return [str(p) for p in caught.value.problems]


def test_args_and_args_separator_parse() -> None:
    tasks = load("""
        tasks:
          plain:
            command: [/usr/bin/printenv]
          explicit-none:
            command: [/usr/bin/printenv]
            args: none
          appended:
            command: [/usr/local/bin/report]
            args: append
          shaped:
            command: [/bin/echo, "days:"]
            args: ["[0-9]{1,4}", "daily|weekly"]
            args_separator: ""
          git:
            command: [/usr/bin/git, log]
            args: append
            args_separator: --end-of-options
    """).tasks
    assert tasks["plain"].args == ArgsPolicy()
    assert tasks["explicit-none"].args.mode is ArgsMode.NONE
    assert tasks["appended"].args == ArgsPolicy(ArgsMode.APPEND, (), "--")
    shaped = tasks["shaped"].args
    assert shaped.mode is ArgsMode.SHAPES and shaped.separator == ""
    assert [p.pattern for p in shaped.shapes] == ["[0-9]{1,4}", "daily|weekly"]
    assert tasks["git"].args.separator == "--end-of-options"


def test_args_errors_name_the_task_and_the_field() -> None:
    assert problems("""
        tasks:
          a:
            command: [/bin/true]
            args: 3
          b:
            command: [/bin/true]
            args: ["[0-9"]
          c:
            call: m:f
            args: append
          d:
            command: ["/bin/true", "a\\0b"]
          e:
            command: [/bin/true]
            env: {"A=B": x}
    """) == [
        "w.yaml:5: task 'a': args: must be none, append, or a list of patterns, one per arg"
        ' (e.g. ["[0-9]{1,4}"]), got int 3',
        "w.yaml:8: task 'b': args: [0] '[0-9' is not a regular expression: unterminated"
        " character set at position 0",
        "w.yaml:11: task 'c': args: only for command tasks",
        "w.yaml:13: task 'd': command: 'a\\x00b': an argument cannot hold a NUL character",
        "w.yaml:16: task 'e': env: 'A=B': a name is not empty and has no = or NUL; a value no NUL",
    ]


@pytest.mark.parametrize(
    ("written", "size"),
    [("2048", 2048), ("512KiB", 512 * 1024), ("1MiB", 1024 * 1024), ("64 MiB", 64 << 20)],
)
def test_max_body_takes_bytes_kib_or_mib(written: str, size: int) -> None:
    assert load(f"worker: {{max_body: {written}}}\ntasks: {{}}\n").worker.max_body == size


def test_max_body_defaults_to_one_mebibyte_and_refuses_nonsense() -> None:
    assert load("tasks: {}\n").worker.max_body == 1024 * 1024
    assert problems("worker: {max_body: 1GiB}\n") == [
        "w.yaml:1: worker: max_body: must be a size like 1MiB, 512KiB or 1048576, got str '1GiB'"
    ]
    assert problems("worker: {max_body: 10}\n") == [
        "w.yaml:1: worker: max_body: 10 is not between 1KiB and 128MiB"
    ]
