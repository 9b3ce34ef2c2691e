"""A Celery app with entries `beatd import-celery` must refuse, each for a stated reason, and one
it converts (so the test can check that the rest is still printed)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from celery import Celery
from celery.beat import BeatLazyFunc
from celery.schedules import crontab, solar

app = Celery("unconvertible", set_as_current=False)
app.conf.update(broker_connection_retry_on_startup=True)

# solar() needs the ephem package to compute anything, which beatd neither has nor needs: the
# converter only looks at the type and its event/lat/lon, so skip __init__.
sunset = solar.__new__(solar)
sunset.event, sunset.lat, sunset.lon = "sunset", 52.52, 13.40


class EveryOtherTuesday(crontab):
    """A custom schedule class: its is_due is code beatd cannot see into."""

    def is_due(self, last_run_at: Any) -> Any:
        return super().is_due(last_run_at)


app.conf.beat_schedule = {
    "fine": {"task": "x.fine", "schedule": 60},
    "at-sunset": {"task": "x.lights", "schedule": sunset},
    "relative-interval": {"task": "x.two", "schedule": 7200, "relative": True},
    "second-and-third-on-mondays": {
        "task": "x.odd",
        "schedule": crontab(minute=0, hour=9, day_of_week="mon", day_of_month="2,3"),
    },
    "expires-at-a-date": {
        "task": "x.until",
        "schedule": 60,
        "options": {"expires": datetime(2030, 1, 1, tzinfo=UTC)},
    },
    "time-limit": {"task": "x.slow", "schedule": 60, "options": {"time_limit": 30}},
    "custom-headers": {"task": "x.h", "schedule": 60, "options": {"headers": {"tenant": "a"}}},
    "lazy-args": {"task": "x.lazy", "schedule": 60, "args": (BeatLazyFunc(datetime.now),)},
    "custom-class": {"task": "x.custom", "schedule": EveryOtherTuesday(minute=0, hour=9)},
    "sub-millisecond": {"task": "x.fast", "schedule": 0.0001},
}
