"""Fuzzing the schedule-file reader (issue 9, deliverable 4): random YAML with tags, anchors
and aliases, deep nesting, huge numbers, odd dates and names. Only ConfigError may come out of
`read_config` and `beatd check`, every problem is one line, the last-resort "bug in beatd"
translation is never needed, and each example is bounded (Hypothesis' deadline, generous for a
shared 2-core machine; the caps themselves are asserted by counting in test_yamlfile.py).

BEATD_FUZZ_EXAMPLES=20000 runs a longer campaign, with a random seed, than the suite's fixed one.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beatd.cli import main
from beatd.core.config import parse_config
from beatd.core.errors import MAX_MESSAGE_CHARS, ConfigError
from beatd.core.yamlfile import MAX_ALIAS_VALUES, MAX_DEPTH

CAMPAIGN = os.environ.get("BEATD_FUZZ_EXAMPLES")  # set: a longer run, with a random seed
EXAMPLES = int(CAMPAIGN or 300)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=3),
    derandomize=CAMPAIGN is None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Scalars as written in YAML, chosen to reach every converter's edge.
ODD_SCALARS = [
    "2027-02-29T09:00:00", "2027-02-29", "0000-01-01", "9999-12-31", "9999-12-31T23:59:59",
    "0001-01-01T00:00:00+01:00", "'0001-01-01T00:00:00+01:00'", "2027-13-01", "1970-01-01",
    "2027-01-01T00:00:00+14:00", "2026-03-29T02:30:00", "'2026-03-29T02:30:00'",
    "!!int abc", "!!int ''", "!!int 0x", "!!float soon", "!!float ''", "!!bool maybe",
    "!!bool ''", "!!timestamp nope", "!!timestamp 2027-13-01", "!!binary aGk=", "!!binary 'é'",
    "!!null x", "!!str 12", "!!omap x", "!!set x", "!!seq x", "!!python/name:os.system",
    "!custom x", "!!merge x", "1:30", "1:2:3:4:5", "0b101", "0o17", "0x1F", "-0", "+12",
    ".inf", "-.inf", ".nan", "1e400", "1e-400", "~", "null", "yes", "no", "on", "''", '""',
    '"evil\\n"', '"a\\x07b"', '"\\0"', '"\\u2028"', '"\\x85"', "é" * 110, "'a b'",
    "amq.foo", "amq.topic", "amq.rabbitmq.trace", "''", "amqp://h:99999/", "amqp://h:0/",
    "amqp://[::1/", "amqp://u:p@h/?heartbeat=x", "amqp://h/a/b", "amqp://h//", "http://h/",
    "'*/15 * * * *'", "'61 * * * *'", "'H H * * *'", "'@daily'", "'0 0 31 2 *'", "30s",
    "0s", "-5", "500ms", "36500d", "36501d", "1h30m", "1w", "Europe/Berlin", "Europe/Berln",
    "../../etc/passwd", "once", "skip", "all", "celery", "beatd", "topic", "direct", "fanout",
    "quorum", "/bin/true", "m:f", "q" * 300,
]  # fmt: skip
KEYS = [
    "timezone", "broker", "url", "exchange", "exchange_type", "heartbeat", "password_file",
    "state", "defaults", "jobs", "worker", "queue", "queue_type", "bindings", "concurrency",
    "dead_letter_exchange", "dead_letter_queue", "events_exchange", "dedupe_size", "tasks",
    "command", "call", "timeout", "cwd", "env", "user", "retries", "retry_delay", "cron",
    "every", "at", "task", "args", "kwargs", "routing_key", "priority", "expires", "jitter",
    "misfire", "grace", "enabled", "format", "job-a", "job.b", "<<", "? [k]", "2027-02-29",
    "1", "~", '"evil\\n"', "!!int k", "!!set {a}",
]  # fmt: skip


def huge_number(digits: int) -> str:
    return "1" + "0" * (digits - 1)


scalars = st.one_of(
    st.sampled_from(ODD_SCALARS),
    st.integers(min_value=1, max_value=6000).map(huge_number),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20).map(
        lambda s: '"' + s.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    ),
)


class Emitter:
    """Writes a random node tree as flow-style YAML, with anchors on some nodes and aliases
    to anchors already written (YAML needs the anchor first)."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data
        self.anchors: list[str] = []

    def node(self, depth: int) -> str:
        draw = self.data.draw
        kind = draw(st.sampled_from(["scalar"] * 4 + ["map", "seq", "alias"] * 2 + ["deep"]))
        if kind == "alias" and self.anchors:
            return f"*{draw(st.sampled_from(self.anchors))}"
        if kind == "deep":  # past the nesting cap, or just under it
            n = draw(st.sampled_from([MAX_DEPTH - depth - 1, MAX_DEPTH - depth, 70, 900]))
            return "[" * max(n, 0) + "]" * max(n, 0)
        if kind in ("scalar", "alias") or depth > 6:
            text = draw(scalars)
        elif kind == "map":
            keys = draw(st.lists(st.sampled_from(KEYS), max_size=5))
            text = "{" + ", ".join(f"{k}: {self.node(depth + 1)}" for k in keys) + "}"
            if draw(st.booleans()) and keys:
                text = "!!set " + text if draw(st.booleans()) else text
        else:
            items = [self.node(depth + 1) for _ in range(draw(st.integers(0, 4)))]
            text = "[" + ", ".join(items) + "]"
        if draw(st.integers(0, 3)) == 0:
            name = f"a{len(self.anchors)}"
            self.anchors.append(name)
            text = f"&{name} {text}"
        return text


