"""An app module that prints while it is imported: that must not end up in the YAML."""

from celery import Celery

print("connecting to things...")

app = Celery("noisy", set_as_current=False)
app.conf.beat_schedule = {"ping": {"task": "noisy.ping", "schedule": 60}}
