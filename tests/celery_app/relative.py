"""`relative=True` intervals in a UTC app: exact as cron when the interval is one day or hour."""

from __future__ import annotations

from datetime import timedelta

from celery import Celery

app = Celery("relative", set_as_current=False)
app.conf.update(broker_connection_retry_on_startup=True)
app.conf.beat_schedule = {
    "daily": {"task": "x.daily", "schedule": timedelta(days=1), "relative": True},
    "hourly": {"task": "x.hourly", "schedule": 3600, "relative": True},
    "two-hourly": {"task": "x.two", "schedule": 7200, "relative": True},
    "timedelta-arg": {"task": "x.arg", "schedule": 60, "args": (timedelta(hours=1),)},
}
