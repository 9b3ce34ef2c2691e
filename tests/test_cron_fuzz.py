"""Fuzzing the cron parser (issue 9): random strings from cron-ish alphabets never raise
anything but CronError, and every expression accepted finds its next runs within the bounded
search, each one a time the expression matches by definition (tests/cron_oracle.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cron_oracle import Definition
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from beatd.core.cron import CronSchedule, parse
from beatd.core.errors import CronError

DIGITS = "0123456789"
ODD_DIGITS = "¹²³٣３߃᠓"  # superscripts, Arabic-Indic, fullwidth, NKo, Mongolian
SYMBOLS = "*/,-#LW?H()lwh"
NAMES = ["jan", "DEC", "april", "mon", "FRI", "sunday", "tue", "sept", "thurs", "L", "LW"]
HUGE = ["99999999999999999999", "9" * 5000, "4294967296", "0" * 30 + "5"]
SPACES = [" ", "  ", "\t", "\u00a0", "\u2003"]

token = st.one_of(
    st.integers(0, 61).map(str),
    st.sampled_from(list(DIGITS + SYMBOLS)),
    st.sampled_from(list(ODD_DIGITS)),
    st.sampled_from(NAMES),
    st.sampled_from(HUGE),
)
field_text = st.lists(token, min_size=1, max_size=6).map("".join)
spaced = st.lists(field_text, min_size=1, max_size=7).flatmap(
    lambda fields: st.lists(
        st.sampled_from(SPACES), min_size=len(fields), max_size=len(fields)
    ).map(lambda gaps: "".join(f + g for f, g in zip(fields, gaps, strict=True)))
)
raw = st.text(alphabet=DIGITS + ODD_DIGITS + SYMBOLS + " \t,-/", max_size=40)

# Likely to parse: a well-formed term per field, from the whole dialect.


def terms(high: int) -> st.SearchStrategy[str]:
    value = st.integers(0, high).map(str)
    return st.one_of(
        st.just("*"),
        value,
        st.tuples(value, value).map("-".join),
        st.tuples(st.sampled_from(["*", "1-20", "22-2", "50-10", "7"]), st.integers(1, 9)).map(
            lambda t: f"{t[0]}/{t[1]}"
        ),
    )


plain = terms(31)
dom = st.one_of(
    plain,
    st.sampled_from(["L", "LW", "15W", "W1", "31W", "L-3", "25-L", "1-L/8", "L-5-L", "?"]),
)
dow = st.one_of(
    terms(7),
    st.sampled_from(["fri-mon", "mon-fri#1", "5L", "L5", "7/2", "sunday", "?", "*#2", "sat,sun"]),
)
shaped = st.tuples(plain, plain, dom, st.sampled_from(["*", "nov-mar", "2", "feb,apr"]), dow).map(
    " ".join
)
expressions = st.one_of(spaced, raw, shaped, st.tuples(plain, shaped).map(" ".join))
zones = st.sampled_from([UTC, ZoneInfo("America/New_York"), ZoneInfo("Australia/Lord_Howe")])
starts = st.datetimes(datetime(1990, 1, 1), datetime(2090, 1, 1)).map(
    lambda t: t.replace(tzinfo=UTC)
)


@settings(max_examples=1500, deadline=None, derandomize=True, database=None)
@given(expression=expressions)
def test_only_cron_errors_escape_the_parser(expression: str) -> None:
    try:
        parse(expression, "job")
    except CronError as exc:
        assert str(exc)
        assert "\n" not in str(exc)
        event("rejected")
    else:
        event("accepted")


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(expression=expressions, zone=zones, start=starts)
def test_an_accepted_expression_finds_matching_times(
    expression: str, zone: ZoneInfo, start: datetime
) -> None:
    try:
        expr = parse(expression, "job")
    except CronError:
        event("rejected")
        return
    event("accepted")
    schedule = CronSchedule(expr, zone)
    definition = None if "h" in expression.lower() else Definition(" ".join(expression.split()))
    t = start
    for _ in range(3):  # each call is a bounded search: it returns
        nxt = schedule.next_after(t)
        if nxt is None:
            # Only past the search bound: the expression has no match in 50 years from t.
            assert definition is None or not definition.fires(
                t.replace(tzinfo=None), 1, days=366 * 4
            )
            event("no next run")
            return
        assert nxt > t
        wall = nxt.astimezone(zone).replace(tzinfo=None)
        if definition is not None and (zone is UTC or not expr.fixed_time):
            assert definition.matches(wall), (expression, wall)
        elif definition is not None:
            # A fixed time in a DST gap runs right after the jump: the wall time it stands for
            # matches, within the jump.
            assert any(definition.matches(wall - timedelta(minutes=m)) for m in range(0, 121))
        t = nxt
