"""Reading a big file lets each job's parsed mapping go once its Job is built (peak memory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from beatd.core.config import parse_config
from beatd.core.errors import ConfigError


def test_a_jobs_mapping_also_reached_through_an_alias_is_read_whole_by_both(
    tmp_path: Path,
) -> None:
    # _jobs lets each job's parsed mapping go once its Job is built (peak memory), but not when
    # the jobs mapping is shared through an alias: the tasks section reads it afterwards.
    text = "jobs: &all\n  a: {every: 1h, task: t.a}\ntasks: *all\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "f.yaml", {"HOME": str(tmp_path)})
    messages = [p.message for p in caught.value.problems]
    assert any("task 'a': unknown key 'every'" in m for m in messages), messages
    assert not any("got null" in m for m in messages), messages
