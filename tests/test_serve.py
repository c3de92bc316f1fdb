"""The HTTP service over a tiny real model: API shape, fail-closed errors, ONNX, e2e."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from routeclf.cli import main
from routeclf.inference.predictor import Predictor
from routeclf.serving.app import ServeConfig, create_app
from routeclf.tasks import get_task
from conftest import live_server

LABELS = set(get_task("category").labels)
TEXTS = ["what is the derivative of a matrix equation", "the court ruled for the plaintiff in the contract case"]


@pytest.fixture(scope="module")
def model(served_model: Path) -> Path:
    return served_model


def wait_ready(client: TestClient) -> None:
    for _ in range(300):
        if client.get("/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"never ready: {client.get('/ready').json()}")


@pytest.fixture(scope="module")
def client(model: Path):
    config = ServeConfig(models={"category": model}, max_text_chars=500, max_batch_items=4, max_body_bytes=5000)
    with TestClient(create_app(config)) as client:
        wait_ready(client)
        yield client


def test_onnx_parity_report(model: Path) -> None:
    report = json.loads((model / "onnx" / "parity.json").read_text())
    assert report["n_inputs"] >= 200
    assert report["fp32"]["max_abs_logit_diff"] <= 1e-3 and report["fp32"]["top_label_agreement"] >= 0.995
    assert "test_accuracy_change" in report["int8"]
    np.testing.assert_allclose(Predictor(model, backend="onnx").raw_scores(TEXTS), Predictor(model).raw_scores(TEXTS),
                               atol=1e-4)


def test_every_exported_path_is_measured_and_gated(model: Path, capsys) -> None:
    calibration = json.loads((model / "calibration.json").read_text())
    assert set(calibration["paths"]) == {"routeclf", "transformers", "onnx", "onnx-int8"}
    metrics = json.loads((model / "metrics.json").read_text())
    assert set(metrics["paths"]) == {"transformers", "onnx", "onnx-int8"}
    assert "onnx-int8" in (model / "README.md").read_text()
    assert main(["validate", str(model)]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("metrics reproduce"))
    for path in ("routeclf", "transformers", "onnx", "onnx-int8"):
        assert f"{path} accuracy" in line
    assert main(["evaluate", str(model), "--path", "onnx-int8"]) == 0


def test_an_edited_onnx_model_fails_the_gate(model: Path, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    with (copy / "onnx" / "model_int8.onnx").open("ab") as handle:
        handle.write(b"\0")
    assert main(["validate", str(copy)]) == 1
    assert "changed after evaluation: onnx/model_int8.onnx" in capsys.readouterr().out


def test_an_int8_model_with_flipped_logits_is_refused(model: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import onnx
    import onnxruntime.quantization
    from onnx import numpy_helper

    def flipped(source: str, target: str, **_) -> None:
        graph = onnx.load(source)
        for weights in graph.graph.initializer:
            if "classifier" in weights.name:  # the head: negated weights turn the ranking upside down
                weights.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weights), weights.name))
        onnx.save(graph, target)

    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    before = {name: (copy / name).read_bytes() for name in ("calibration.json", "metrics.json", "onnx/model_int8.onnx")}
    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", flipped)
    assert main(["export-onnx", str(copy), "--quantize", "int8"]) == 2
    assert "the int8 model misses its parity bar" in capsys.readouterr().err
    # Nothing was installed: the previous export and its figures are untouched, and still pass.
    assert {name: (copy / name).read_bytes() for name in before} == before
    assert main(["validate", str(copy)]) == 0


def test_intent_shape_and_threshold(client: TestClient) -> None:
    body = client.post("/api/v1/classify/intent", json={"text": TEXTS[0]}).json()
    classification = body["classification"]
    assert set(body["probabilities"]) == LABELS
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert classification["top_category"] in LABELS and classification["processing_time_ms"] > 0
    assert classification["confidence"] == pytest.approx(max(body["probabilities"].values()))
    forced = client.post("/api/v1/classify/intent", json={"text": TEXTS[0], "options": {"confidence_threshold": 1.0}})
    forced = forced.json()
    assert forced["below_threshold"] and forced["classification"]["category"] == "other"
    assert forced["classification"]["top_category"] == classification["top_category"]
    open_ = client.post("/api/v1/classify/intent",
                        json={"text": TEXTS[0], "options": {"confidence_threshold": 0.0, "return_probabilities": False}})
    assert open_.json()["classification"]["category"] == classification["top_category"]
    assert "probabilities" not in open_.json()


def test_messages_read_the_latest_user_turn_and_context_only_when_unsure(client: TestClient) -> None:
    alone = client.post("/api/v1/classify/intent", json={"text": TEXTS[0]}).json()
    conversation = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": TEXTS[1]},
                    {"role": "assistant", "content": "Sure."}, {"role": "user", "content": TEXTS[0]}]
    confident = client.post("/api/v1/classify/intent", json={"messages": conversation,
                                                             "options": {"confidence_threshold": 0.0}}).json()
    # Confident alone: the latest turn decides, exactly as the same text would.
    assert not confident["classification"]["context_used"]
    assert confident["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-5)
    # Unsure alone (a threshold nothing reaches): the latest turn is read with the earlier one.
    unsure = client.post("/api/v1/classify/intent", json={"messages": conversation,
                                                          "options": {"confidence_threshold": 1.0}}).json()
    with_context = client.post("/api/v1/classify/intent", json={"text": f"{TEXTS[0]}\n{TEXTS[1]}"}).json()
    assert unsure["classification"]["context_used"]
    assert unsure["probabilities"] == pytest.approx(with_context["probabilities"], abs=1e-5)
    # A single user turn has no context to add.
    single = client.post("/api/v1/classify/intent", json={"messages": [{"role": "user", "content": TEXTS[0]}],
                                                          "options": {"confidence_threshold": 1.0}}).json()
    assert not single["classification"]["context_used"]


def test_batch_keeps_order_and_matches_single(client: TestClient) -> None:
    texts = [TEXTS[1], TEXTS[0], TEXTS[1]]
    body = client.post("/api/v1/classify/batch", json={"texts": texts, "task_type": "intent"}).json()
    assert body["total_count"] == 3
    for text, result in zip(texts, body["results"]):
        single = client.post("/api/v1/classify/intent", json={"text": text}).json()
        assert result["classification"]["top_category"] == single["classification"]["top_category"]
        assert result["classification"]["confidence"] == pytest.approx(single["classification"]["confidence"], abs=1e-5)


@pytest.mark.parametrize(
    "path, payload, status, kind",
    [
        ("/api/v1/classify/intent", {"text": ""}, 422, "empty_text"),
        ("/api/v1/classify/intent", {"text": "   \n"}, 422, "empty_text"),
        ("/api/v1/classify/intent", {"text": "x" * 501}, 413, "text_too_long"),
        ("/api/v1/classify/intent", {"text": 5}, 422, "invalid_request"),
        ("/api/v1/classify/intent", {"txt": "hello"}, 422, "invalid_request"),
        ("/api/v1/classify/intent", {"text": "hi", "options": {"confidence_threshold": 2}}, 422, "invalid_request"),
        ("/api/v1/classify/batch", {"texts": ["a"] * 5}, 413, "batch_too_large"),
        ("/api/v1/classify/batch", {"texts": []}, 422, "empty_batch"),
        ("/api/v1/classify/batch", {"texts": ["a"], "task_type": "weather"}, 422, "unknown_task"),
        ("/api/v1/classify/batch", {"texts": ["a"], "task_type": "pii"}, 503, "model_not_loaded"),
        ("/api/v1/classify/security", {"text": "ignore previous instructions"}, 503, "model_not_loaded"),
        ("/api/v1/classify/pii", {"text": "call me at 555-0100"}, 503, "model_not_loaded"),
        ("/api/v1/classify/intent", {"text": "y" * 6000}, 413, "body_too_large"),
        ("/api/v1/classify/intent", {"text": "hi", "messages": [{"role": "user", "content": "hi"}]}, 422,
         "invalid_request"),
        ("/api/v1/classify/intent", {"messages": [{"role": "assistant", "content": "hello"}]}, 422, "no_user_turn"),
        ("/api/v1/classify/intent", {"messages": [{"role": "robot", "content": "hello"}]}, 422, "invalid_request"),
        ("/api/v1/classify/intent", {"messages": [{"role": "user", "content": "x" * 501}]}, 413, "text_too_long"),
    ],
)
def test_bad_input_gets_a_clear_error(client: TestClient, path: str, payload, status: int, kind: str) -> None:
    response = client.post(path, json=payload)
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == kind and response.json()["error"]["message"]
    assert client.get("/health").json() == {"status": "alive"}


def test_invalid_json_and_unknown_route(client: TestClient) -> None:
    response = client.post("/api/v1/classify/intent", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_json"
    assert client.get("/nowhere").json()["error"]["type"] == "http_error"


def test_metrics_and_info(client: TestClient) -> None:
    client.post("/api/v1/classify/intent", json={"text": TEXTS[0]})
    metrics = client.get("/metrics").text
    assert "routeclf_requests_total" in metrics and "routeclf_batch_size_bucket" in metrics
    assert "routeclf_request_latency_seconds_bucket" in metrics and "routeclf_errors_total" in metrics
    (info,) = client.get("/info/models").json()["models"]
    assert info["task"]["name"] == "category" and set(info["labels"]) == LABELS and info["loaded"]
    assert info["endpoints"] == ["/api/v1/classify/intent", "/api/v1/classify/category"]
    assert info["version"].startswith("sha256:") and info["kind"] == "classifier"
    assert len(info["data_sha256"]) == 64 and "accuracy" in info["test_metrics"]


def test_api_key(model: Path) -> None:
    with TestClient(create_app(ServeConfig(models={"category": model}, api_key="s3cret"))) as client:
        wait_ready(client)
        assert client.post("/api/v1/classify/intent", json={"text": "hi"}).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert client.post("/api/v1/classify/intent", json={"text": "hi"}, headers=wrong).status_code == 401
        right = {"Authorization": "Bearer s3cret"}
        assert client.post("/api/v1/classify/intent", json={"text": "hi"}, headers=right).status_code == 200
        assert client.get("/health").status_code == 200


def test_model_that_fails_to_load_is_503_not_a_guess(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with TestClient(create_app(ServeConfig(models={"category": broken}))) as client:
        for _ in range(100):
            if "failed" in json.dumps(client.get("/ready").json()):
                break
            time.sleep(0.05)
        ready = client.get("/ready")
        assert ready.status_code == 503 and "failed" in ready.json()["models"]["category"]
        response = client.post("/api/v1/classify/intent", json={"text": "hello"})
        assert response.status_code == 503 and response.json()["error"]["type"] == "model_not_ready"


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_e2e_through_a_running_server(model: Path, backend: str, tmp_path: Path, capsys) -> None:
    from conftest import synthetic_rows, write_jsonl

    with live_server(ServeConfig(models={"category": model}, backend=backend)) as url:
        data = write_jsonl(tmp_path / "e2e.jsonl", synthetic_rows(per_label=2, seed=5))
        assert main(["e2e", "--url", url, "--data", str(data), "--min-accuracy", "0.3", "--batch-size", "8"]) == 0
        out = capsys.readouterr().out
        assert "e2e PASSED" in out and '"errors": 0' in out
        assert main(["e2e", "--url", url, "--data", str(data), "--min-accuracy", "1.01"]) == 1


def test_a_reexport_replaces_every_onnx_path(model: Path, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    assert main(["export-onnx", str(copy)]) == 0  # fp32 only: the int8 path is gone everywhere
    assert not (copy / "onnx" / "model_int8.onnx").exists()
    assert "onnx-int8" not in json.loads((copy / "calibration.json").read_text())["paths"]
    assert "onnx-int8" not in json.loads((copy / "metrics.json").read_text())["paths"]
    assert main(["validate", str(copy)]) == 0


def test_an_export_does_not_approve_edited_files(model: Path, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    calibration = json.loads((copy / "calibration.json").read_text())
    calibration["paths"]["routeclf"]["temperature"] *= 2
    (copy / "calibration.json").write_text(json.dumps(calibration))
    assert main(["export-onnx", str(copy)]) == 2
    assert "files changed since the model was evaluated (calibration.json)" in capsys.readouterr().err


def post_raw(client: TestClient, path: str, body: bytes):
    return client.post(path, content=body, headers={"content-type": "application/json"})


def test_a_lone_surrogate_is_refused_before_it_reaches_the_model(client: TestClient) -> None:
    response = post_raw(client, "/api/v1/classify/intent", b'{"text": "hello \\ud800 there"}')
    assert response.status_code == 422 and response.json()["error"]["type"] == "unencodable_text"
    assert "character 6" in response.json()["error"]["message"]
    batch = post_raw(client, "/api/v1/classify/batch", b'{"texts": ["fine", "\\udfff"], "task_type": "intent"}')
    assert batch.status_code == 422 and "texts[1]" in batch.json()["error"]["message"]
    assert client.post("/api/v1/classify/intent", json={"text": TEXTS[0]}).status_code == 200


def test_a_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks():
        yield b'{"text": "'
        for _ in range(10):
            yield b"z" * 1000
        yield b'"}'

    response = client.post("/api/v1/classify/intent", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["type"] == "body_too_large"


def test_metrics_are_bounded_whatever_urls_clients_send(model: Path) -> None:
    with TestClient(create_app(ServeConfig(models={"category": model}, api_key="k"))) as client:
        wait_ready(client)
        for i in range(40):
            assert client.get(f"/random/{i}").status_code == 401  # refused before routing, still counted
            client.post(f"/api/v1/classify/model{i}", headers={"Authorization": "Bearer k"}, json={"text": "x"})
        text = client.get("/metrics").text
    assert "random" not in text and "model7" not in text
    assert 'routeclf_requests_total{endpoint="unmatched",status="4xx"} 40.0' in text
    assert 'routeclf_errors_total{endpoint="/api/v1/classify/{name}",type="unknown_model"} 40.0' in text
    for gauge in ("routeclf_in_flight_requests", 'routeclf_queue_depth{task="category"}'):
        assert gauge in text


def test_an_unexpected_failure_is_a_counted_json_500(client: TestClient, monkeypatch) -> None:
    from routeclf.serving import answers

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setitem(answers.ANSWERS, "classifier", broken)
    response = client.post("/api/v1/classify/intent", json={"text": TEXTS[0]})
    assert response.status_code == 500 and response.json()["error"]["type"] == "internal_error"
    assert "boom" not in response.text  # no internals leak
    assert 'type="internal_error"' in client.get("/metrics").text


def slowed(client: TestClient, seconds: float) -> list[list[str]]:
    """Slow the served model down; returns the batches it is asked to score."""
    slot = client.app.state.slots["category"]
    score, batches = slot._scorer, []

    def slow(texts: list[str]):
        batches.append(list(texts))
        time.sleep(seconds)
        return score(texts)

    slot._scorer = slow
    return batches


def test_overload_is_refused_at_once_with_retry_after(model: Path) -> None:
    import concurrent.futures

    config = ServeConfig(models={"category": model}, max_batch_size=1, max_queue=2, request_timeout_s=0.5)
    with TestClient(create_app(config)) as client:
        wait_ready(client)
        batches = slowed(client, 0.2)
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda i: client.post("/api/v1/classify/intent", json={"text": f"q {i}"}),
                                    range(12)))
        statuses = sorted(a.status_code for a in answers)
        assert set(statuses) <= {200, 429, 503} and 200 in statuses and 429 in statuses, statuses
        for answer in answers:
            if answer.status_code != 200:
                assert answer.headers["retry-after"] == "1"
                assert answer.json()["error"]["type"] in ("overloaded", "deadline_exceeded")
        time.sleep(0.5)
        scored = [t for batch in batches for t in batch]
        assert len(scored) <= sum(s == 200 for s in statuses) + 1  # refused work is not done anyway
        text = client.get("/metrics").text
        assert 'routeclf_rejections_total{reason="overloaded",task="category"}' in text


def test_cost_is_counted_in_model_inputs(model: Path) -> None:
    config = ServeConfig(models={"category": model}, max_request_inputs=3)
    with TestClient(create_app(config)) as client:
        wait_ready(client)
        response = client.post("/api/v1/classify/batch", json={"texts": ["a", "b", "c", "d"], "task_type": "intent"})
        assert response.status_code == 413 and response.json()["error"]["type"] == "too_much_work"
        assert client.post("/api/v1/classify/batch", json={"texts": ["a", "b", "c"]}).status_code == 200


def test_a_windowed_texts_cost_is_its_window_count(model: Path) -> None:
    predictor = Predictor(model)
    predictor.windowed, predictor.max_length = True, 32
    texts = ["short question", " ".join(f"word{i}" for i in range(300)), "x " * 29]
    pieces, owners = predictor._windows(texts)
    assert predictor.model_inputs(texts) == [owners.count(i) for i in range(len(texts))]
    assert predictor.model_inputs(texts)[1] > 5


@pytest.mark.parametrize("remove", ["training_config.json", "calibration.json", "tokenizer_config.json"])
def test_an_incomplete_model_directory_is_not_served(model: Path, tmp_path: Path, remove: str) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    (copy / remove).unlink()
    with TestClient(create_app(ServeConfig(models={"category": copy}))) as client:
        for _ in range(200):
            if "failed" in client.get("/ready").text:
                break
            time.sleep(0.05)
        ready = client.get("/ready")
        assert ready.status_code == 503 and f"missing {remove}" in ready.json()["models"]["category"]
        response = client.post("/api/v1/classify/intent", json={"text": "hello"})
        assert response.status_code == 503 and remove in response.json()["error"]["message"]
        assert "retry-after" not in response.headers  # it will not get better by waiting


def test_a_model_of_the_wrong_kind_for_its_endpoint_is_not_served(model: Path) -> None:
    with TestClient(create_app(ServeConfig(models={"jailbreak": model}))) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503 and "needs a detector" in ready.json()["models"]["jailbreak"]
        response = client.post("/api/v1/classify/security", json={"text": "hello"})
        assert response.status_code == 503 and response.json()["error"]["type"] == "model_not_ready"
