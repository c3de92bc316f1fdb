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
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from routeclf.inference.conversation import read_messages
from routeclf.inference.predictor import BACKEND_PATHS
from routeclf.serving.answers import ANSWERS, OPTIONS, REQUESTS, PiiOptions
from routeclf.serving.models import ROLE_ENDPOINTS, ModelSlot
from routeclf.tasks.base import NAME_PATTERN, RESERVED_NAMES


@dataclass
class ServeConfig:
    models: dict[str, Path] = field(default_factory=dict)  # model name -> model directory
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


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr]
    task_type: StrictStr = "intent"  # a role endpoint (intent, security, pii) or a served model's name
    options: dict[str, Any] | None = None  # the model's options (as in its single-text endpoint)


def check_model_names(names: list[str]) -> None:
    """Model names are URL path segments; a few are the semantic router's own endpoints."""
    for name in names:
        if name in RESERVED_NAMES:
            hint = {"intent": "--category DIR", "security": "--jailbreak DIR"}.get(name, "another name")
            raise ValueError(f"model name {name!r} is reserved for the router's own endpoint; use {hint}")
        if not NAME_PATTERN.match(name):
            raise ValueError(f"model name {name!r}: use lower-case letters, digits, '-' or '_'")


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


def create_app(config: ServeConfig) -> FastAPI:
    check_model_names(list(config.models))
    metrics = ServiceMetrics()
    slots = {
        name: ModelSlot(name, directory, config.backend, config.max_batch_size, config.max_wait_ms,
                        metrics.batch_size.labels(name).observe)
        for name, directory in config.models.items()
    }

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
                  description="Request classification for LLM routers: any set of classifiers, detectors and "
                              "taggers, each at /api/v1/classify/NAME; intent, security and pii as in the vLLM "
                              "semantic router.")
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

    served = ", ".join([*(e for e, (m, _) in ROLE_ENDPOINTS.items() if m in slots and e != m), *slots])

    def slot_for(name: str, unknown: tuple[int, str] = (404, "unknown_model")) -> ModelSlot:
        """A role endpoint (intent, security, pii) or a served model's name -> its model."""
        model = ROLE_ENDPOINTS[name][0] if name in ROLE_ENDPOINTS else name
        if model in slots:
            return slots[model]
        if name in ROLE_ENDPOINTS:
            raise ApiError(503, "model_not_loaded",
                           f"no {model} model is configured on this server (routeclf serve --{model} DIR)")
        raise ApiError(*unknown, f"no model named {name!r} is served here; served: {served or 'none'}")

    def ready_slot(slot: ModelSlot) -> ModelSlot:
        if slot.predictor is None or slot.batcher is None:
            raise ApiError(503, "model_not_ready", f"the {slot.name} model is not loaded yet" +
                           (f" ({slot.error})" if slot.error else ""))
        return slot

    def check_entity_types(slot: ModelSlot, options: PiiOptions | None) -> None:
        """Refuse unknown or empty entity type lists before any scoring."""
        if options is None or options.entity_types is None:
            return
        known = slot.predictor.entity_types
        unknown = sorted(set(options.entity_types) - set(known))
        if unknown or not options.entity_types:
            listed = f"unknown entity types {', '.join(unknown)}" if unknown else "entity_types is empty"
            raise ApiError(422, "unknown_entity_type", f"{listed}; the model finds {', '.join(known)}")

    async def classify(slot: ModelSlot, texts: list[str], options: BaseModel | None, started: float) -> list[dict]:
        """The one scoring path of every endpoint: checks, the micro-batcher, the kind's answer."""
        ready_slot(slot)
        check_texts(texts)
        if slot.kind == "tagger":
            check_entity_types(slot, options)
        scores = await slot.batcher.submit(texts)
        elapsed = (time.perf_counter() - started) * 1000
        answer = ANSWERS[slot.kind]
        return [answer(slot.predictor, text, x, options, elapsed) | {"model": slot.identity()}
                for text, x in zip(texts, scores)]

    async def classify_conversation(slot: ModelSlot, messages: list, options: BaseModel | None,
                                    started: float) -> dict[str, Any]:
        """The latest user turn decides when it is confident; otherwise it is read with the earlier
        user turns (see `routeclf.inference.conversation`)."""
        try:
            conversation = read_messages(messages)
        except ValueError as exc:
            raise ApiError(422, "no_user_turn", str(exc)) from None
        (result,) = await classify(slot, [conversation.latest], options, started)
        context_used = bool(result["below_threshold"]) and conversation.context is not None
        if context_used:
            (result,) = await classify(slot, [conversation.context], options, started)
        result["classification"]["context_used"] = context_used
        return result

    def single_text_endpoint(name: str, request_type: type[BaseModel]):
        async def endpoint(body) -> dict[str, Any]:
            if getattr(body, "messages", None) is not None:
                return await classify_conversation(slot_for(name), body.messages, body.options, time.perf_counter())
            (result,) = await classify(slot_for(name), [body.text], body.options, time.perf_counter())
            return result

        # The body's type is chosen per model, so it is set here rather than written in the signature.
        endpoint.__annotations__ = {"body": request_type, "return": dict[str, Any]}
        return endpoint

    # The semantic router's endpoints, then one per served model under its own name.
    for endpoint_name, (_, kind) in ROLE_ENDPOINTS.items():
        app.add_api_route(f"/api/v1/classify/{endpoint_name}", single_text_endpoint(endpoint_name, REQUESTS[kind]),
                          methods=["POST"], name=f"classify_{endpoint_name}")

    @app.post("/api/v1/classify/batch")
    async def classify_batch(body: BatchRequest) -> dict[str, Any]:
        started = time.perf_counter()
        # An unknown or unconfigured model is named before anything else.
        slot = slot_for(body.task_type, unknown=(422, "unknown_task"))
        if not body.texts:
            raise ApiError(422, "empty_batch", "texts is empty")
        if len(body.texts) > config.max_batch_items:
            raise ApiError(413, "batch_too_large", f"{len(body.texts)} texts; the limit is {config.max_batch_items}")
        ready_slot(slot)
        check_texts(body.texts)
        try:
            options = OPTIONS[slot.kind].model_validate(body.options) if body.options is not None else None
        except ValidationError as exc:
            raise RequestValidationError([dict(e, loc=("body", "options", *e["loc"])) for e in exc.errors()]) from exc
        results = await classify(slot, body.texts, options, started)
        return {"results": results, "total_count": len(results), "task_type": body.task_type,
                "model": slot.identity(), "processing_time_ms": round((time.perf_counter() - started) * 1000, 3)}

    for name, slot in slots.items():
        if name not in ROLE_ENDPOINTS:
            app.add_api_route(f"/api/v1/classify/{name}", single_text_endpoint(name, REQUESTS[slot.kind or "classifier"]),
                              methods=["POST"], name=f"classify_{name}")

    @app.post("/api/v1/classify/{name}")
    async def classify_unknown(name: str) -> None:
        slot_for(name)  # names every served model

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        ok = bool(slots) and all(s.predictor is not None for s in slots.values())
        return JSONResponse({"ready": ok, "models": {n: s.state for n, s in slots.items()}}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/info/models")
    async def info() -> dict[str, Any]:
        from routeclf.artifact.writer import read_json

        models = []
        for name, slot in slots.items():
            endpoints = [f"/api/v1/classify/{e}" for e, (m, _) in ROLE_ENDPOINTS.items() if m == name and e != name]
            entry: dict[str, Any] = {
                "name": name, "endpoints": [*endpoints, f"/api/v1/classify/{name}"], "directory": str(slot.directory),
                "loaded": slot.predictor is not None, "state": slot.state, "version": slot.version,
                "backend": slot.served_backend,
            }
            if slot.task is not None:
                entry.update(kind=slot.task.kind, labels=list(slot.task.labels), task=slot.task.to_json())
            with contextlib.suppress(OSError, ValueError, KeyError):
                training = read_json(slot.directory / "training_config.json")
                saved = read_json(slot.directory / "metrics.json")
                # The figures of the path this server answers with.
                test = saved["test"] if slot.served_backend == "torch" else \
                    saved["paths"][BACKEND_PATHS[slot.served_backend]]["test"]
                entry.update(
                    base_model=training["base_model"]["name"],
                    data_sha256=read_json(slot.directory / "split.json")["data_sha256"],
                    test_metrics={k: test[k] for k in ("n", "accuracy", "macro_f1", "micro_f1", "n_entities", "ece",
                                                       "abstention") if k in test},
                )
            models.append(entry)
        return {"models": models}

    app.add_middleware(Observe, metrics=metrics, api_key=config.api_key)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    return app


def api_key_from_env(flag: str | None) -> str | None:
    return flag or os.environ.get("ROUTECLF_API_KEY") or None

