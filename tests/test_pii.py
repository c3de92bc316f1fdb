"""The PII task: span <-> token alignment, the template-grouped split, masking, the artifact, the
gate and the /pii endpoint."""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from routeclf.cli import main
from routeclf.data.alignment import Entity, decode_tags, merge_units, token_tags, units
from routeclf.data.sources import Fields, load_rows
from routeclf.data.split import make_split
from routeclf.errors import DataError
from routeclf.evaluation.entities import entity_metrics
from routeclf.inference.entities import EntityPredictor
from routeclf.inference.masking import mask, restore
from routeclf.tasks import get_task
from routeclf.tasks.pii import canonical_template
from routeclf.tasks.spans import read_conll
from routeclf.training.models import resolve_base

from conftest import DATA_DIR

PII = get_task("pii")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_base("minilm").path)


def _round_trip(tokenizer, text: str, spans: list[tuple[int, int, str]], by_word: bool) -> set[tuple[int, int, str]]:
    """Spans -> training tags -> (as if predicted perfectly) -> spans again."""
    encoded = tokenizer(text, return_offsets_mapping=True)
    offsets, words = encoded["offset_mapping"], encoded.word_ids()
    tags = token_tags(offsets, words, spans)
    groups = units(offsets, words) if by_word else units(offsets, words, [t is not None for t in tags])
    tagged = [(offsets[g[0]][0], offsets[g[-1]][1], tags[g[0]], 0.9) for g in groups]
    return {(e.start, e.end, e.type) for e in merge_units(text, tagged)}


TRICKY = [
    ("Mail jane.o'neil+work@example.co.uk now", [("jane.o'neil+work@example.co.uk", "EMAIL_ADDRESS")]),
    ("Call +1 (555) 010-2030 or 555.010.9999.", [("+1 (555) 010-2030", "PHONE_NUMBER"), ("555.010.9999", "PHONE_NUMBER")]),
    ("Zoë Saldaña met François Hollande in Zürich", [("Zoë Saldaña", "PERSON"), ("François Hollande", "PERSON"),
                                                   ("Zürich", "LOCATION")]),
    ("Jean Dupont", [("Jean Dupont", "PERSON")]),  # the whole text: entity at the start and the end
    ("card 4111-1111-1111-1111, SSN 078-05-1120", [("4111-1111-1111-1111", "CREDIT_CARD"), ("078-05-1120", "US_SSN")]),
    ("ping 192.168.0.1\nfrom Acme Corp", [("192.168.0.1", "IP_ADDRESS"), ("Acme Corp", "ORGANIZATION")]),
    ("née Smith–Jones 😀 lives at 12 Rue de la Paix", [("Smith–Jones", "PERSON"), ("12 Rue de la Paix", "STREET_ADDRESS")]),
]


@pytest.mark.parametrize("text,entities", TRICKY)
@pytest.mark.parametrize("by_word", [False, True])
def test_span_token_round_trip(tokenizer, text: str, entities: list[tuple[str, str]], by_word: bool) -> None:
    spans = []
    for value, kind in entities:
        start = text.index(value)
        spans.append((start, start + len(value), kind))
    assert _round_trip(tokenizer, text, spans, by_word) == set(spans)


def test_first_sub_token_labelled_rest_ignored(tokenizer) -> None:
    text = "Koskikatu 25 is where Wojciechowski lives"
    spans = [(0, 12, "STREET_ADDRESS"), (22, 35, "PERSON")]
    encoded = tokenizer(text, return_offsets_mapping=True)
    tags = token_tags(encoded["offset_mapping"], encoded.word_ids(), spans)
    tokens = encoded.tokens()
    assert tags[0] is None and tags[-1] is None  # [CLS], [SEP]
    assert tags[1] == "B-STREET_ADDRESS" and tokens[2].startswith("##") and tags[2] is None
    person = [t for t in tags if t and t.endswith("PERSON")]
    assert person == ["B-PERSON"]  # one word, several sub-tokens: only the first is labelled


def test_merge_rules() -> None:
    text = "Ann Lee and Bob"
    words = [(0, 3, "B-PERSON", 0.9), (4, 7, "I-PERSON", 0.7), (8, 11, "O", 0.99), (12, 15, "I-PERSON", 0.4)]
    found = merge_units(text, words)
    assert [(e.value, e.type) for e in found] == [("Ann Lee", "PERSON"), ("Bob", "PERSON")]
    assert found[0].confidence == pytest.approx(0.8)
    assert [e.value for e in merge_units(text, words, threshold=0.5)] == ["Ann Lee"]


