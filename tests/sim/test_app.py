"""An application's health endpoint (:mod:`agent.sim.app`): 503 until it turns healthy,
late or never, or a given sequence of statuses (a flapping application)."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator

import pytest

from agent.sim.app import HealthApp

pytestmark = pytest.mark.integration  # every test here serves on loopback


@pytest.fixture
def app() -> Iterator[HealthApp]:
    with HealthApp() as served:
        yield served


def check(app: HealthApp, path: str = "/healthz") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=5)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def test_unhealthy_until_told_then_healthy_from_then_on(app: HealthApp) -> None:
    assert app.url == f"http://127.0.0.1:{app.port}/healthz"
    assert [check(app)[0] for _ in range(3)] == [503, 503, 503]
    assert app.healthy_at is None
    before = time.monotonic()
    app.healthy()
    assert app.healthy_at is not None and before <= app.healthy_at <= time.monotonic()
    assert [check(app)[0] for _ in range(3)] == [200, 200, 200]


def test_an_application_that_never_turns_healthy_keeps_failing(app: HealthApp) -> None:
    app.status = 500
    assert {check(app, path)[0] for path in ("/healthz", "/", "/ready")} == {500}


def test_a_flapping_application_answers_its_statuses_then_its_status(app: HealthApp) -> None:
    app.statuses = [200, 503, 200, 500]
    assert [check(app)[0] for _ in range(6)] == [200, 503, 200, 500, 503, 503]


def test_the_body_names_the_status() -> None:
    with HealthApp("warming caches") as app:
        assert check(app) == (503, b"warming caches 503")
        app.healthy()
        assert check(app) == (200, b"warming caches 200")


def test_without_a_body_the_answer_is_empty(app: HealthApp) -> None:
    assert check(app) == (503, b"")


def test_stopped_it_answers_nothing() -> None:
    app = HealthApp().start()
    port = app.port
    app.stop()
    app.stop()  # once more: nothing
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=5).request("GET", "/healthz")