GOOD_SECTIONS = {
    "timezone": "Europe/Berlin",
    "broker": "{url: [amqp://u:p@h:5672/%2F, 'amqps://h//'], exchange: ex, heartbeat: 10s}",
    "defaults": "{misfire: skip, grace: 2m, format: beatd}",
    "worker": "{queue: q, bindings: ['#', a.*], concurrency: 2}",
    "state": "/var/lib/beatd/state.db",
}
# Values each key accepts, so that some generated files are valid and others fail deep inside.
GOOD = {
    "every": ["30s", "1h", "500ms", "90"], "cron": ["'*/15 * * * *'", "'H H * * 1-5'", "'@daily'"],
    "at": ["2027-01-01T00:00:00+01:00", "2027-06-01", "'2030-01-01T09:00'"],
    "args": ["[1, two, {x: [3]}]", "[]"], "kwargs": ["{a: 1, b: [x]}", "{}"],
    "priority": ["5"], "expires": ["10m"], "jitter": ["5m", "0"], "grace": ["60s"],
    "misfire": ["once", "skip", "all"], "enabled": ["true", "false"], "routing_key": ["rk.x"],
    "timezone": ["Europe/Berlin", "UTC", "America/New_York"], "exchange": ["ex", "amq.topic"],
}  # fmt: skip


@st.composite
def job_bodies(draw: st.DrawFn, emit: Emitter) -> str:
    kind = draw(st.sampled_from(["every", "cron", "at"]))
    body = {"task": "t.t", kind: draw(st.sampled_from(GOOD[kind]))}
    for key in draw(st.lists(st.sampled_from(sorted(GOOD.keys() - {"every", "cron", "at"})))):
        body[key] = draw(st.sampled_from(GOOD[key]))
    if draw(st.integers(0, 2)) == 0:  # one hostile value in an otherwise good job
        body[draw(st.sampled_from(KEYS))] = emit.node(3)
    if draw(st.integers(0, 3)) == 0 and len(body) > 1:  # share a value through an alias
        first, second = draw(st.permutations(list(body)))[:2]
        name = f"g{len(emit.anchors)}"
        emit.anchors.append(name)
        body = {**body, first: f"&{name} {body[first]}"}
        ordered = list(body)
        if ordered.index(second) > ordered.index(first):
            body[second] = f"*{name}"
    return "{" + ", ".join(f"{k}: {v}" for k, v in body.items()) + "}"


