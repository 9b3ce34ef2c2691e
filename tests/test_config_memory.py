"""Reading a big file: jobs are validated a batch at a time as their mappings end (the YAML
reader streams the jobs section), so the parsed tree of 100k jobs never exists. Streamed or
not, a file reads the same: the same Config, or the same problems in the same order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beatd.core import config, yamlfile
from beatd.core.config import Config, Job, parse_config
from beatd.core.errors import ConfigError
from beatd.core.yamlfile import YMap, parse
from tests.test_config_fuzz import GOOD_SECTIONS, schedule_files

ENV = {"HOME": "/nonexistent"}


def read(text: str) -> Config | list[str]:
    try:
        return parse_config(text, "f.yaml", ENV)
    except ConfigError as exc:
        return [str(problem) for problem in exc.problems]


def read_both(text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """Streamed (two jobs a batch, so that small files have several), and as a whole tree
    first, then every job (as before streaming)."""
    with monkeypatch.context() as patched:
        patched.setattr(yamlfile, "STREAM_BATCH", 2)
        streamed = read(text)
    with monkeypatch.context() as patched:
        patched.setattr(config._JobStream, "settled_by", lambda self, top: False)
        whole = read(text)
    return streamed, whole


@st.composite
def reordered_files(draw: st.DrawFn) -> str:
    """The fuzzer's files, sometimes with what jobs depend on written after them."""
    text: str = draw(schedule_files())
    if draw(st.booleans()):
        key = draw(st.sampled_from(["timezone", "defaults", "broker"]))
        text += f"{key}: {GOOD_SECTIONS[key] if key != 'defaults' else '{misfire: all}'}\n"
    return text


