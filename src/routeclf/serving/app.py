"""The HTTP service: a thin layer over the same Predictor, in the vLLM semantic router's API shape."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from routeclf.artifact.onnx import THREADS_ENV
from routeclf.inference.conversation import read_messages, whole_conversation
from routeclf.inference.predictor import BACKEND_PATHS
from routeclf.serving.answers import ANSWERS, OPTIONS, REQUESTS, PiiOptions
from routeclf.serving.batching import DeadlineExceeded, Overloaded, ScoringFailed
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
    max_batch_size: int = 32  # model inputs (windows) per model call
    max_wait_ms: float = 0.0
    max_queue: int = 1024  # model inputs waiting per model; past it: 429
    max_request_inputs: int = 512  # model inputs one request may cost; past it: 413
    request_timeout_s: float = 5.0  # not scored by then: 503
    retry_after_s: int = 1

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "models": {name: str(path) for name, path in self.models.items()}}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> ServeConfig:
        return cls(**{**values, "models": {name: Path(path) for name, path in values["models"].items()}})


log = logging.getLogger("routeclf.serve")

# Every `error.type` the service answers with (metric labels are drawn from this set alone).
ERROR_TYPES = frozenset({
    "unauthorized", "body_too_large", "invalid_json", "invalid_request", "http_error", "empty_text", "text_too_long",
    "unencodable_text", "batch_too_large", "empty_batch", "unknown_task", "unknown_model", "model_not_loaded",
    "model_not_ready", "no_user_turn", "unknown_entity_type", "too_much_work", "overloaded", "deadline_exceeded",
    "client_gone", "scoring_failed", "internal_error",
})


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        assert kind in ERROR_TYPES, kind
        self.status, self.kind, self.message, self.retry_after_s = status, kind, message, retry_after_s


def error_response(status: int, kind: str, message: str, retry_after_s: int | None = None) -> JSONResponse:
    """Every error the service gives, whatever its origin, has this shape."""
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr]
    task_type: StrictStr = "intent"  # a role endpoint (intent, security, pii) or a served model's name
    options: dict[str, Any] | None = None  # the model's options (as in its single-text endpoint)


class ClientGone(Exception):
    """The client disconnected while its request waited."""


async def until_disconnected(request: Request, work):
    """Await `work` unless the client disconnects first; then `work` is cancelled (its texts leave
    the queue unscored) and `ClientGone` is raised."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ClientGone
    return task.result()


