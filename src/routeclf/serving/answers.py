"""Each kind of model's request options and answer, in the vLLM semantic router's shapes:
classifiers answer like `/classify/intent`, detectors like `/classify/security`, taggers like
`/classify/pii`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from routeclf.inference.conversation import Message


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    return_probabilities: bool = True
    confidence_threshold: float | None = Field(default=None, ge=0.0, le=1.0)


class PiiOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entity_types: list[StrictStr] | None = None
    confidence_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    mask: bool = True
    # "numbered": [PERSON_1]-style placeholders and the map back to the values (`inference.masking`).
    placeholders: Literal["type", "numbered"] = "type"


class ClassifierRequest(BaseModel):
    """Classifiers and detectors read a text or a conversation (`messages`, the semantic router's
    chat shape): a classifier its latest user turn (with context when unsure), a detector the
    whole conversation (`routeclf.inference.conversation`)."""

    model_config = ConfigDict(extra="forbid")
    text: StrictStr | None = None
    messages: list[Message] | None = None
    options: Options | None = None

    @model_validator(mode="after")
    def one_input(self) -> ClassifierRequest:
        if (self.text is None) == (self.messages is None):
            raise ValueError("give either text or messages (a list of {role, content}), not both and not neither")
        return self


class PiiRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: StrictStr
    options: PiiOptions | None = None


def _decide(predictor, scores, options: Options | None):
    from routeclf.inference.decision import decide

    threshold = options.confidence_threshold if options is not None else None
    return decide(scores[None, :], predictor.fitted_policy(), threshold)


def classifier_answer(predictor, text: str, scores, options: Options | None, elapsed_ms: float) -> dict[str, Any]:
    decisions = _decide(predictor, scores, options)
    labels = decisions.policy.labels
    top = int(decisions.top[0])
    result: dict[str, Any] = {
        "classification": {
            "category": labels[int(decisions.answer[0])],
            "top_category": labels[top],
            "confidence": float(decisions.score[0]),
            "threshold": decisions.threshold,
            "abstained": bool(decisions.abstained[0]),
            "processing_time_ms": round(elapsed_ms, 3),
        },
        "below_threshold": bool(decisions.abstained[0]),
    }
    if options is None or options.return_probabilities:
        result["probabilities"] = {label: float(p) for label, p in zip(labels, decisions.probabilities[0])}
    return result


def detector_answer(predictor, text: str, scores, options: Options | None, elapsed_ms: float) -> dict[str, Any]:
    decisions = _decide(predictor, scores, options)
    policy = decisions.policy
    risk = float(decisions.score[0])
    flagged = int(decisions.answer[0]) == policy.positive
    return {
        "is_jailbreak": flagged,  # the semantic router's field name, for any detector
        "label": policy.labels[int(decisions.answer[0])],
        "risk_score": risk,
        "confidence": risk if flagged else 1 - risk,
        "threshold": decisions.threshold,
        "processing_time_ms": round(elapsed_ms, 3),
    }


def tagger_answer(predictor, text: str, scores, options: PiiOptions | None, elapsed_ms: float) -> dict[str, Any]:
    from routeclf.inference.masking import mask

    options = options or PiiOptions()
    (entities,) = predictor.entities([text], options.confidence_threshold, options.entity_types, [scores])
    masked = mask(text, entities, options.placeholders) if options.mask else None
    return {
        "has_pii": bool(entities),
        "entities": [asdict(e) for e in entities],
        "masked_text": masked.text if masked else None,
        "placeholders": masked.placeholders if masked and options.placeholders == "numbered" else None,
        "threshold": predictor.threshold if options.confidence_threshold is None else options.confidence_threshold,
        "processing_time_ms": round(elapsed_ms, 3),
    }


ANSWERS = {"classifier": classifier_answer, "detector": detector_answer, "tagger": tagger_answer}
REQUESTS = {"classifier": ClassifierRequest, "detector": ClassifierRequest, "tagger": PiiRequest}
OPTIONS = {"classifier": Options, "detector": Options, "tagger": PiiOptions}
