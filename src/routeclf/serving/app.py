"""The HTTP service: a thin layer over the same Predictor, in the vLLM semantic router's API shape."""

from __future__ import annotations

import contextlib
import hmac
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from routeclf.serving.batching import MicroBatcher

# Tasks the service knows, by the name the batch endpoint uses; a task's model is optional.
TASK_TYPES = {"intent": "category", "security": "jailbreak", "pii": "pii"}
WARMUP_TEXTS = ["warm-up request", "What is the derivative of x squared?"]


@dataclass
class ServeConfig:
    models: dict[str, Path] = field(default_factory=dict)  # task_type -> artifact directory
    backend: str = "torch"
    api_key: str | None = None
    max_text_chars: int = 32_000
    max_batch_items: int = 256
    max_body_bytes: int = 4 * 1024 * 1024
    max_batch_size: int = 32
    max_wait_ms: float = 0.0


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def error_response(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    return_probabilities: bool = True
    confidence_threshold: float | None = Field(default=None, ge=0.0, le=1.0)


class PiiOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entity_types: list[StrictStr] | None = None
    confidence_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    mask: bool = True


class IntentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: StrictStr
    options: Options | None = None


class PiiRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: StrictStr
    options: PiiOptions | None = None


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr]
    task_type: StrictStr = "intent"
    options: dict[str, Any] | None = None  # the task's options (as in its single-text endpoint)


class BodyLimit:
    """Refuse request bodies over `limit` bytes, also when no Content-Length is sent."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        too_large = error_response(413, "body_too_large", f"request body over {self.limit} bytes")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_large(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise ApiError(413, "body_too_large", f"request body over {self.limit} bytes")
            return message

        try:
            await self.app(scope, limited_receive, send)
        except ApiError as exc:
            await error_response(exc.status, exc.kind, exc.message)(scope, receive, send)


OPEN_PATHS = ("/health", "/ready", "/metrics", "/docs", "/openapi.json")


class Observe:
    """Counts and times every request, and checks the bearer token when an API key is set.

    A plain ASGI middleware: Starlette's `BaseHTTPMiddleware` costs a task and a stream per request.
    """

    def __init__(self, app, metrics: "ServiceMetrics", api_key: str | None) -> None:
        self.app, self.metrics, self.api_key = app, metrics, api_key

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path = scope["path"]
        if self.api_key and path not in OPEN_PATHS:
            header = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
            token = header[7:] if header.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), self.api_key.encode()):
                self.metrics.requests.labels(path, "401").inc()
                self.metrics.errors.labels(path, "unauthorized").inc()
                return await error_response(401, "unauthorized", "missing or wrong bearer token")(scope, receive, send)
        status = 500

        async def observed_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)
            self.metrics.requests.labels(path, str(status)).inc()


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("routeclf_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.errors = Counter("routeclf_errors", "Error responses", ["endpoint", "type"], registry=self.registry)
        self.latency = Histogram(
            "routeclf_request_latency_seconds", "Request latency", ["endpoint"], registry=self.registry,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
        )
        self.batch_size = Histogram(
            "routeclf_batch_size", "Texts per model call", ["task"], registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )


class ModelSlot:
    """One task's model: loaded and warmed in the background, scored through a micro-batcher."""

    def __init__(self, task_type: str, directory: Path, config: ServeConfig, metrics: ServiceMetrics) -> None:
        self.task_type, self.directory, self.config, self.metrics = task_type, directory, config, metrics
        self.predictor = None
        self.error: str | None = None
        self.batcher: MicroBatcher | None = None
        self._scorer: Any = None

    def load(self) -> None:
        from routeclf.inference import load_predictor
        from routeclf.tasks import get_task

        try:
            expected = get_task(TASK_TYPES[self.task_type])
            if expected.problem_type == "token":  # token tasks are served with torch (no ONNX export yet)
                predictor = load_predictor(self.directory, "token")
            else:
                predictor = load_predictor(self.directory, "sequence", backend=self.config.backend)
            if predictor.task_name not in (None, expected.name):
                raise ValueError(f"{self.directory} holds a {predictor.task_name} model, not {expected.name}")
            self._scorer = predictor.word_scores if expected.problem_type == "token" else predictor.predict_proba
            self._scorer(WARMUP_TEXTS)
            self.predictor = predictor
        except Exception as exc:  # reported by /ready and by 503s; the service stays up
            self.error = f"{type(exc).__name__}: {exc}"

    def start(self) -> None:
        self.batcher = MicroBatcher(
            self._score, self.config.max_batch_size, self.config.max_wait_ms,
            on_batch=self.metrics.batch_size.labels(self.task_type).observe,
        )
        self.batcher.start()

    def _score(self, texts: list[str]) -> list[Any]:
        """Per text: class probabilities, or (token tasks) word scores that each request then
        turns into entities with its own options."""
        return list(self._scorer(texts))

    async def probabilities(self, texts: list[str]) -> list[Any]:
        if self.predictor is None or self.batcher is None:
            raise ApiError(503, "model_not_ready", f"the {self.task_type} model is not loaded yet" +
                           (f" ({self.error})" if self.error else ""))
        return await self.batcher.submit(texts)


