"""Each kind of model's request options and answer, in the vLLM semantic router's shapes:
classifiers answer like `/classify/intent`, detectors like `/classify/security`, taggers like
`/classify/pii`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    return_probabilities: bool = True
    confidence_threshold: float | None = Field(default=None, ge=0.0, le=1.0)


class PiiOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entity_types: list[StrictStr] | None = None
    confidence_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    mask: bool = True


class TextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: StrictStr
    options: Options | None = None


class PiiRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: StrictStr
    options: PiiOptions | None = None


def classifier_answer(predictor, text: str, probabilities, options: Options | None, elapsed_ms: float) -> dict[str, Any]:
    options = options or Options()
    threshold = predictor.threshold if options.confidence_threshold is None else options.confidence_threshold
    top = int(probabilities.argmax())
    confidence = float(probabilities[top])
    below = confidence < threshold and predictor.fallback_label is not None
    result: dict[str, Any] = {
        "classification": {
            "category": predictor.fallback_label if below else predictor.labels[top],
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


def detector_answer(predictor, text: str, probabilities, options: Options | None, elapsed_ms: float) -> dict[str, Any]:
    threshold = predictor.threshold
    if options is not None and options.confidence_threshold is not None:
        threshold = options.confidence_threshold
    risk = float(probabilities[predictor.labels.index(predictor.positive_label)])
    flagged = risk >= threshold
    result: dict[str, Any] = {
        "is_jailbreak": flagged,  # the semantic router's field name, for any detector
        "label": predictor.positive_label if flagged else predictor.fallback_label,
        "risk_score": risk,
        "confidence": risk if flagged else 1 - risk,
        "threshold": threshold,
        "processing_time_ms": round(elapsed_ms, 3),
    }
    return result


def tagger_answer(predictor, text: str, scores, options: PiiOptions | None, elapsed_ms: float) -> dict[str, Any]:
    from routeclf.inference.entities import mask

    options = options or PiiOptions()
    (entities,) = predictor.entities([text], options.confidence_threshold, options.entity_types, [scores])
    return {
        "has_pii": bool(entities),
        "entities": [asdict(e) for e in entities],
        "masked_text": mask(text, entities) if options.mask else None,
        "threshold": predictor.threshold if options.confidence_threshold is None else options.confidence_threshold,
        "processing_time_ms": round(elapsed_ms, 3),
    }


ANSWERS = {"classifier": classifier_answer, "detector": detector_answer, "tagger": tagger_answer}
REQUESTS = {"classifier": TextRequest, "detector": TextRequest, "tagger": PiiRequest}
OPTIONS = {"classifier": Options, "detector": Options, "tagger": PiiOptions}
