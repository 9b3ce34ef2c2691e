"""The timetable against a plain dict of due times: whatever mix of single schedules, bulk
schedules (a start's heapify), discards and pops, it gives out the same jobs in the same
order and counts them right."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from beatd.scheduler.timetable import Timetable

BASE = datetime(2026, 12, 1, tzinfo=UTC)
names = st.sampled_from([f"job{i}" for i in range(120)])
times = st.integers(0, 20).map(lambda s: BASE + timedelta(seconds=s))
ops = st.one_of(
    st.tuples(st.just("schedule"), names, times),
    # a few, added one by one; or many (a start), in one heapify
    st.tuples(st.just("all"), st.lists(st.tuples(times, names), max_size=3)),
    st.tuples(st.just("all"), st.lists(st.tuples(times, names), min_size=64, max_size=150)),
    st.tuples(st.just("discard"), names),
    st.tuples(st.just("pop"), times),
)


@given(st.lists(ops, max_size=40))
def test_the_timetable_gives_out_what_a_dict_of_due_times_would(steps: list[tuple]) -> None:
    table, model = Timetable(), {}
    for op, *args in steps:
        if op == "schedule":
            name, at = args
            table.schedule(name, at)
            model[name] = at
        elif op == "all":
            (due,) = args
            table.schedule_all(due)
            model.update((name, at) for at, name in due)  # the last of a name wins
        elif op == "discard":
            table.discard(args[0])
            model.pop(args[0], None)
        else:
            (now,) = args
            taken = table.pop_due(now)
            expected = sorted((at, name) for name, at in model.items() if at <= now)
            assert [(model[name], name) for name in taken] == expected
            for name in taken:
                del model[name]
        assert len(table) == len(model)
        assert {at: n for at, n in table.counts()} == {
            at: sum(1 for t in model.values() if t == at) for at in set(model.values())
        }
        top = table.peek()
        assert top == (min((at, name) for name, at in model.items()) if model else None)