def create_app(config: ServeConfig) -> FastAPI:
    metrics = ServiceMetrics()
    slots = {task_type: ModelSlot(task_type, directory, config, metrics) for task_type, directory in config.models.items()}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        for slot in slots.values():
            slot.start()
        loader = threading.Thread(target=lambda: [slot.load() for slot in slots.values()], daemon=True)
        loader.start()
        yield
        for slot in slots.values():
            if slot.batcher is not None:
                await slot.batcher.stop()

    app = FastAPI(title="routeclf", version="0.1.0", lifespan=lifespan,
                  description="Request classification for LLM routers: category, jailbreak and PII.")
    app.state.slots = slots

    def failed(request: Request, status: int, kind: str, message: str) -> JSONResponse:
        metrics.errors.labels(request.url.path, kind).inc()
        return error_response(status, kind, message)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return failed(request, exc.status, exc.kind, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return failed(request, 400, "invalid_json", "the request body is not valid JSON")
        detail = "; ".join(f"{'.'.join(str(x) for x in p.get('loc', ())[1:]) or 'body'}: {p.get('msg')}" for p in problems)
        return failed(request, 422, "invalid_request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return failed(request, exc.status_code, "http_error", str(exc.detail))

    def check_texts(texts: list[str]) -> None:
        for i, text in enumerate(texts):
            where = f"texts[{i}]" if len(texts) > 1 else "text"
            if not text.strip():
                raise ApiError(422, "empty_text", f"{where} is empty")
            if len(text) > config.max_text_chars:
                raise ApiError(413, "text_too_long",
                               f"{where} has {len(text)} characters; the limit is {config.max_text_chars}")

    def slot_for(task_type: str) -> ModelSlot:
        if task_type not in TASK_TYPES:
            raise ApiError(422, "unknown_task", f"unknown task_type {task_type!r}; use one of {', '.join(TASK_TYPES)}")
        if task_type not in slots:
            raise ApiError(503, "model_not_loaded", f"no {TASK_TYPES[task_type]} model is configured on this server")
        return slots[task_type]

    # Each task's answer for one text, from its scores and the request's options.
    def intent_result(slot: ModelSlot, text: str, probabilities, options: Options | None,
                      elapsed_ms: float) -> dict[str, Any]:
        predictor = slot.predictor
        options = options or Options()
        threshold = predictor.threshold if options.confidence_threshold is None else options.confidence_threshold
        top = int(probabilities.argmax())
        confidence = float(probabilities[top])
        below = confidence < threshold
        result: dict[str, Any] = {
            "classification": {
                "category": predictor.fallback_label if below and predictor.fallback_label else predictor.labels[top],
                "top_category": predictor.labels[top],
                "confidence": confidence,
                "threshold": threshold,
                "processing_time_ms": round(elapsed_ms, 3),
            },
            "below_threshold": below,
        }
        if options.return_probabilities:
            result["probabilities"] = {label: float(p) for label, p in zip(predictor.labels, probabilities)}
        return result

    def security_result(slot: ModelSlot, text: str, probabilities, options: Options | None,
                        elapsed_ms: float) -> dict[str, Any]:
        predictor = slot.predictor
        threshold = predictor.threshold
        if options is not None and options.confidence_threshold is not None:
            threshold = options.confidence_threshold
        risk = float(probabilities[predictor.labels.index(predictor.positive_label)])
        is_jailbreak = risk >= threshold
        return {
            "is_jailbreak": is_jailbreak,
            "risk_score": risk,
            "confidence": risk if is_jailbreak else 1 - risk,
            "threshold": threshold,
            "processing_time_ms": round(elapsed_ms, 3),
        }

    def pii_result(slot: ModelSlot, text: str, scores, options: PiiOptions | None, elapsed_ms: float) -> dict[str, Any]:
        from dataclasses import asdict

        from routeclf.inference.entities import mask

        predictor = slot.predictor
        options = options or PiiOptions()
        (entities,) = predictor.entities([text], options.confidence_threshold, options.entity_types, [scores])
        return {
            "has_pii": bool(entities),
            "entities": [asdict(e) for e in entities],
            "masked_text": mask(text, entities) if options.mask else None,
            "threshold": predictor.threshold if options.confidence_threshold is None else options.confidence_threshold,
            "processing_time_ms": round(elapsed_ms, 3),
        }

    def check_entity_types(slot: ModelSlot, options: PiiOptions | None) -> None:
        """Refuse unknown or empty entity type lists before any scoring."""
        if slot.predictor is None or options is None or options.entity_types is None:
            return
        known = slot.predictor.entity_types
        unknown = sorted(set(options.entity_types) - set(known))
        if unknown or not options.entity_types:
            listed = f"unknown entity types {', '.join(unknown)}" if unknown else "entity_types is empty"
            raise ApiError(422, "unknown_entity_type", f"{listed}; the model finds {', '.join(known)}")

    RESULTS = {"intent": intent_result, "security": security_result, "pii": pii_result}
    OPTIONS = {"intent": Options, "security": Options, "pii": PiiOptions}

    async def classify(task_type: str, texts: list[str], options: BaseModel | None, started: float) -> list[dict]:
        """The one scoring path of every endpoint: checks, the micro-batcher, each task's answer."""
        slot = slot_for(task_type)
        check_texts(texts)
        if task_type == "pii":
            check_entity_types(slot, options)
        scores = await slot.probabilities(texts)
        elapsed = (time.perf_counter() - started) * 1000
        return [RESULTS[task_type](slot, text, x, options, elapsed) for text, x in zip(texts, scores)]

    @app.post("/api/v1/classify/intent")
    async def classify_intent(body: IntentRequest) -> dict[str, Any]:
        (result,) = await classify("intent", [body.text], body.options, time.perf_counter())
        return result

    @app.post("/api/v1/classify/security")
    async def classify_security(body: IntentRequest) -> dict[str, Any]:
        (result,) = await classify("security", [body.text], body.options, time.perf_counter())
        return result

    @app.post("/api/v1/classify/pii")
    async def classify_pii(body: PiiRequest) -> dict[str, Any]:
        (result,) = await classify("pii", [body.text], body.options, time.perf_counter())
        return result

    @app.post("/api/v1/classify/batch")
    async def classify_batch(body: BatchRequest) -> dict[str, Any]:
        started = time.perf_counter()
        slot_for(body.task_type)  # an unknown or unconfigured task is named before anything else
        if not body.texts:
            raise ApiError(422, "empty_batch", "texts is empty")
        if len(body.texts) > config.max_batch_items:
            raise ApiError(413, "batch_too_large", f"{len(body.texts)} texts; the limit is {config.max_batch_items}")
        check_texts(body.texts)
        try:
            options = OPTIONS[body.task_type].model_validate(body.options) if body.options is not None else None
        except ValidationError as exc:
            raise RequestValidationError([dict(e, loc=("body", "options", *e["loc"])) for e in exc.errors()]) from exc
        results = await classify(body.task_type, body.texts, options, started)
        return {"results": results, "total_count": len(results), "task_type": body.task_type,
                "processing_time_ms": round((time.perf_counter() - started) * 1000, 3)}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        states = {t: ("ready" if s.predictor else f"failed: {s.error}" if s.error else "loading") for t, s in slots.items()}
        ok = bool(slots) and all(s.predictor is not None for s in slots.values())
        return JSONResponse({"ready": ok, "models": states}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/info/models")
    async def info() -> dict[str, Any]:
        from routeclf.artifact.writer import read_json

        models = []
        for task_type, slot in slots.items():
            entry: dict[str, Any] = {"task_type": task_type, "directory": str(slot.directory), "loaded": slot.predictor is not None}
            with contextlib.suppress(OSError, ValueError, KeyError):
                training = read_json(slot.directory / "training_config.json")
                test = read_json(slot.directory / "metrics.json")["test"]
                entry.update(
                    task=training["task"], labels=training["labels"], base_model=training["base_model"]["name"],
                    data_sha256=read_json(slot.directory / "split.json")["data_sha256"],
                    backend="torch" if training.get("problem_type") == "token" else config.backend,
                    test_metrics={k: test[k] for k in ("n", "accuracy", "macro_f1", "micro_f1", "n_entities", "ece")
                                  if k in test},
                )
            models.append(entry)
        return {"models": models}

    app.add_middleware(Observe, metrics=metrics, api_key=config.api_key)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    return app


def api_key_from_env(flag: str | None) -> str | None:
    return flag or os.environ.get("ROUTECLF_API_KEY") or None