def test_decoding_keeps_bio_valid() -> None:
    labels = ("B-LOCATION", "B-PERSON", "I-LOCATION", "I-PERSON", "O")

    def path(*rows: list[float]) -> list[str]:
        return [labels[i] for i in decode_tags(np.log(np.array(rows)), labels)]

    # Best tag alone: O, I-PERSON (a name opened at its second word). The valid reading with the
    # most probability mass opens it at the first word.
    assert path([0.05, 0.40, 0.05, 0.05, 0.45], [0.05, 0.05, 0.05, 0.80, 0.05]) == ["B-PERSON", "I-PERSON"]
    # When the first word is surely outside, the second takes its best allowed tag.
    assert path([0.01, 0.01, 0.01, 0.01, 0.96], [0.05, 0.30, 0.05, 0.55, 0.05]) == ["O", "B-PERSON"]
    # A type switch inside an entity is resolved to one type.
    decoded = path([0.05, 0.80, 0.05, 0.05, 0.05], [0.05, 0.05, 0.45, 0.40, 0.05])
    assert decoded == ["B-PERSON", "I-PERSON"]
    assert path([0.9, 0.02, 0.02, 0.02, 0.04]) == ["B-LOCATION"]
    assert decode_tags(np.zeros((0, 5)), labels) == []


def test_entity_metrics_exact_and_boundary_relaxed() -> None:
    gold = [{(0, 8, "PERSON"), (12, 20, "LOCATION")}, {(0, 5, "PERSON")}]
    predicted = [{(0, 8, "PERSON"), (12, 16, "LOCATION")}, {(0, 5, "LOCATION"), (7, 9, "PERSON")}]
    m = entity_metrics(gold, predicted, ("LOCATION", "PERSON"))
    # Exact: only the first PERSON matches (1 of 3 gold, 1 of 4 predicted).
    assert (m["n_entities"], m["n_predicted"]) == (3, 4)
    assert m["micro_recall"] == pytest.approx(1 / 3) and m["micro_precision"] == pytest.approx(1 / 4)
    assert m["per_class"]["LOCATION"]["f1"] == 0.0
    # Relaxed: the cut LOCATION overlaps its gold; a wrong type or a disjoint span never counts.
    assert m["overlap_recall"] == pytest.approx(2 / 3) and m["overlap_precision"] == pytest.approx(2 / 4)


def test_masking() -> None:
    text = "Jane Doe, jane@x.org"
    entities = [Entity("PERSON", "Jane Doe", 0, 8, 0.9), Entity("EMAIL_ADDRESS", "jane@x.org", 10, 20, 0.8)]
    assert mask(text, entities).text == "[PERSON], [EMAIL_ADDRESS]"
    assert mask(text, []).text == text


def found(text: str, *spans: tuple[str, str]) -> list[Entity]:
    """Entities at the first occurrence of each value at or after the previous one."""
    entities, position = [], 0
    for kind, value in spans:
        start = text.index(value, position)
        entities.append(Entity(kind, value, start, start + len(value), 0.9))
        position = start + len(value)
    return entities


def test_numbered_placeholders_round_trip_and_keep_one_value_one_number() -> None:
    text = "Jane wrote to Omar; Jane's card 4111 1111 1111 1111 was charged, Omar's too."
    entities = found(text, ("PERSON", "Jane"), ("PERSON", "Omar"), ("PERSON", "Jane"),
                     ("CREDIT_CARD", "4111 1111 1111 1111"), ("PERSON", "Omar"))
    masked = mask(text, entities, "numbered")
    assert masked.text == ("[PERSON_1] wrote to [PERSON_2]; [PERSON_1]'s card [CREDIT_CARD_1] was charged, "
                           "[PERSON_2]'s too.")
    assert masked.placeholders == {"[PERSON_1]": "Jane", "[PERSON_2]": "Omar", "[CREDIT_CARD_1]": "4111 1111 1111 1111"}
    assert restore(masked.text, masked.placeholders) == text
    # The LLM's answer uses the placeholders in its own order; each comes back as its value.
    assert restore("Dear [PERSON_2], [PERSON_1] says hi", masked.placeholders) == "Dear Omar, Jane says hi"


