"""A plain Celery config module with old-style setting names, for `--config-module`."""

from celery.schedules import crontab

CELERY_TIMEZONE = "America/New_York"
CELERYBEAT_SCHEDULE = {
    "nightly": {"task": "reports.nightly", "schedule": crontab(minute=30, hour=2)},
    "heartbeat": {"task": "monitoring.ping", "schedule": 30.0},
}
