"""The `routeclf` command: split, train, evaluate, validate, push, predict, export-onnx, serve, e2e."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from routeclf.errors import RouteclfError, TrainingError
from routeclf.settings import TrainSettings, add_dataclass_arguments, settings_from_args
from routeclf.inference.masking import PLACEHOLDER_STYLES


def _add_field_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-field", default=None, help="text column (default: the task's)")
    parser.add_argument("--label-field", default=None, help="label column (default: the task's)")
    parser.add_argument("--id-field", default=None, help="id column (default: the task's; row number if absent)")


def cmd_split(args: argparse.Namespace) -> int:
    from routeclf.data.sources import Fields, load_rows, resolve_labels
    from routeclf.data.split import make_split, write_manifest
    from routeclf.tasks import resolve_task

    task = resolve_task(args.task)
    fields = Fields.for_task(task, args.text_field, args.label_field, args.id_field)
    source = args.data or task.settings.get("data")
    if not source:
        raise RouteclfError(f"no data for the {task.name} task: pass --data FILE")
    task = resolve_labels(task, source, fields)
    data = load_rows(source, task, fields)
    splits, manifest = make_split(data, tuple(args.ratios), args.seed, args.max_samples)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(manifest, args.out)
    audit = manifest["audit"]
    print(f"{len(data.rows)} rows, sha256 {data.sha256}")
    for name, rows in splits.items():
        print(f"  {name:<10} {len(rows):>6} rows  {manifest['label_counts'][name]}")
    print(
        "audit: passed (0 shared ids, 0 exact, 0 normalised duplicates across splits); "
        f"{audit['near_duplicates']['count']} near-duplicates (cosine >= {audit['near_duplicates']['threshold']})"
    )
    for example in audit["near_duplicates"]["examples"][:3]:
        print(f"    {example['split']} {example['id']} ~ train {example['train_id']} ({example['similarity']})")
    print(f"wrote {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from routeclf.training.trainer import train

    settings = settings_from_args(args)
    out = train(settings)
    if out is not None:  # under torchrun, rank 0 writes the artifact and says so
        print(f"artifact written to {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from routeclf.evaluation.evaluate import evaluate_artifact, save_evaluation
    from routeclf.evaluation.entities import format_entity_table
    from routeclf.evaluation.metrics import format_report

    fields = {"text": args.text_field, "label": args.label_field, "id": args.id_field}
    metrics = evaluate_artifact(args.directory, args.data, args.split, fields, path=args.path)
    print(format_entity_table(metrics) if "micro_f1" in metrics else format_report(metrics))
    if args.output:
        args.output.write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"wrote {args.output}")
    if args.save_as:
        save_evaluation(args.directory, args.save_as, metrics, args.path)
        print(f"saved as {args.save_as!r} in {args.directory / 'metrics.json'} and the model card")
    return 0


def _threshold_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default=None,
                        help="a built-in task's name or a task file to check against (default: the model's task.json)")
    parser.add_argument("--require-labels", default=None, help="comma-separated labels (default: the task's)")
    parser.add_argument("--data", default=None, help="data to recompute metrics on (default: the training data)")
    parser.add_argument("--min-accuracy", type=float, default=None,
                        help="accuracy of the answer given (after the fallback rule or the detector threshold), on "
                             "every consumer path")
    parser.add_argument("--min-macro-f1", type=float, default=None, help="macro-F1 of the answer given")
    parser.add_argument("--min-micro-f1", type=float, default=None, help="token tasks: entity-level micro-F1")
    parser.add_argument("--min-class-f1", type=float, default=None,
                        help="the worst class's F1 (token tasks: the worst type with at least 20 test entities)")
    parser.add_argument("--max-ece", type=float, default=None, help="expected calibration error on test")
    parser.add_argument("--min-recall", type=float, default=None, help="detectors: recall at the served threshold")
    parser.add_argument("--max-fpr", type=float, default=None,
                        help="detectors: false-positive rate at the served threshold")
    parser.add_argument("--min-coverage", type=float, default=None,
                        help="classifiers: the share of test requests answered rather than sent to the fallback")
    parser.add_argument("--min-answered-accuracy", type=float, default=None,
                        help="classifiers: accuracy of the requests answered (not abstained)")
    parser.add_argument("--report", type=Path, default=None, help="write the JSON report here")


def _run_validation(args: argparse.Namespace):
    from routeclf.artifact.validate import Thresholds, validate_artifact

    labels = [x.strip() for x in args.require_labels.split(",") if x.strip()] if args.require_labels else None
    thresholds = Thresholds(args.min_accuracy, args.min_macro_f1, args.min_micro_f1, args.min_class_f1, args.max_ece,
                            args.min_recall, args.max_fpr, args.min_coverage, args.min_answered_accuracy)
    report = validate_artifact(args.directory, args.task, labels, args.data, thresholds)
    print(report.table())
    if args.report:
        args.report.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report


def cmd_validate(args: argparse.Namespace) -> int:
    return _run_validation(args).exit_code


def cmd_push(args: argparse.Namespace) -> int:
    from routeclf.artifact.push import push_artifact

    report = _run_validation(args)
    files = push_artifact(args.directory, args.repo_id, report, args.private, args.dry_run)
    total = sum(f.stat().st_size for f in files)
    verb = "would upload" if args.dry_run else "uploaded"
    for path in files:
        print(f"  {path.relative_to(args.directory)}  {path.stat().st_size:,} B")
    print(f"{verb} {len(files)} files ({total:,} B) to {args.repo_id}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from routeclf.inference import load_predictor
    from routeclf.inference.entities import EntityPredictor
    from routeclf.inference.masking import mask

    texts = list(args.texts)
    if args.file:
        try:
            texts += [line.rstrip("\n") for line in args.file.read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise RouteclfError(f"cannot read {args.file}: {exc}") from exc
    if not texts:
        raise RouteclfError("nothing to classify: give texts as arguments or --file")
    predictor = load_predictor(args.directory)
    if isinstance(predictor, EntityPredictor):
        for text, entities in zip(texts, predictor.entities(texts, args.threshold)):
            found = [asdict(e) for e in entities]
            masked = mask(text, entities, args.placeholders)
            answer = {"text": text, "entities": found, "masked_text": masked.text}
            if args.placeholders == "numbered":
                answer["placeholders"] = masked.placeholders
            print(json.dumps(answer, ensure_ascii=False))
        return 0
    for text, result in zip(texts, predictor.predict(texts, args.top_k, args.threshold)):
        print(json.dumps({"text": text, **result}, ensure_ascii=False))
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from routeclf.artifact.onnx import export_onnx

    report = export_onnx(args.directory, args.quantize, args.data)
    print(json.dumps(report, indent=2))
    print(f"wrote {args.directory / 'onnx'}")
    return 0


def _named_models(args: argparse.Namespace) -> dict[str, Path]:
    """`--model NAME=DIR` pairs and the `--category/--jailbreak/--pii DIR` shorthands."""
    models: dict[str, Path] = {}
    pairs = [(role, str(path)) for role in ("category", "jailbreak", "pii") if (path := getattr(args, role))]
    for spec in args.model or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise RouteclfError(f"--model {spec!r}: write NAME=DIR, e.g. --model routes=models/routes")
        pairs.append((name, path))
    for name, path in pairs:
        if name in models:
            raise RouteclfError(f"two models are named {name!r}; each served model needs its own name")
        if not (Path(path) / "config.json").is_file():
            raise RouteclfError(f"{path} is not a model directory (no config.json)")
        models[name] = Path(path)
    if not models:
        raise RouteclfError("nothing to serve: give --model NAME=DIR (or --category / --jailbreak / --pii DIR)")
    return models


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from routeclf.serving.app import (CONFIG_ENV, WORKERS_ENV, ServeConfig, api_key_from_env, check_model_names,
                                      create_app)

    from routeclf.serving.models import check_role
    from routeclf.tasks import load_task

    models = _named_models(args)
    try:
        check_model_names(list(models))
    except ValueError as exc:
        raise RouteclfError(str(exc)) from None
    for name, directory in models.items():  # a model that cannot be served is refused before starting
        check_role(name, load_task(directory), directory)
    positive = {"--max-queue": args.max_queue, "--max-request-inputs": args.max_request_inputs,
                "--request-timeout": args.request_timeout, "--workers": args.workers,
                "--max-batch-size": args.max_batch_size, "--keep-alive-timeout": args.keep_alive_timeout}
    for flag, value in positive.items():
        if not value > 0:
            raise RouteclfError(f"{flag} must be positive, got {value}")
    config = ServeConfig(
        models=models, backend=args.backend, api_key=api_key_from_env(args.api_key),
        max_text_chars=args.max_text_chars, max_batch_items=args.max_batch_items, max_body_bytes=args.max_body_bytes,
        max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
        max_request_inputs=args.max_request_inputs, request_timeout_s=args.request_timeout,
    )
    # Each worker process builds its own app from this description (uvicorn imports the factory).
    os.environ[CONFIG_ENV] = json.dumps(config.to_json())
    os.environ[WORKERS_ENV] = str(args.workers)
    uvicorn.run(f"{create_app.__module__}:app_from_environment", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level, timeout_graceful_shutdown=args.graceful_timeout,
                timeout_keep_alive=args.keep_alive_timeout)
    return 0


def cmd_e2e(args: argparse.Namespace) -> int:
    from routeclf.serving.app import api_key_from_env
    from routeclf.serving.e2e import run_e2e

    result = run_e2e(args.url, args.data, args.task, {"text": args.text_field, "label": args.label_field,
                                                      "id": args.id_field},
                     args.batch_size, api_key_from_env(args.api_key), limit=args.limit)
    for label, accuracy in result["per_class_accuracy"].items():
        print(f"  {label:<20} {accuracy:.3f}")
    print(json.dumps({k: v for k, v in result.items() if k != "per_class_accuracy"}, indent=2))
    ok = result["accuracy_single"] >= args.min_accuracy and result["accuracy_batch"] >= args.min_accuracy
    ok = ok and result["errors"] == 0
    print(f"e2e {'PASSED' if ok else 'FAILED'}: accuracy of the answer given {result['accuracy_single']:.4f} single, "
          f"{result['accuracy_batch']:.4f} batch (required {args.min_accuracy}); top label "
          f"{result['top_label_accuracy']:.4f}; {result['errors']} errors")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="routeclf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    split = commands.add_parser("split", help="split a data set, audit it for leakage, write split.json")
    split.add_argument("task", help="a built-in task (category, jailbreak, pii) or a task file (.yaml)")
    split.add_argument("--data", default=None, help="hub dataset id or local file (default: the task's hub id)")
    split.add_argument("--out", type=Path, default=Path("split.json"), help="where to write the manifest")
    split.add_argument("--seed", type=int, default=42)
    split.add_argument("--ratios", type=float, nargs=3, default=(0.7, 0.15, 0.15), metavar=("TRAIN", "VAL", "TEST"))
    split.add_argument("--max-samples", type=int, default=None, help="seeded, label-stratified sample first")
    _add_field_flags(split)
    split.set_defaults(func=cmd_split)

    train = commands.add_parser("train", help="train a classifier and write a verified artifact directory")
    add_dataclass_arguments(train, TrainSettings)
    train.add_argument("--task", dest="task_file", default=None, metavar="FILE.yaml",
                       help="a task file of your own labels (the same as giving it in place of the task name)")
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("evaluate", help="metrics of an artifact on its saved split or on other data")
    evaluate.add_argument("directory", type=Path)
    evaluate.add_argument("--data", default=None, help="data to score (default: the training data)")
    evaluate.add_argument(
        "--split", default="test", choices=["test", "validation", "train", "all"],
        help="a saved split of the training data, or all rows of --data (for another data set)",
    )
    evaluate.add_argument("--output", type=Path, default=None, help="also write the metrics as JSON")
    evaluate.add_argument("--path", default="routeclf", choices=["routeclf", "onnx", "onnx-int8", "transformers"],
                          help="the consumer path to measure: routeclf (serve/predict, torch), its ONNX backends, or "
                               "plain transformers (the encoder alone, as the vLLM semantic router loads it)")
    evaluate.add_argument(
        "--save-as", default=None, metavar="NAME",
        help="store the result in the artifact's metrics.json under NAME (e.g. ood, chat) and in its model card",
    )
    _add_field_flags(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    validate = commands.add_parser("validate", help="the gate: exit 0 pass, 1 a check failed, 2 could not run")
    validate.add_argument("directory", type=Path)
    _threshold_flags(validate)
    validate.set_defaults(func=cmd_validate)

    push = commands.add_parser("push", help="validate, then upload to the Hugging Face hub")
    push.add_argument("directory", type=Path)
    push.add_argument("--repo-id", required=True, help="ORG/NAME of the model repository")
    push.add_argument("--private", action="store_true")
    push.add_argument("--dry-run", action="store_true", help="validate and list the files, upload nothing")
    _threshold_flags(push)
    push.set_defaults(func=cmd_push)

    export = commands.add_parser("export-onnx", help="export the encoder to DIR/onnx/ and check parity")
    export.add_argument("directory", type=Path)
    export.add_argument("--quantize", choices=["int8"], default=None, help="also write a dynamic int8 model")
    export.add_argument("--data", default=None, help="the training data, for real parity inputs (default: as trained)")
    export.set_defaults(func=cmd_export_onnx)

    serve = commands.add_parser("serve", help="serve models over HTTP (vLLM semantic router API shape)")
    serve.add_argument("--model", action="append", metavar="NAME=DIR",
                       help="serve the model in DIR at /api/v1/classify/NAME (repeat for more models)")
    serve.add_argument("--category", type=Path, default=None,
                       help="the same as --model category=DIR; also answers /api/v1/classify/intent")
    serve.add_argument("--jailbreak", type=Path, default=None,
                       help="the same as --model jailbreak=DIR; also answers /api/v1/classify/security")
    serve.add_argument("--pii", type=Path, default=None, help="the same as --model pii=DIR")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--backend", choices=["torch", "onnx", "onnx-int8"], default="torch")
    serve.add_argument("--api-key", default=None, help="require this bearer token (or set ROUTECLF_API_KEY)")
    serve.add_argument("--max-text-chars", type=int, default=32_000)
    serve.add_argument("--max-batch-items", type=int, default=256, help="texts per /classify/batch request")
    serve.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024)
    serve.add_argument("--max-batch-size", type=int, default=32,
                       help="model inputs (texts, or windows of long texts) per model call (micro-batching)")
    serve.add_argument(
        "--max-wait-ms", type=float, default=0.0,
        help="how long a micro-batch waits to fill; 0 takes whatever queued while the model was busy",
    )
    serve.add_argument("--max-queue", type=int, default=1024,
                       help="model inputs waiting per model; a request past it is answered 429 at once")
    serve.add_argument("--max-request-inputs", type=int, default=512,
                       help="model inputs one request may cost (a /batch call, or a long text's windows); past it: 413")
    serve.add_argument("--request-timeout", type=float, default=5.0,
                       help="seconds a request may wait to be scored; past it: 503 with Retry-After")
    serve.add_argument("--workers", type=int, default=1,
                       help="server processes sharing nothing (each loads the models); a dead one is replaced")
    serve.add_argument("--graceful-timeout", type=float, default=30.0,
                       help="on SIGTERM, seconds to finish requests in flight before stopping")
    # Longer than the idle expiry of common client pools (httpx 5 s, aiohttp 15 s, a load balancer's 60 s):
    # the side that closes an idle connection must be the client, or a request sent on it as the
    # server closes it is lost with "server disconnected".
    serve.add_argument("--keep-alive-timeout", type=float, default=75.0,
                       help="seconds an idle client connection is kept open")
    serve.add_argument("--log-level", default="warning")
    serve.set_defaults(func=cmd_serve)

    e2e = commands.add_parser("e2e", help="send labelled texts through a running service; fail below a threshold")
    e2e.add_argument("--url", required=True)
    e2e.add_argument("--data", required=True, help="labelled file (the task's columns by default)")
    e2e.add_argument("--task", default="intent",
                     help="the endpoint to test: intent, security, or a served model's name")
    e2e.add_argument("--min-accuracy", type=float, default=0.8)
    e2e.add_argument("--batch-size", type=int, default=32)
    e2e.add_argument("--limit", type=int, default=None, help="only the first N rows")
    e2e.add_argument("--api-key", default=None)
    _add_field_flags(e2e)
    e2e.set_defaults(func=cmd_e2e)

    predict = commands.add_parser("predict", help="classify texts; prints JSON lines")
    predict.add_argument("directory", type=Path)
    predict.add_argument("texts", nargs="*", help="texts to classify")
    predict.add_argument("--file", type=Path, default=None, help="a file of texts, one per line")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--threshold", type=float, default=None,
                         help="confidence below which the fallback label is answered (default: the artifact's)")
    predict.add_argument("--placeholders", choices=PLACEHOLDER_STYLES, default="type",
                         help="taggers: mask with [TYPE] or with numbered [TYPE_1] placeholders and print their map")
    predict.set_defaults(func=cmd_predict)
    return parser


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """A run stopped by SIGTERM (a job scheduler, `kill`) unwinds as Ctrl-C does, so its staging
    directory is removed and nothing half-written is left (only the main thread may set it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.func is cmd_serve:  # the server shuts down gracefully on SIGTERM itself
            return args.func(args)
        with sigterm_as_interrupt():
            return args.func(args)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except RouteclfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