def test_numbered_placeholders_never_collide_with_the_users_own_text() -> None:
    text = "Template: [PERSON_1] is replaced by Alice"
    masked = mask(text, found(text, ("PERSON", "Alice")), "numbered")
    assert masked.placeholders == {"[PERSON_2]": "Alice"}
    assert restore(masked.text, masked.placeholders) == text
    # A value that looks like a placeholder is put back as it is, not expanded again.
    assert restore("[PERSON_1] and [PERSON_2]", {"[PERSON_1]": "[PERSON_2]", "[PERSON_2]": "Bo"}) == "[PERSON_2] and Bo"
    with pytest.raises(ValueError, match="placeholder style"):
        mask(text, [], "secret")


def test_canonical_templates_match_across_files() -> None:
    assert canonical_template("Hi {{first_name}} {{last_name}}, see {{city}}") == canonical_template(
        "hi {{PERSON}},  see {{GPE}}"
    )


def _write_jsonl(tmp_path: Path, records: list[dict]) -> str:
    path = tmp_path / "pii.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return str(path)


@pytest.mark.parametrize(
    "spans,message",
    [
        ([{"entity_type": "SECRET", "start": 0, "end": 3}], "unknown entity type 'SECRET'"),
        ([{"entity_type": "PERSON", "start": 5, "end": 99}], "outside the text"),
        ([{"entity_type": "PERSON", "start": 0, "end": 8}, {"entity_type": "PERSON", "start": 4, "end": 8}], "overlapping"),
        ([{"entity_type": "PERSON", "start": 0}], "lacks start, end or entity_type"),
    ],
)
def test_bad_spans_are_named(tmp_path: Path, spans: list[dict], message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_rows(_write_jsonl(tmp_path, [{"text": "Jane Doe is here", "spans": spans}]), PII, require_all_labels=False)


def test_missing_entity_types_are_named(tmp_path: Path) -> None:
    records = [{"text": f"Jane Doe {i}", "spans": [{"entity_type": "PERSON", "start": 0, "end": 8}]} for i in range(5)]
    with pytest.raises(DataError, match="entity types have no examples: AGE, CREDIT_CARD"):
        load_rows(_write_jsonl(tmp_path, records), PII)


def test_conll_reader(tmp_path: Path) -> None:
    path = tmp_path / "mini.conll"
    path.write_text("Empire\tB-location\nState\tI-location\nis\tO\nnice\tO\n\n@bob\tO\nmet\tO\nTim\tB-person\n\n")
    records = read_conll(path)
    assert records[0] == {"text": "Empire State is nice", "spans": [{"entity_type": "location", "start": 0, "end": 12}]}
    rows = load_rows(_write_jsonl(tmp_path, records), PII, require_all_labels=False).rows
    assert [r.spans for r in rows] == [((0, 12, "LOCATION"),), ((9, 12, "PERSON"),)]


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if not (DATA_DIR / "pii" / "presidio-synth" / "synth_dataset_v2.jsonl").is_file():
        pytest.skip(f"PII data not found under {DATA_DIR}; set ROUTECLF_DATA_DIR")
    return DATA_DIR


def test_presidio_spans_survive_alignment(data_dir: Path, tokenizer) -> None:
    rows = load_rows(str(data_dir), PII).rows
    lost = [(r.id, s) for r in rows for s in set(r.spans) - _round_trip(tokenizer, r.text, list(r.spans), True)]
    assert not lost, f"{len(lost)} spans lost in alignment, e.g. {lost[:3]}"


def test_split_is_grouped_by_template(data_dir: Path) -> None:
    data = load_rows(str(data_dir), PII)
    splits, manifest = make_split(data, (0.7, 0.15, 0.15), 42, None)
    where = defaultdict(set)
    sources = defaultdict(set)
    for name, rows in splits.items():
        for row in rows:
            where[row.group].add(name)
            sources[row.group].add(row.source)
    assert all(len(names) == 1 for names in where.values()), "a template sits in two splits"
    assert any(len(s) == 2 for s in sources.values()), "no template shared by the two files was grouped"
    assert manifest["audit"]["passed"]
    test_types = {kind for row in splits["test"] for *_, kind in row.spans}
    assert {"PERSON", "LOCATION", "STREET_ADDRESS", "ORGANIZATION"} <= test_types


@pytest.fixture(scope="module")
def model(pii_model: Path) -> Path:
    return pii_model


def test_artifact_contract_and_gate(model: Path) -> None:
    mapping = json.loads((model / "pii_type_mapping.json").read_text())
    assert mapping["label_to_idx"]["O"] == len(PII.labels) - 1 and set(mapping["label_to_idx"]) == set(PII.labels)
    assert json.loads((model / "source_type_map.json").read_text())["GPE"] == "LOCATION"
    test = json.loads((model / "metrics.json").read_text())["test"]
    assert {"micro_f1", "macro_f1", "micro_precision", "micro_recall", "per_class", "n_entities"} <= set(test)
    assert "accuracy" not in test  # never token accuracy
    assert set(test["per_class"]) == set(PII.entity_types)
    assert "entity micro-F1" in (model / "README.md").read_text() or "micro-F1" in (model / "README.md").read_text()
    assert main(["validate", str(model)]) == 0
    assert main(["validate", str(model), "--min-micro-f1", "1.01"]) == 1


def test_onnx_export_of_the_tagger_is_checked_measured_gated_and_served(model: Path, tmp_path: Path, capsys) -> None:
    from fastapi.testclient import TestClient

    from routeclf.serving.app import ServeConfig, create_app

    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    assert main(["export-onnx", str(copy), "--quantize", "int8"]) == 0
    report = json.loads((copy / "onnx" / "parity.json").read_text())
    assert report["n_words"] > report["n_inputs"] >= 200
    assert report["fp32"]["max_abs_logit_diff"] <= 1e-3 and report["fp32"]["top_label_agreement"] >= 0.995
    assert "test_micro_f1_change" in report["int8"]
    texts = ["Call Jane Doe at 212-555-0199 tomorrow.", "nothing to see here"]
    np.testing.assert_allclose(EntityPredictor(copy, backend="onnx").raw_scores(texts),
                               EntityPredictor(copy).raw_scores(texts), atol=1e-4)
    # Each path has its own calibration (with the fusion rule) and its own test figures, and the gate
    # recomputes them all.
    calibration = json.loads((copy / "calibration.json").read_text())["paths"]
    assert set(calibration) == {"routeclf", "onnx", "onnx-int8"} and all("fusion" in c for c in calibration.values())
    assert set(json.loads((copy / "metrics.json").read_text())["paths"]) == {"onnx", "onnx-int8"}
    assert "onnx-int8" in (copy / "README.md").read_text()
    capsys.readouterr()
    assert main(["validate", str(copy)]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("metrics reproduce"))
    assert all(f"{path} micro_f1" in line for path in ("routeclf", "onnx", "onnx-int8"))
    text = texts[0]
    with TestClient(create_app(ServeConfig(models={"pii": copy}, backend="onnx-int8"))) as client:
        for _ in range(300):
            if client.get("/ready").status_code == 200:
                break
            time.sleep(0.05)
        body = client.post("/api/v1/classify/pii", json={"text": text}).json()
        expected = EntityPredictor(copy, backend="onnx-int8").entities([text])[0]
        assert body["entities"] == [asdict(e) for e in expected]
        (info,) = client.get("/info/models").json()["models"]
        assert info["backend"] == "onnx-int8" and info["test_metrics"]["micro_f1"] == pytest.approx(
            json.loads((copy / "metrics.json").read_text())["paths"]["onnx-int8"]["test"]["micro_f1"])
    # A model never exported is not served on an ONNX backend, and /ready says why.
    with TestClient(create_app(ServeConfig(models={"pii": model}, backend="onnx"))) as client:
        for _ in range(300):
            ready = client.get("/ready")
            if "failed" in json.dumps(ready.json()):
                break
            time.sleep(0.05)
        assert ready.status_code == 503 and "export-onnx" in json.dumps(ready.json())


def test_windows_cover_long_texts(model: Path) -> None:
    predictor = EntityPredictor(model)
    text = " ".join(f"word{i}" for i in range(300)) + " Jane"
    (words,) = predictor.word_scores([text])
    assert len(words.offsets) == 301 and words.offsets[-1] == (len(text) - 4, len(text))
    assert [o[0] for o in words.offsets] == sorted(o[0] for o in words.offsets)
    # A long word cut by a window edge keeps its whole extent.
    narrow = EntityPredictor(model, max_length=32)
    long_word = "DE89370400440532013000XYZQWERTY"
    for k in range(0, 40, 3):
        text = " ".join(["word"] * k) + f" {long_word} " + " ".join(["tail"] * 40)
        (words,) = narrow.word_scores([text])
        start = text.index(long_word)
        assert (start, start + len(long_word)) in words.offsets and len(words.offsets) == len(text.split())
    assert narrow.word_scores([]) == []


def test_pii_endpoint(model: Path) -> None:
    from fastapi.testclient import TestClient

    from routeclf.serving.app import ServeConfig, create_app

    text = "Please email Jane Doe at jane.doe@example.com or call 212-555-0199 about 12 Main Street."
    with TestClient(create_app(ServeConfig(models={"pii": model}))) as client:
        for _ in range(300):
            if client.get("/ready").status_code == 200:
                break
            time.sleep(0.05)
        body = client.post("/api/v1/classify/pii", json={"text": text, "options": {"confidence_threshold": 0.0}}).json()
        assert set(body) >= {"has_pii", "entities", "masked_text", "processing_time_ms"}
        assert body["has_pii"] == bool(body["entities"])
        for entity in body["entities"]:
            assert text[entity["start"] : entity["end"]] == entity["value"] and 0 <= entity["confidence"] <= 1
        assert body["masked_text"] == mask(text, [Entity(**e) for e in body["entities"]]).text
        assert body["placeholders"] is None
        numbered = client.post("/api/v1/classify/pii", json={
            "text": text, "options": {"confidence_threshold": 0.0, "placeholders": "numbered"}}).json()
        assert numbered["entities"] == body["entities"] and numbered["placeholders"]
        assert restore(numbered["masked_text"], numbered["placeholders"]) == text
        unknown = client.post("/api/v1/classify/pii", json={"text": text, "options": {"placeholders": "x"}})
        assert unknown.status_code == 422
        none = client.post("/api/v1/classify/pii", json={"text": text, "options": {"entity_types": ["IBAN_CODE"]}})
        assert all(e["type"] == "IBAN_CODE" for e in none.json()["entities"])
        bad = client.post("/api/v1/classify/pii", json={"text": text, "options": {"entity_types": ["SECRET"]}})
        assert bad.status_code == 422 and bad.json()["error"]["type"] == "unknown_entity_type"
        empty = client.post("/api/v1/classify/pii", json={"text": text, "options": {"entity_types": []}})
        assert empty.status_code == 422 and "empty" in empty.json()["error"]["message"]
        batch = client.post("/api/v1/classify/batch", json={"texts": [text, "nothing here"], "task_type": "pii",
                                                           "options": {"confidence_threshold": 0.0}}).json()
        assert batch["results"][0]["entities"] == body["entities"]
        wrong = client.post("/api/v1/classify/batch", json={"texts": [text], "task_type": "pii", "options": {"x": 1}})
        assert wrong.status_code == 422
        assert client.post("/api/v1/classify/intent", json={"text": text}).status_code == 503



def test_fusion_rule_trusts_patterns_and_adds_ner_only_where_nothing_was_found() -> None:
    from routeclf.inference.hybrid import FusionRule, fuse
    from routeclf.inference.recognizers import Findings

    text = "Card 4111 1111 1111 1111 for Ana Silva in Lisbon"
    e = lambda kind, value, confidence=0.9: Entity(kind, value, text.index(value), text.index(value) + len(value),
                                                   confidence)
    model = [e("PHONE_NUMBER", "4111 1111"), e("PERSON", "Ana")]
    findings = Findings(patterns=[e("CREDIT_CARD", "4111 1111 1111 1111", 1.0), e("US_SSN", "1111 1111", 0.2)],
                        ner=[e("PERSON", "Ana Silva", 0.85), e("LOCATION", "Lisbon", 0.85)])
    plain = fuse(model, findings, FusionRule(pattern_threshold=0.5))
    assert [(x.type, x.value) for x in plain] == [("CREDIT_CARD", "4111 1111 1111 1111"), ("PERSON", "Ana")]
    with_ner = fuse(model, findings, FusionRule(pattern_threshold=0.5, ner_types=("PERSON", "LOCATION")))
    assert [(x.type, x.value) for x in with_ner] == [("CREDIT_CARD", "4111 1111 1111 1111"), ("PERSON", "Ana"),
                                                     ("LOCATION", "Lisbon")]  # the model's PERSON stands


def test_the_fused_detector_is_fitted_on_validation_and_served(model: Path) -> None:
    path = json.loads((model / "calibration.json").read_text())["paths"]["routeclf"]
    assert set(path["fusion"]) == {"pattern_types", "pattern_threshold", "ner_types"}
    assert "model alone" in path["fusion_validation_micro_f1"]
    test = json.loads((model / "metrics.json").read_text())["test"]
    assert set(test["parts"]) == {"token model", "Presidio alone"}
    predictor = EntityPredictor(model)
    text = "Wire it to DE89 3704 0044 0532 0130 00 and mail ops@example.org from 192.168.10.7"
    (found,) = predictor.entities([text])
    assert {("IBAN_CODE", "DE89 3704 0044 0532 0130 00"), ("EMAIL_ADDRESS", "ops@example.org"),
            ("IP_ADDRESS", "192.168.10.7")} <= {(x.type, x.value) for x in found}
    (alone,) = predictor.entities([text], fused=False)
    assert all(x.type in PII.entity_types for x in alone)


def test_missing_spans_column_is_named(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path, [{"text": "Jane Doe", "entities": []}])
    with pytest.raises(DataError, match="no spans column 'spans'.*--label-field"):
        load_rows(path, PII, require_all_labels=False)
    rows = load_rows(path, PII, fields=Fields.for_task(PII, label="entities"), require_all_labels=False).rows
    assert rows[0].spans == ()


def test_written_training_messages_load_with_valid_spans_and_stay_out_of_evaluation() -> None:
    from routeclf.tasks.pii import written_training_rows

    rows = written_training_rows()
    assert len(rows) > 400 and {kind for r in rows for *_, kind in r.spans} == set(PII.entity_types)
    evaluation = Path(__file__).resolve().parents[1] / "eval" / "pii_messages.jsonl"
    held_out = {json.loads(line)["text"].lower() for line in evaluation.read_text().splitlines() if line.strip()}
    assert not [r.text for r in rows if r.text.lower() in held_out]


def test_presidio_spans_follow_the_projects_conventions() -> None:
    from routeclf.tasks.pii import conventional_spans

    text = "Ship to 81 Dikbas Road\nSuite 4\nTrancoso\n, GU\n 59797 or call. Zip 64389."
    address = "81 Dikbas Road\nSuite 4\nTrancoso\n, GU\n 59797"
    record = {"text": text, "masked": "Ship to {{address}} or call. Zip {{postcode}}.",
              "spans": [{"entity_type": "ADDRESS", "start": 8, "end": 8 + len(address)},
                        {"entity_type": "ADDRESS", "start": text.index("64389"), "end": text.index("64389") + 5}]}
    spans = [(s["type"], text[s["start"]:s["end"]]) for s in conventional_spans(record)]
    assert spans == [("STREET_ADDRESS", "81 Dikbas Road\nSuite 4"), ("LOCATION", "Trancoso"), ("LOCATION", "GU"),
                     ("ZIP_CODE", "59797"), ("ZIP_CODE", "64389")]
    # A record whose placeholders do not line up with its spans keeps its types (a bare postcode aside).
    plain = {"text": "Lives at 12 Elm St, zip 10115", "masked": "Lives at {{x}}",
             "spans": [{"entity_type": "STREET_ADDRESS", "start": 9, "end": 18},
                       {"entity_type": "STREET_ADDRESS", "start": 24, "end": 29}]}
    assert [s["type"] for s in conventional_spans(plain)] == ["STREET_ADDRESS", "ZIP_CODE"]
    # A date is the whole expression: "Thursday morning", not "Thursday"; nothing else is joined to it.
    text = "Meet Thursday morning or Friday mornings. Founded in 1990 evening classes."
    at = [(text.index(v), text.index(v) + len(v)) for v in ("Thursday", "Friday", "1990")]
    dated = {"text": text, "masked": "Meet {{day_of_week}} morning or {{day_of_week}} mornings. Founded in {{year}} "
                                      "evening classes.",
             "spans": [{"entity_type": "DATE_TIME", "start": a, "end": b} for a, b in at]}
    assert [text[s["start"]:s["end"]] for s in conventional_spans(dated)] == ["Thursday morning", "Friday", "1990"]
