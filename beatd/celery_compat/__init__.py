"""Celery compatibility: the Celery message codec and `beatd import-celery`."""
