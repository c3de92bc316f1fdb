"""The PII detector the service uses: the token model fused with Presidio's recognizers.

The rule, fixed before any figure was seen:
1. A pattern recognizer's finding of a structured type (checksums or a fixed shape: cards, IBANs,
   emails, IPs, phone numbers, SSNs, domains) at or above `pattern_threshold` is trusted: it is
   kept, and any model entity overlapping it is dropped.
2. Every other model entity is kept.
3. The cased spaCy NER pipeline is a second opinion for the contextual types in `ner_types`: an
   entity it finds that overlaps nothing kept so far is added.
`pattern_threshold` and `ner_types` are chosen on the validation split (`choose_rule`), never on
an evaluation set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from routeclf.data.alignment import Entity
from routeclf.inference.recognizers import NER_TYPES, STRUCTURED_TYPES, Findings, overlaps, resolve

PATTERN_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.75, 0.85)


@dataclass(frozen=True)
class FusionRule:
    pattern_types: tuple[str, ...] = STRUCTURED_TYPES
    pattern_threshold: float = 0.5
    ner_types: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, values: dict) -> FusionRule:
        return cls(tuple(values["pattern_types"]), float(values["pattern_threshold"]), tuple(values["ner_types"]))


def fuse(model: list[Entity], findings: Findings, rule: FusionRule) -> list[Entity]:
    trusted = resolve([e for e in findings.patterns
                       if e.type in rule.pattern_types and e.confidence >= rule.pattern_threshold])
    kept = trusted + [e for e in model if not any(overlaps(e, t) for t in trusted)]
    for e in resolve([n for n in findings.ner if n.type in rule.ner_types]):
        if not any(overlaps(e, k) for k in kept):
            kept.append(e)
    return sorted(kept, key=lambda e: e.start)


def choose_rule(model: list[list[Entity]], findings: list[Findings], score: Callable[[list[list[Entity]]], float]
                ) -> tuple[FusionRule, dict[str, float]]:
    """The pattern threshold, then the NER types one at a time (kept when they raise the score),
    that give the best `score` (validation micro-F1)."""
    def evaluate(rule: FusionRule) -> float:
        return score([fuse(m, f, rule) for m, f in zip(model, findings)])

    trace = {"model alone": score(model)}
    rule = max((FusionRule(pattern_threshold=t) for t in PATTERN_THRESHOLDS), key=evaluate)
    best = trace[f"patterns at {rule.pattern_threshold}"] = evaluate(rule)
    for kind in NER_TYPES:
        candidate = FusionRule(rule.pattern_types, rule.pattern_threshold, (*rule.ner_types, kind))
        value = trace[f"+ spaCy {kind}"] = evaluate(candidate)
        if value > best:
            rule, best = candidate, value
    return rule, trace
