"""Ways in from elsewhere: the Celery message codec, `beatd import-celery`, and
`beatd import-crontab`."""