@settings(
    max_examples=150,
    deadline=timedelta(seconds=5),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(reordered_files())
def test_a_file_reads_the_same_streamed_or_as_a_whole_tree(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    streamed, whole = read_both(text, monkeypatch)
    assert streamed == whole


CASES = {
    "defaults after the jobs": (
        "jobs:\n  a: {every: 1h, task: t.a, queue: q}\ndefaults: {format: celery}\n"
    ),
    "timezone after the jobs": (
        "jobs:\n  a: {at: '2030-03-31T02:30:00', task: t.a}\ntimezone: Europe/Berlin\n"
    ),
    "broker after the jobs": (
        "jobs:\n  a: {every: 1h, task: t.a, exchange: amq.direct}\n"
        "broker: {exchange_type: direct}\n"
    ),
    "the timezone merged into the top": (  # 02:30 does not exist in Berlin that night
        "worker: &w {timezone: Europe/Berlin}\n<<: *w\n"
        "jobs:\n  a: {at: '2030-03-31T02:30:00', task: t.a}\n"
    ),
    "a job merging another's body": (
        "jobs:\n  a: &a {every: 1h, task: t.a}\n  b: {<<: *a, task: t.b}\n  c: *a\n"
    ),
    "a job defined twice, the first bad": (
        "jobs:\n  a: {every: nope, task: t.a}\n  a: {every: 1h, task: t.a}\n"
    ),
    "a value that cannot be built": "jobs:\n  a: {at: 2027-02-29, task: t.a}\n  b: {every: x}\n",
    "jobs merged into the jobs": (
        "more: &more {m: {every: 1h, task: t.m}}\njobs:\n  <<: *more\n  a: {every: 2h, task: t}\n"
    ),
}


@pytest.mark.parametrize("text", CASES.values(), ids=CASES.keys())
def test_what_jobs_depend_on_counts_wherever_it_is_written(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    streamed, whole = read_both(text, monkeypatch)
    assert streamed == whole


def test_settings_after_the_jobs_apply_to_them() -> None:
    text = "jobs:\n  a: {cron: '0 9 * * *', task: t}\ntimezone: Asia/Kolkata\n"
    result = read(text)
    assert isinstance(result, Config)
    assert str(result.jobs[0].timezone) == "Asia/Kolkata"


def test_a_problem_in_a_job_keeps_its_line_and_order_among_the_others() -> None:
    text = (
        "jobs:\n"
        "  a:\n    every: 1h\n    task: t.a\n    bogus: 1\n"
        "  b:\n    cron: '61 * * * *'\n    task: t.b\n"
        "worker: {concurrency: 0}\n"
    )
    assert read(text) == [
        "f.yaml:5: job 'a': unknown key 'bogus' (allowed: cron, every, at, task, args, kwargs,"
        " timezone, routing_key, priority, expires, jitter, misfire, grace, enabled, format,"
        " queue, exchange)",
        "f.yaml:7: job 'b': cron: minute 61 out of range 0-59",
        "f.yaml:9: worker: concurrency: must be a whole number 1-1000, got int 0",
    ]


def test_each_job_is_converted_and_only_its_result_is_kept() -> None:
    seen: list[tuple[str, dict[str, Any], int]] = []

    def convert(top: YMap, name: str, body: Any, line: int) -> str:
        assert "timezone" in top  # what came before the jobs is there already
        seen.append((name, dict(body), line))
        return f"converted {name}"

    text = "timezone: UTC\njobs:\n  a:\n    every: 1h\n  b: {cron: '@daily'}\nx: 1\n"
    top = parse(text, "f.yaml", stream=("jobs", convert))
    assert seen == [("a", {"every": "1h"}, 3), ("b", {"cron": "@daily"}, 5)]
    assert dict(top["jobs"]) == {"a": "converted a", "b": "converted b"}
    assert top["jobs"].lines == {"a": 3, "b": 5}


def test_entries_are_converted_a_batch_at_a_time_while_the_rest_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(yamlfile, "STREAM_BATCH", 2)
    read_events = 0
    events = yamlfile._events

    def counted(text: str) -> Callable[[], Any]:
        next_event = events(text)

        def counting() -> Any:
            nonlocal read_events
            read_events += 1
            return next_event()

        return counting

    monkeypatch.setattr(yamlfile, "_events", counted)
    calls: list[tuple[str, int]] = []

    def convert(top: YMap, name: str, body: Any, line: int) -> str:
        calls.append((name, read_events))
        return f"{name} {body['every']}"

    text = "jobs:\n" + "".join(f"  {n}: {{every: 1h}}\n" for n in "abcde") + "  a: {every: 2h}\n"
    top = parse(text, "f.yaml", stream=("jobs", convert))
    assert [name for name, _ in calls] == ["a", "b", "c", "d", "e", "a"]
    at = [events_read for _, events_read in calls]
    assert at[0] == at[1] < at[2] == at[3] < at[4] == at[5]  # two jobs parsed, two converted
    assert dict(top["jobs"]) == {"a": "a 2h", "b": "b 1h", "c": "c 1h", "d": "d 1h", "e": "e 1h"}
    assert top["jobs"].duplicates == [("a", 7, 2)]


def test_an_anchored_jobs_mapping_is_not_streamed() -> None:
    # An alias may use it whole later (here: as tasks), so it stays as parsed.
    text = "jobs: &all\n  a: {every: 1h}\ntasks: *all\n"
    top = parse(text, "f.yaml", stream=("jobs", lambda *args: pytest.fail("converted")))
    assert top["tasks"] is top["jobs"]


def test_a_jobs_mapping_also_reached_through_an_alias_is_read_whole_by_both(
    tmp_path: Path,
) -> None:
    text = "jobs: &all\n  a: {every: 1h, task: t.a}\ntasks: *all\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "f.yaml", {"HOME": str(tmp_path)})
    messages = [p.message for p in caught.value.problems]
    assert any("task 'a': unknown key 'every'" in m for m in messages), messages
    assert not any("got null" in m for m in messages), messages


def test_jobs_are_built_by_the_stream_and_kept_in_file_order() -> None:
    names = [f"job-{i:03d}" for i in range(200)]
    text = "jobs:\n" + "".join(
        f"  {n}: {{every: {i + 1}m, task: t}}\n" for i, n in enumerate(names)
    )
    result = read(text)
    assert isinstance(result, Config)
    assert [job.name for job in result.jobs] == names
    assert all(type(job) is Job for job in result.jobs)
