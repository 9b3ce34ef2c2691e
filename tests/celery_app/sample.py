"""A Celery app whose beat_schedule uses every form `beatd import-celery` converts.

tests/test_celery_import.py converts it and compares beatd's fire times with Celery's own.
"""

from __future__ import annotations

from datetime import timedelta

from celery import Celery
from celery.schedules import crontab, schedule

app = Celery("sample", broker="amqp://guest:guest@127.0.0.1:5672//", set_as_current=False)
app.conf.update(
    timezone="Europe/Berlin",
    broker_connection_retry_on_startup=True,
    task_routes={
        "sample.routed": {"queue": "routed"},
        "sample.reports": {"queue": "reports", "priority": 3},
    },
)


@app.task(name="sample.reports", expires=120)
def reports() -> None:
    """A task with its own expiry, which celery beat applies to its entries. (Queue and
    priority come from task_routes: as task attributes they are deprecated in Celery 5.7.)"""


CRONTABS = {
    "ints": crontab(minute=0, hour=7),
    "strings": crontab(minute="30", hour="9"),
    "weekday-names": crontab(minute=30, hour=9, day_of_week="mon-fri"),
    "weekday-full-names": crontab(minute=0, hour=18, day_of_week="sunday,wednesday"),
    "weekday-number-sunday": crontab(minute=0, hour=0, day_of_week=0),
    "weekday-wrapping-range": crontab(minute=45, hour=23, day_of_week="fri-mon"),
    "every-15-minutes": crontab(minute="*/15"),
    "steps-in-ranges": crontab(minute="10-50/20", hour="8-17/3"),
    "sets-and-lists": crontab(minute={5, 35}, hour=[8, 20]),
    "day-of-month": crontab(minute=15, hour=3, day_of_month="1,15"),
    "last-days": crontab(minute=0, hour=1, day_of_month="28-31"),
    "quarterly": crontab(minute=0, hour=12, day_of_month=1, month_of_year="*/3"),
    "month-names": crontab(minute=0, hour=6, month_of_year="jan,jul"),
    "first-monday": crontab(minute=0, hour=9, day_of_week="mon", day_of_month="1-7"),
    "odd-days-on-weekends": crontab(minute=0, hour=10, day_of_week="sat,sun", day_of_month="*/2"),
    "first-if-monday": crontab(minute=0, hour=8, day_of_week=1, day_of_month=1),
    "even-weekdays-mid-month": crontab(minute=0, hour=8, day_of_week="*/2", day_of_month="10-20"),
    "mondays-on-1st-or-17th": crontab(minute=0, hour=8, day_of_week="mon", day_of_month="1,17"),
    "sun-thu-mid-month": crontab(minute=0, hour=8, day_of_week="sun,thu", day_of_month="10-20"),
    "dst-gap-time": crontab(minute=30, hour=2),
}

app.conf.beat_schedule = {
    **{name: {"task": "sample.cron", "schedule": sched} for name, sched in CRONTABS.items()},
    "timedelta": {"task": "sample.tick", "schedule": timedelta(minutes=90)},
    "seconds-int": {"task": "sample.tick", "schedule": 45},
    "seconds-float": {"task": "sample.tick", "schedule": 0.25},
    "schedule-object": {"task": "sample.tick", "schedule": schedule(run_every=timedelta(hours=2))},
    "with-args": {
        "task": "sample.add",
        "schedule": 30.0,
        "args": (16, 16),
        "kwargs": {"note": "hello", "ratio": 0.5, "nested": {"a": [1, None, True]}},
    },
    "with-options": {
        "task": "sample.cleanup",
        "schedule": crontab(minute=0, hour=4),
        "options": {"queue": "maintenance", "priority": 7, "expires": 600},
    },
    "with-exchange": {
        "task": "sample.fanout",
        "schedule": timedelta(seconds=10),
        "options": {
            "exchange": "events",
            "routing_key": "events.tick",
            "expires": 5,
            "retry": True,
            "serializer": "json",
        },
    },
    "task-level-options": {"task": "sample.reports", "schedule": crontab(minute=0, hour=5)},
    "routed-by-task-routes": {"task": "sample.routed", "schedule": 3600},
    "add every 10 seconds": {"task": "sample.tick", "schedule": 10.0},
}
