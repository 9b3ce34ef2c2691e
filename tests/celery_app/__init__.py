"""Celery apps used as test fixtures: `worker_app` (run by a real worker; its task records what
it was called with), `sample` (a beat schedule in every form import-celery converts),
`unconvertible` (entries it must refuse), `celeryconfig` (a plain config module with old-style
names), `noisy` (prints on import) and `raising` (fails on import)."""
