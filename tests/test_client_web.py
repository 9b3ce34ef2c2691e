"""The README's Flask route and Django view, called through each framework's own test client;
the run they publish is read back from the real RabbitMQ."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from beatd import client
from beatd.core.messages import parse_beatd
from tests.rabbit import AMQP_URL, Rabbit


@pytest.fixture
def schedule(rabbit: Rabbit, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    exchange = rabbit.name("ex")
    queue = rabbit.queue(exchange)
    path = tmp_path / "beatd.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        broker:
          url: {AMQP_URL}
          exchange: {exchange}
        jobs:
          nightly-report:
            cron: "30 2 * * *"
            task: reports.nightly
        """)
    )
    try:
        yield path, queue
    finally:
        client.close()  # the views use the shared per-process client


# The same code as the README's examples.


def flask_app(config: Path) -> Any:
    from flask import Flask

    app = Flask(__name__)

    @app.post("/reports/<int:report_id>/render")
    def render_report(report_id: int) -> tuple[dict[str, str], int]:
        try:
            run_id = client.publish("reports.render", [report_id], {"pdf": True}, config=config)
        except client.BrokerError as exc:
            return {"error": str(exc)}, 503
        return {"run": run_id}, 202

    @app.post("/nightly")
    def run_nightly_now() -> tuple[dict[str, str], int]:
        return {"run": client.trigger("nightly-report", config=config)}, 202

    return app


def django_views() -> list[Any]:
    from django.conf import settings
    from django.http import HttpRequest, JsonResponse
    from django.urls import path
    from django.views.decorators.http import require_POST

    @require_POST
    def render_report(request: HttpRequest, report_id: int) -> JsonResponse:
        try:
            run_id = client.publish(
                "reports.render", [report_id], {"pdf": True}, config=settings.BEATD_CONFIG
            )
        except client.BrokerError as exc:
            return JsonResponse({"error": str(exc)}, status=503)
        return JsonResponse({"run": run_id}, status=202)

    return [path("reports/<int:report_id>/render", render_report)]


urlpatterns: list[Any] = []  # Django's ROOT_URLCONF is this module; filled in by the fixture


def test_a_flask_route_publishes_a_run(rabbit: Rabbit, schedule: tuple[Path, str]) -> None:
    config, queue = schedule
    web = flask_app(config).test_client()
    rendered = web.post("/reports/42/render")
    triggered = web.post("/nightly")
    assert (rendered.status_code, triggered.status_code) == (202, 202)
    got = {m.json["task"]: m for m in rabbit.wait_for(queue, 2)}
    body = parse_beatd(got["reports.render"].body)
    assert (body.id, body.args, body.kwargs) == (rendered.json["run"], [42], {"pdf": True})
    assert got["reports.nightly"].json["id"] == triggered.json["run"]
    assert got["reports.nightly"].json["trigger"] == "manual"


def test_a_flask_route_answers_503_when_the_run_is_unroutable(
    rabbit: Rabbit, schedule: tuple[Path, str]
) -> None:
    config, queue = schedule
    rabbit.drain(queue)
    with rabbit.channel() as ch:  # no queue bound any more: the broker returns the run
        ch.queue_unbind(queue, rabbit.name("ex"), "#")
    answer = flask_app(config).test_client().post("/reports/7/render")
    assert answer.status_code == 503
    assert "was unroutable: no queue is bound" in answer.json["error"]


def test_a_django_view_publishes_a_run(
    rabbit: Rabbit, schedule: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import django
    from django.conf import settings
    from django.test import Client as DjangoClient
    from django.test.utils import override_settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="test",
            ALLOWED_HOSTS=["testserver"],
            ROOT_URLCONF=__name__,
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
        )
        django.setup()
    monkeypatch.setattr(sys.modules[__name__], "urlpatterns", django_views())
    config, queue = schedule
    with override_settings(BEATD_CONFIG=str(config)):
        answer = DjangoClient().post("/reports/42/render")
        refused = DjangoClient().get("/reports/42/render")
    assert answer.status_code == 202, answer.content
    assert refused.status_code == 405
    [got] = rabbit.wait_for(queue, 1)
    body = parse_beatd(got.body)
    assert (body.id, body.task, body.args) == (answer.json()["run"], "reports.render", [42])
