"""The service under hostile input, overload and a killed worker, over real loopback HTTP: no 5xx,
no lost answers. Bounded in count and time; the 10-minute soak is `benchmarks/serve_soak.py`."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from routeclf.serving.app import ServeConfig
from routeclf.serving.e2e import served_latency_quantile
from conftest import live_server, served_process

pytestmark = pytest.mark.slow

TEXTS = ["what is the derivative of a matrix equation", "the court ruled for the plaintiff in the contract case"]


@pytest.fixture(scope="module")
def fuzzed_server(served_model: Path, jailbreak_model: Path, pii_model: Path):
    """Every endpoint backed by a model, so any 5xx is the service's own fault."""
    config = ServeConfig(models={"category": served_model, "jailbreak": jailbreak_model, "pii": pii_model,
                                 "topics": served_model}, max_text_chars=2000, max_body_bytes=64_000)
    with live_server(config) as url:
        yield url


def test_fuzzing_every_endpoint_gives_no_server_error(fuzzed_server: str) -> None:
    """Requests drawn from the OpenAPI schema, valid and invalid, on every operation."""
    schema = schemathesis.openapi.from_url(f"{fuzzed_server}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [o.label for o in operations]
    unsatisfiable: list[str] = []
    for operation in operations:
        has_input = operation.method.upper() == "POST"
        for mode in GenerationMode if has_input else [GenerationMode.POSITIVE]:
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def fuzz(case) -> None:
                response = case.call(timeout=30)
                where = f"{operation.label} ({mode.value}): {response.status_code} {response.text[:300]}"
                assert response.status_code < 500, where
                if response.status_code >= 400:  # every error in the documented shape
                    error = response.json()["error"]
                    assert isinstance(error["type"], str) and error["message"], where

            try:
                fuzz()
            except Unsatisfiable:  # the schema admits no invalid request here (a free string path segment)
                assert mode is GenerationMode.NEGATIVE, operation.label
                unsatisfiable.append(operation.label)
    assert len(unsatisfiable) <= 1, unsatisfiable


def test_hostile_bodies_get_json_errors_not_500(fuzzed_server: str) -> None:
    bodies = [b'{"text": "\\ud800"}', b'{"text": "\\udc00abc\\ud83d"}', b'{"text": "\\u0000"}', b"\xff\xfe{", b"[]",
              b'{"text": ["a"]}', b'{"messages": [{"role": "user", "content": "\\ud800"}]}', b"{" * 5000, b'"x"']
    for path in ("/api/v1/classify/intent", "/api/v1/classify/security", "/api/v1/classify/pii"):
        for body in bodies:
            response = httpx.post(fuzzed_server + path, content=body, headers={"content-type": "application/json"})
            assert 400 <= response.status_code < 500 or response.status_code == 200, (path, body, response.text)
            if response.status_code != 200:
                assert response.json()["error"]["type"]
    batch = httpx.post(f"{fuzzed_server}/api/v1/classify/batch",
                       content=b'{"texts": ["fine text", "\\ud800"], "task_type": "pii"}',
                       headers={"content-type": "application/json"})
    assert batch.status_code == 422 and batch.json()["error"]["type"] == "unencodable_text"


async def _storm(url: str, clients: int, requests_each: int) -> list[tuple[int | str, float]]:
    """`clients` concurrent clients, each sending `requests_each` requests one after another."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        async def one_client(i: int) -> list[tuple[int, float]]:
            answers = []
            for j in range(requests_each):
                started = time.perf_counter()
                try:
                    response = await client.post("/api/v1/classify/intent", json={"text": f"{TEXTS[j % 2]} {i}"})
                    answers.append((response.status_code, time.perf_counter() - started))
                except httpx.TransportError as exc:  # counted as a lost answer, never raised past the count
                    answers.append((f"{type(exc).__name__}: {exc}", time.perf_counter() - started))
            return answers

        results = await asyncio.gather(*(one_client(i) for i in range(clients)))
    return [answer for answers in results for answer in answers]


def test_hundreds_of_clients_get_answers_or_fast_refusals(served_model: Path) -> None:
    timeout_s = 1.0
    with served_process(["--category", str(served_model), "--max-queue", "64", "--request-timeout",
                         str(timeout_s)]) as (_, url):
        answers = asyncio.run(_storm(url, clients=300, requests_each=3))
        statuses = [status for status, _ in answers]
        assert len(answers) == 900 and set(statuses) <= {200, 429, 503}, Counter(statuses)
        assert sum(status == 200 for status in statuses) >= 100
        # Admitted requests wait at most the deadline for the model, then are scored and answered.
        # (Timed by the service: 300 Python clients on the same cores add their own delay.)
        metrics = httpx.get(f"{url}/metrics").text
        assert served_latency_quantile(metrics, "/api/v1/classify/intent", 0.99) <= 2 * timeout_s
        assert httpx.get(f"{url}/health").status_code == 200
        after = httpx.post(f"{url}/api/v1/classify/intent", json={"text": TEXTS[0]})
        assert after.status_code == 200  # the service recovers at once


def test_an_idle_connection_outlives_a_client_pools_expiry(served_model: Path) -> None:
    """The server keeps an idle connection open past httpx's 5 s expiry, so the client closes it first."""
    import http.client

    with served_process(["--category", str(served_model)]) as (_, url):
        connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
        for wait in (0, 6.5):
            time.sleep(wait)
            connection.request("POST", "/api/v1/classify/intent", body=f'{{"text": "{TEXTS[0]}"}}',
                               headers={"content-type": "application/json"})
            response = connection.getresponse()  # RemoteDisconnected had the server closed it
            assert response.status == 200, response.read()
            response.read()
        connection.close()


def _workers(parent: int) -> set[int]:
    """The server's worker processes (uvicorn spawns them with multiprocessing)."""
    import psutil

    workers = set()
    for child in psutil.Process(parent).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(child.cmdline()):
                workers.add(child.pid)
        except psutil.Error:  # gone meanwhile
            pass
    return workers


def test_a_killed_worker_is_replaced_and_no_answer_is_lost(served_model: Path) -> None:
    with served_process(["--category", str(served_model), "--workers", "2"]) as (server, url):
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while time.monotonic() < deadline:
            workers = _workers(server.pid)
            ready = sum(_answers(url) for _ in range(6))
            if len(workers) >= 2 and ready == 6:
                break
            time.sleep(0.2)
        assert len(workers) >= 2, workers
        outcomes: list[str] = []
        stop = threading.Event()

        def client() -> None:
            # A new connection per request, so that connections also reach the replacement while it starts.
            with httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as http:
                while not stop.is_set():
                    for attempt in range(5):  # a connection cut by the kill is retried, as a router does
                        try:
                            response = http.post("/api/v1/classify/intent", json={"text": TEXTS[0]})
                        except httpx.TransportError:
                            time.sleep(0.1)
                            continue
                        outcomes.append(str(response.status_code))
                        break
                    else:
                        outcomes.append("lost")

        threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(2)
            victim = sorted(workers)[0]
            os.kill(victim, signal.SIGKILL)
            replaced = False
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                now = _workers(server.pid)
                if victim not in now and len(now) >= 2:
                    replaced = True
                    break
                time.sleep(0.2)
            time.sleep(8)  # load goes on while the replacement loads its model and after
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        assert replaced, "the killed worker was not replaced"
        assert outcomes and set(outcomes) == {"200"}, {o: outcomes.count(o) for o in set(outcomes)}


def _answers(url: str) -> bool:
    try:
        return httpx.post(f"{url}/api/v1/classify/intent", json={"text": TEXTS[0]}, timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def test_graceful_shutdown_finishes_requests_in_flight(served_model: Path) -> None:
    texts = [f"{TEXTS[i % 2]} number {i}" for i in range(200)]  # 4 x 200 model inputs: within the queue
    finished: list[tuple[int, float]] = []
    with served_process(["--category", str(served_model)]) as (server, url):
        def big_batch() -> None:
            response = httpx.post(f"{url}/api/v1/classify/batch", json={"texts": texts, "task_type": "intent"},
                                  timeout=60)
            finished.append((response.status_code, time.monotonic()))

        threads = [threading.Thread(target=big_batch) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)  # every request is connected and being scored
        stopped_at = time.monotonic()
        server.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=60)
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn exits by the signal it stopped for
    assert [status for status, _ in finished] == [200] * 4
    assert any(at > stopped_at for _, at in finished), "no request was in flight at SIGTERM"
