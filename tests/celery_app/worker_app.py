"""The Celery app the worker tests run: `record` writes what it was called with to a file.

Started by tests/test_celery_worker.py as
`celery -A tests.celery_app.worker_app worker -Q <unique queue> --pool=solo` from the project
root, with the broker URL in $BEATD_TEST_CELERY_BROKER.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from celery import Celery

app = Celery("beatd_tests", broker=os.environ.get("BEATD_TEST_CELERY_BROKER"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_enable_remote_control=False,  # no pidbox queue or exchange left behind
    worker_hijack_root_logger=False,
)


@app.task(name="beatd_tests.record", bind=True)
def record(self: Any, path: str, *args: Any, **kwargs: Any) -> None:
    """Append one JSON line: the args, kwargs and what the worker knew about the request."""
    request = self.request
    line = {
        "args": list(args),
        "kwargs": kwargs,
        "id": request.id,
        "root_id": request.root_id,
        "periodic_task_name": getattr(request, "periodic_task_name", None),
        # Every message header becomes an attribute of the request, beatd's own too.
        "scheduled_at": getattr(request, "beatd-scheduled-at", None),
        "delivery_info": {
            key: request.delivery_info.get(key) for key in ("exchange", "routing_key")
        },
    }
    with Path(path).open("a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")