@st.composite
def schedule_files(draw: st.DrawFn) -> str:
    """A schedule-shaped document (so that values reach the converters), with random nodes
    in random places and, sometimes, an alias bomb or a raw fragment of bad syntax."""
    emit = Emitter(draw(st.data()))
    lines = []
    for key in draw(st.lists(st.sampled_from(sorted(GOOD_SECTIONS)), unique=True)):
        hostile = draw(st.integers(0, 2)) == 0
        lines.append(f"{key}: {emit.node(1) if hostile else GOOD_SECTIONS[key]}")
    lines.append("jobs:")
    for i in range(draw(st.integers(0, 4))):
        odd = ['"evil\\n"', "é" * 101, "a b", "~", f"job-{i - 1}"]
        name = draw(st.sampled_from([f"job-{i}"] * 6 + [f"j.{i}:x/y"] * 2 + odd))
        lines.append(f"  {name}: {draw(job_bodies(emit))}")
    if draw(st.integers(0, 3)) == 0:
        lines.append(f"tasks: {emit.node(1)}")
    if draw(st.integers(0, 9)) == 0:
        levels, width = draw(st.integers(2, 10)), draw(st.integers(2, 12))
        bomb = [f"b0: &b0 [{', '.join(['x'] * width)}]"]
        bomb += [f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * width)}]" for i in range(1, levels)]
        lines.append("bombs: {" + ", ".join(bomb) + "}")
    text = "\n".join(lines) + "\n"
    if draw(st.integers(0, 19)) == 0:  # a random cut or splice: bad syntax, half a document
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["", "\x00", "\t", "---\n", ": :", "[", "&", "*"]))
    return text


def assert_only_config_problems(text: str) -> None:
    try:
        parse_config(text, "fuzz.yaml", {"HOME": "/nonexistent"})
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            shown = str(problem)
            assert "a bug in beatd" not in shown, shown
            assert "\n" not in shown
            assert len(shown) <= MAX_MESSAGE_CHARS
            assert shown.startswith("fuzz.yaml")


@FUZZ
@given(schedule_files())
def test_random_schedule_files_give_a_config_or_config_problems_only(text: str) -> None:
    assert_only_config_problems(text)


@FUZZ
@given(st.text(max_size=300))
def test_random_text_gives_a_config_or_config_problems_only(text: str) -> None:
    assert_only_config_problems(text)


@FUZZ
@given(levels=st.integers(1, 12), width=st.integers(1, 16), use=st.sampled_from(["args", "x"]))
def test_alias_bombs_are_built_below_the_cap_and_refused_above_it(
    levels: int, width: int, use: str
) -> None:
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    text = "x: {" + ", ".join(lines) + "}\njobs:\n  j:\n    every: 1h\n    task: t.t\n"
    text += f"    {use}: *a{levels - 1}\n"
    # What the aliases expand to: each level's anchor counted once per alias to it.
    sizes = [width + 1]
    for _ in range(1, levels):
        sizes.append(width * sizes[-1] + 1)
    expanded = sum(width * size for size in sizes[:-1]) + sizes[-1]
    try:
        parse_config(text, "bomb.yaml", {})
    except ConfigError as exc:
        messages = [p.message for p in exc.problems]
        if expanded > MAX_ALIAS_VALUES:
            assert any(f"more than {MAX_ALIAS_VALUES:,} values (the cap)" in m for m in messages)
        else:
            assert (
                len(messages) == 1 and messages[0].startswith("unknown key 'x' (allowed: ")
            ) or use == "x"
    else:  # pragma: no cover - the unknown key `x` is always reported
        pytest.fail("x: is not a schedule key")


@settings(max_examples=max(EXAMPLES // 10, 20), deadline=timedelta(seconds=10), derandomize=True,
          database=None, suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])  # fmt: skip
@given(schedule_files())
def test_beatd_check_on_random_files_exits_0_or_1_with_one_line_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    code = main(["check", "-c", str(path)])
    out, err = capsys.readouterr()
    assert code in (0, 1)
    assert "Traceback" not in err
    if code == 0:
        assert out.startswith(f"{path}: OK")
    else:
        *problems, summary = err.splitlines()
        assert summary.startswith(f"{path}: ")
        assert all(line.startswith(str(path)) and "a bug in beatd" not in line for line in problems)


def test_the_generated_files_are_not_all_refused_at_the_first_key() -> None:
    # A fuzzer whose every file fails early would prove little: a fixed sample of what it
    # generates must include files that pass and files that fail deep inside a job.
    outcomes = {"valid": 0, "job problem": 0}

    @settings(max_examples=200, derandomize=True, database=None, deadline=None)
    @given(schedule_files())
    def sample(text: str) -> None:
        try:
            parse_config(text, "f.yaml", {})
            outcomes["valid"] += 1
        except ConfigError as exc:
            if any(": job '" in str(p) for p in exc.problems):
                outcomes["job problem"] += 1

    sample()
    assert outcomes["valid"] >= 10
    assert outcomes["job problem"] >= 20
