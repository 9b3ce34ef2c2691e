"""An app that spreads its load by picking minutes at random when the module is imported."""

from __future__ import annotations

import random

from celery import Celery
from celery.schedules import crontab

app = Celery("randomised", set_as_current=False)
app.conf.update(broker_connection_retry_on_startup=True)
app.conf.beat_schedule = {
    "spread": {"task": "x.spread", "schedule": crontab(minute=random.randrange(60), hour=4)},
    "fixed": {"task": "x.fixed", "schedule": crontab(minute=7, hour=4)},
}
