"""A config module mixing new and old setting names, which Celery's own loader refuses."""

from celery.schedules import crontab

CELERY_TIMEZONE = "Europe/Berlin"
beat_schedule = {"nightly": {"task": "reports.nightly", "schedule": crontab(minute=30, hour=2)}}