def check_model_names(names: list[str]) -> None:
    """Model names are URL path segments; a few are the semantic router's own endpoints."""
    for name in names:
        if name in RESERVED_NAMES:
            hint = {"intent": "--category DIR", "security": "--jailbreak DIR"}.get(name, "another name")
            raise ValueError(f"model name {name!r} is reserved for the router's own endpoint; use {hint}")
        if not NAME_PATTERN.match(name):
            raise ValueError(f"model name {name!r}: use lower-case letters, digits, '-' or '_'")


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, also when no Content-Length is sent: the
    body is read here, then handed on."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = error_response(413, "body_too_large", f"request body over {self.limit} bytes")
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_large(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its request
            body += message.get("body", b"")
            if len(body) > self.limit:
                return await too_large(scope, receive, send)
            if not message.get("more_body", False):
                break
        handed = False

        async def replay():
            nonlocal handed
            if handed:  # later reads wait for the client to disconnect
                return await receive()
            handed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


OPEN_PATHS = ("/health", "/ready", "/metrics", "/docs", "/openapi.json")


def route_template(routes, scope) -> str:
    """The route a request matched, as declared (`/api/v1/classify/{name}`), never the raw path:
    metric labels stay bounded whatever URLs clients send. The router records the route it chose;
    requests it never saw (refused before routing) are matched here."""
    if "route" in scope:
        return scope["route"].path
    for route in routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            return route.path
    return "unmatched"


class Observe:
    """Counts and times every request by route template and status class, counts every error by
    its type, answers any unhandled exception with the JSON error shape, and checks the bearer
    token when an API key is set.

    A plain ASGI middleware: Starlette's `BaseHTTPMiddleware` costs a task and a stream per request.
    """

    def __init__(self, app, metrics: "ServiceMetrics", api_key: str | None, routes) -> None:
        self.app, self.metrics, self.api_key, self.routes = app, metrics, api_key, routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status, error_body = 500, b""

        async def observed_send(message) -> None:
            nonlocal status, error_body
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 400 and len(error_body) < 4096:
                error_body += message.get("body", b"")
            await send(message)

        self.metrics.in_flight.inc()
        try:
            if self.api_key and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
                response = error_response(401, "unauthorized", "missing or wrong bearer token")
                return await response(scope, receive, observed_send)
            try:
                await self.app(scope, receive, observed_send)
            except Exception:
                log.exception("unhandled error on %s", scope["path"])
                if status != 500 or error_body:
                    raise  # the answer had begun; nothing more can be sent
                await error_response(500, "internal_error", "the service failed on this request")(
                    scope, receive, observed_send)
        finally:
            self.metrics.in_flight.dec()
            route, status_class = route_template(self.routes, scope), f"{status // 100}xx"
            self.metrics.latency.labels(route, status_class).observe(time.perf_counter() - started)
            self.metrics.requests.labels(route, status_class).inc()
            if status >= 400:
                self.metrics.errors.labels(route, error_type(error_body)).inc()

    def _authorized(self, scope) -> bool:
        header = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        return hmac.compare_digest(token.encode(), self.api_key.encode())


def error_type(body: bytes) -> str:
    """The `error.type` of an error answer (a bounded set of names), or `other`."""
    try:
        kind = json.loads(body)["error"]["type"]
    except (ValueError, KeyError, TypeError):
        return "other"
    return kind if isinstance(kind, str) and kind in ERROR_TYPES else "other"


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("routeclf_requests", "HTTP requests by route and status class",
                                ["endpoint", "status"], registry=self.registry)
        self.errors = Counter("routeclf_errors", "Error responses by type", ["endpoint", "type"], registry=self.registry)
        self.latency = Histogram(
            "routeclf_request_latency_seconds", "Request latency, from the request read to the answer sent",
            ["endpoint", "status"], registry=self.registry,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
        )
        self.batch_size = Histogram(
            "routeclf_batch_size", "Model inputs per model call", ["task"], registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.in_flight = Gauge("routeclf_in_flight_requests", "Requests being answered", registry=self.registry)
        self.queue_depth = Gauge("routeclf_queue_depth", "Model inputs waiting to be scored", ["task"],
                                 registry=self.registry)
        self.rejections = Counter("routeclf_rejections", "Requests refused or dropped to protect the service",
                                  ["task", "reason"], registry=self.registry)


def create_app(config: ServeConfig, load_before_serving: bool = False) -> FastAPI:
    """`load_before_serving`: the process takes no connection until its models have loaded (or
    failed). Server processes sharing one socket need it: a replacement worker would otherwise
    take connections from its live siblings and answer them 503 while it loads, and a probe of
    `/ready` cannot tell which process it reached. A lone process loads in the background, so
    `/health` and `/ready` answer during the load."""
    check_model_names(list(config.models))
    metrics = ServiceMetrics()
    slots = {
        name: ModelSlot(name, directory, config.backend, config.max_batch_size, config.max_wait_ms, config.max_queue,
                        metrics.batch_size.labels(name).observe)
        for name, directory in config.models.items()
    }

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        for name, slot in slots.items():
            slot.start()
            metrics.queue_depth.labels(name).set_function(lambda batcher=slot.batcher: batcher.depth)
        def load_all() -> None:
            for slot in slots.values():
                slot.load()

        if load_before_serving:
            await asyncio.to_thread(load_all)
        else:
            threading.Thread(target=load_all, daemon=True).start()
        yield
        # The server stops taking requests and finishes those in flight before this runs.
        for slot in slots.values():
            if slot.batcher is not None:
                await slot.batcher.stop()

    app = FastAPI(title="routeclf", version="0.1.0", lifespan=lifespan,
                  description="Request classification for LLM routers: any set of classifiers, detectors and "
                              "taggers, each at /api/v1/classify/NAME; intent, security and pii as in the vLLM "
                              "semantic router.")
    app.state.slots = slots

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.kind, exc.message, exc.retry_after_s)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return error_response(400, "invalid_json", "the request body is not valid JSON")
        detail = "; ".join(f"{'.'.join(str(x) for x in p.get('loc', ())[1:]) or 'body'}: {p.get('msg')}" for p in problems)
        return error_response(422, "invalid_request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, "http_error", str(exc.detail))

    def check_texts(texts: list[str]) -> None:
        for i, text in enumerate(texts):
            where = f"texts[{i}]" if len(texts) > 1 else "text"
            if not text.strip():
                raise ApiError(422, "empty_text", f"{where} is empty")
            if len(text) > config.max_text_chars:
                raise ApiError(413, "text_too_long",
                               f"{where} has {len(text)} characters; the limit is {config.max_text_chars}")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800") is valid JSON, not text
                raise ApiError(422, "unencodable_text", f"{where} holds a lone surrogate at character {exc.start}, "
                                                       "which is not Unicode text") from None

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
            raise ApiError(503, "model_not_ready", f"the {slot.name} model is not loaded" +
                           (f" ({slot.error})" if slot.error else " yet"),
                           retry_after_s=None if slot.error else config.retry_after_s)
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

    def reject(slot: ModelSlot, status: int, kind: str, message: str, retry: bool = True) -> ApiError:
        metrics.rejections.labels(slot.name, kind).inc()
        return ApiError(status, kind, message, config.retry_after_s if retry else None)

    async def off_loop(work, *args, heavy: bool):
        """Run CPU work in a thread when it is large enough to stall other requests."""
        return await asyncio.to_thread(work, *args) if heavy else work(*args)

    async def classify(request: Request, slot: ModelSlot, texts: list[str], options: BaseModel | None,
                       started: float) -> list[dict]:
        """The one scoring path of every endpoint: checks, admission, the micro-batcher, the kind's answer."""
        ready_slot(slot)
        check_texts(texts)
        if slot.kind == "tagger":
            check_entity_types(slot, options)
        costs = await off_loop(slot.model_inputs, texts, heavy=sum(map(len, texts)) > 4_000)
        if sum(costs) > config.max_request_inputs:
            raise reject(slot, 413, "too_much_work", f"the request is {sum(costs)} model inputs (windows of "
                         f"{slot.predictor.max_length} tokens); the limit is {config.max_request_inputs}", retry=False)
        remaining = config.request_timeout_s - (time.perf_counter() - started)
        try:
            scores = await until_disconnected(request, slot.batcher.submit(texts, costs, remaining))
        except Overloaded as exc:
            raise reject(slot, 429, "overloaded", f"the {slot.name} model is at capacity ({exc}); retry later") from None
        except DeadlineExceeded as exc:
            raise reject(slot, 503, "deadline_exceeded", f"the {slot.name} model is busy: {exc}") from None
        except ClientGone:
            raise reject(slot, 499, "client_gone", "the client disconnected before its answer", retry=False) from None
        except ScoringFailed as exc:
            raise ApiError(500, "scoring_failed", f"the model failed on this text: {exc}") from None
        answer = ANSWERS[slot.kind]
        elapsed = (time.perf_counter() - started) * 1000

        def answers() -> list[dict]:
            return [answer(slot.predictor, text, x, options, elapsed) | {"model": slot.identity()}
                    for text, x in zip(texts, scores)]

        return await off_loop(answers, heavy=slot.kind == "tagger" or len(texts) > 8)

    async def classify_conversation(request: Request, slot: ModelSlot, messages: list, options: BaseModel | None,
                                    started: float) -> dict[str, Any]:
        """A detector judges the whole conversation. A classifier: the latest user turn decides when
        it is confident; otherwise it is read with the earlier user turns (see
        `routeclf.inference.conversation`)."""
        detector = ready_slot(slot).kind == "detector"
        try:
            conversation = whole_conversation(messages) if detector else read_messages(messages)
        except ValueError as exc:
            raise ApiError(422, "no_user_turn", str(exc)) from None
        if detector:
            (result,) = await classify(request, slot, [conversation], options, started)
            return result
        (result,) = await classify(request, slot, [conversation.latest], options, started)
        context_used = bool(result["below_threshold"]) and conversation.context is not None
        if context_used:
            (result,) = await classify(request, slot, [conversation.context], options, started)
        result["classification"]["context_used"] = context_used
        return result

    def single_text_endpoint(name: str, request_type: type[BaseModel]):
        async def endpoint(request: Request, body) -> dict[str, Any]:
            started = time.perf_counter()
            if getattr(body, "messages", None) is not None:
                return await classify_conversation(request, slot_for(name), body.messages, body.options, started)
            (result,) = await classify(request, slot_for(name), [body.text], body.options, started)
            return result

        # The body's type is chosen per model, so it is set here rather than written in the signature.
        endpoint.__annotations__ = {"request": Request, "body": request_type, "return": dict[str, Any]}
        return endpoint

    # The semantic router's endpoints, then one per served model under its own name.
    for endpoint_name, (_, kind) in ROLE_ENDPOINTS.items():
        app.add_api_route(f"/api/v1/classify/{endpoint_name}", single_text_endpoint(endpoint_name, REQUESTS[kind]),
                          methods=["POST"], name=f"classify_{endpoint_name}")

    @app.post("/api/v1/classify/batch")
    async def classify_batch(request: Request, body: BatchRequest) -> dict[str, Any]:
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
        results = await classify(request, slot, body.texts, options, started)
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
                "backend": slot.backend,
            }
            if slot.task is not None:
                entry.update(kind=slot.task.kind, labels=list(slot.task.labels), task=slot.task.to_json())
            with contextlib.suppress(OSError, ValueError, KeyError):
                training = read_json(slot.directory / "training_config.json")
                saved = read_json(slot.directory / "metrics.json")
                # The figures of the path this server answers with.
                test = saved["test"] if slot.backend == "torch" else \
                    saved["paths"][BACKEND_PATHS[slot.backend]]["test"]
                entry.update(
                    base_model=training["base_model"]["name"],
                    data_sha256=read_json(slot.directory / "split.json")["data_sha256"],
                    test_metrics={k: test[k] for k in ("n", "accuracy", "macro_f1", "micro_f1", "n_entities", "ece",
                                                       "abstention") if k in test},
                )
            models.append(entry)
        return {"models": models}

    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(Observe, metrics=metrics, api_key=config.api_key, routes=app.router.routes)  # outermost
    return app


CONFIG_ENV = "ROUTECLF_SERVE_CONFIG"
WORKERS_ENV = "ROUTECLF_SERVE_WORKERS"


def app_from_environment() -> FastAPI:
    """One server process's app, as `routeclf serve` described it in the environment (uvicorn
    calls this in every worker)."""
    from routeclf.serving.memory import limit_malloc_arenas

    limit_malloc_arenas()
    workers = int(os.environ.get(WORKERS_ENV, "1"))
    if workers > 1:  # the processes share the cores rather than each taking all of them
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault(THREADS_ENV, str(threads))
    return create_app(ServeConfig.from_json(json.loads(os.environ[CONFIG_ENV])), load_before_serving=workers > 1)


def api_key_from_env(flag: str | None) -> str | None:
    return flag or os.environ.get("ROUTECLF_API_KEY") or None

