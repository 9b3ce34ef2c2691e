"""What a `command` task may receive from a message: its argv, checked against the task's
`args:` policy (README: Security), and the YAML converters for that policy. Pure.

A message is data from anyone who can publish to the exchange. Appended to an argv, that data
becomes options (`find -exec`, `tar --checkpoint-action`, `git -c`, `env sh -c ...`), so a
command takes no args unless its task says so, and then only after the end of its options.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from beatd.core import values

# Linux refuses a single argv string over 32 pages (MAX_ARG_STRLEN, with its NUL).
MAX_ARG_BYTES = 128 * 1024 - 1
MAX_ARGS = 1000


class ArgsMode(Enum):
    NONE = "none"  # nothing: a message with args is refused
    APPEND = "append"  # any args, appended after the separator
    SHAPES = "shapes"  # exactly one arg per pattern, each matching its pattern whole


@dataclass(frozen=True, slots=True)
class ArgsPolicy:
    """A command task's `args:` and `args_separator:`."""

    mode: ArgsMode = ArgsMode.NONE
    shapes: tuple[re.Pattern[str], ...] = ()
    # Ends the program's options, so an arg like --checkpoint-action=exec=sh stays an operand.
    # "" for a program without one (echo): then no arg may start with "-".
    separator: str = "--"


class ArgsRefused(ValueError):
    """A message's args are not what its command task allows; str() is the reason."""


def command_argv(command: Sequence[str], policy: ArgsPolicy, args: Sequence[Any]) -> list[str]:
    """The argv for a run: the task's command, then the message's args as the policy allows
    (strings as they are, other values as JSON: 30 -> "30", true -> "true"). Raise
    ArgsRefused rather than run anything the task did not allow."""
    if not args:
        return list(command)
    if policy.mode is ArgsMode.NONE:
        raise ArgsRefused(
            f"the message has {len(args)} args and this command takes none "
            "(give the task `args: append` or a list of patterns to allow them)"
        )
    if len(args) > MAX_ARGS:
        raise ArgsRefused(f"the message has {len(args)} args, more than {MAX_ARGS}")
    strings = [a if isinstance(a, str) else json.dumps(a, ensure_ascii=False) for a in args]
    if policy.mode is ArgsMode.SHAPES and len(strings) != len(policy.shapes):
        raise ArgsRefused(
            f"the message has {len(strings)} args and this command takes {len(policy.shapes)}"
        )
    for i, arg in enumerate(strings):
        if policy.mode is ArgsMode.SHAPES and not policy.shapes[i].fullmatch(arg):
            pattern = policy.shapes[i].pattern
            raise ArgsRefused(f"arg {i} {_show(arg)} does not match {pattern!r}")
        if not policy.separator and arg.startswith("-"):
            raise ArgsRefused(
                f"arg {i} {_show(arg)} starts with '-' and this command has no args_separator"
            )
        if "\0" in arg:
            raise ArgsRefused(f"arg {i} contains a NUL character")
        if len(arg.encode("utf-8", "surrogateescape")) > MAX_ARG_BYTES:
            raise ArgsRefused(f"arg {i} is longer than {MAX_ARG_BYTES} bytes")
    separator = [policy.separator] if policy.separator else []
    return [*command, *separator, *strings]


def _show(value: str) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


# YAML converters for a task's command-side keys (config.py calls these).


def _no_nul(text: str) -> str:
    # execve takes C strings: a NUL would cut an argument or a variable short.
    if "\0" in text:
        raise ValueError("contains a NUL character")
    return text


def argv(value: object) -> list[str]:
    return [_no_nul(item) for item in values.argv(value)]


def cwd(value: object) -> str:
    return _no_nul(values.text(value))


def environment(value: object) -> dict[str, str]:
    env = values.environment(value)
    for key, item in env.items():
        if not key or "=" in key or "\0" in key or "\0" in item:
            raise ValueError(f"{key!r}: a name is not empty and has no = or NUL; a value no NUL")
    return env


def separator(value: object) -> str:
    if value is None:  # `args_separator:` left empty
        return ""
    if not isinstance(value, str) or "\0" in value or len(value) > 64:
        raise ValueError(f'must be a string like "--", or "" for none, got {values.kind(value)}')
    return value


def args_policy(separator: str) -> Callable[[object], ArgsPolicy]:
    """The converter for `args:`: none, append, or a list of patterns, one per arg."""

    def convert(value: object) -> ArgsPolicy:
        if value in ("none", None):
            return ArgsPolicy(ArgsMode.NONE, separator=separator)
        if value == "append":
            return ArgsPolicy(ArgsMode.APPEND, separator=separator)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(
                "must be none, append, or a list of patterns, one per arg "
                f'(e.g. ["[0-9]{{1,4}}"]), got {values.kind(value)}'
            )
        shapes = []
        for i, pattern in enumerate(value):
            try:
                shapes.append(re.compile(pattern))
            except re.error as exc:
                raise ValueError(f"[{i}] {pattern!r} is not a regular expression: {exc}") from None
        return ArgsPolicy(ArgsMode.SHAPES, tuple(shapes), separator)

    return convert
