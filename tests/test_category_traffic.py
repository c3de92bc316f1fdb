"""The category task's traffic-shaped pieces: training views, written training text kept apart
from the evaluation sets, typos, conversations and distillation targets."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import REPO, synthetic_rows

from routeclf.data.sources import Row, normalise_text
from routeclf.evaluation.perturb import typo_copy
from routeclf.inference.conversation import conversation_scores, read_messages
from routeclf.inference.decision import Policy
from routeclf.tasks import get_task
from routeclf.tasks.category import chat_training_rows, ending, question_views, without_exam_cues
from routeclf.training.distil import ngram_soft_targets

CATEGORY = get_task("category")


def _row(text: str, label: str = "law", i: int = 0) -> Row:
    return Row(str(i), text, label, normalise_text(text), "test")


def test_exam_cues_are_removed_and_long_questions_train_on_their_ending() -> None:
    assert without_exam_cues("Question: Which of the following is a concurrent power? Answer:") == \
        "Which is a concurrent power?"
    long = " ".join(["The defendant signed a contract with the plaintiff in March."] * 6) + \
        " Which of the following best describes the plaintiff's remedy?"
    views = question_views([_row(long)], seed=0)
    assert {v.id for v in views} == {"0+no-cues", "0+ending"}
    assert all(v.group == normalise_text(long) and v.label == "law" for v in views)  # a view never crosses a split
    end = ending(without_exam_cues(long))
    assert end.endswith("Which best describes the plaintiff's remedy?") and 30 <= len(end.split()) < len(long.split())
    assert question_views([_row("how do vaccines work")], seed=0) == []  # nothing to change, nothing added


def _users(record: dict) -> list[str]:
    return [m["content"] for m in record["messages"] if m["role"] == "user"] if "messages" in record else [record["text"]]


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).split()


def _trigrams(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + 3]) for i in range(len(words) - 2)}


def test_written_training_text_has_every_label_and_stays_apart_from_the_evaluation_sets() -> None:
    rows = chat_training_rows()
    counts = {label: sum(r.label == label for r in rows) for label in CATEGORY.labels}
    assert min(counts.values()) >= 50, counts
    evaluation = [text for name in ("category_chat.jsonl", "category_conversations.jsonl")
                  for line in (REPO / "eval" / name).read_text().splitlines() for text in _users(json.loads(line))]
    held_out = [(" ".join(_words(t)), _trigrams(_words(t))) for t in evaluation]
    training = (REPO / "src" / "routeclf" / "tasks" / "data" / "category_chat_train.jsonl").read_text().splitlines()
    for line in training:
        for text in _users(json.loads(line)):
            words = _words(text)
            grams = _trigrams(words)
            for joined, other in held_out:
                assert joined != " ".join(words), text
                if grams and other:
                    assert len(grams & other) / min(len(grams), len(other)) <= 0.5, (text, joined)


def test_typo_copy_is_seeded_and_keeps_ids_and_labels() -> None:
    rows = [_row("What is the difference between mitosis and meiosis in dividing cells?", "biology", i) for i in range(20)]
    first, again = typo_copy(rows, seed=3), typo_copy(rows, seed=3)
    assert [r.text for r in first] == [r.text for r in again]
    assert [(r.id, r.label) for r in first] == [(r.id, r.label) for r in rows]
    assert sum(r.text != rows[0].text for r in first) >= 10


def test_a_conversation_is_its_latest_user_turn_with_earlier_user_turns_as_context() -> None:
    conversation = read_messages([
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "explain photosynthesis"},
        {"role": "assistant", "content": "Plants make sugar."}, {"role": "user", "content": "  "},
        {"role": "user", "content": "and why is it green?"},
    ])
    assert conversation.latest == "and why is it green?"
    assert conversation.context == "and why is it green?\nexplain photosynthesis"
    assert read_messages([{"role": "user", "content": "hi"}]).context is None
    with pytest.raises(ValueError, match="no user turn"):
        read_messages([{"role": "assistant", "content": "hello"}])


def test_context_is_read_only_when_the_latest_turn_alone_is_unsure() -> None:
    policy = Policy(("a", "b"), temperature=1.0, threshold=0.8, fallback_label="a")
    sure, unsure = np.array([0.0, 5.0]), np.array([0.0, 0.1])
    table = {"sure": sure, "vague": unsure, "vague\nabout b": np.array([0.0, 4.0]), "alone": unsure}
    conversations = [read_messages([{"role": "user", "content": "about b"}, {"role": "user", "content": "sure"}]),
                     read_messages([{"role": "user", "content": "about b"}, {"role": "user", "content": "vague"}]),
                     read_messages([{"role": "user", "content": "alone"}])]
    scores, used = conversation_scores(lambda texts: np.stack([table[t] for t in texts]), conversations, policy)
    assert used.tolist() == [False, True, False]
    assert scores.tolist() == [sure.tolist(), [0.0, 4.0], unsure.tolist()]


def test_distillation_targets_mix_the_label_with_out_of_fold_ngram_probabilities() -> None:
    rows = [Row(str(r["question_id"]), r["question"], r["category"], normalise_text(r["question"]), "s")
            for r in synthetic_rows(per_label=10, seed=1)]
    targets, summary = ngram_soft_targets(rows, CATEGORY, weight=0.5, seed=0)
    assert targets.shape == (len(rows), len(CATEGORY.labels))
    assert np.allclose(targets.sum(1), 1.0, atol=1e-5)
    gold = np.array([CATEGORY.label2id[r.label] for r in rows])
    assert (targets[np.arange(len(rows)), gold] >= 0.5).all()  # the label keeps at least its share
    assert 0 < summary["ngram_out_of_fold_accuracy"] <= 1


def test_written_rows_train_and_a_fifth_is_kept_back_to_fit_thresholds() -> None:
    from routeclf.settings import TrainSettings
    from routeclf.training.trainer import calibration_rows, training_extras

    written = chat_training_rows()
    clash = written[0]  # a written text that is also a test row stays out of training and calibration
    splits = {"train": [_row("Which of the following is a tort?", "law", 1)],
              "validation": [_row("what is a tort", "law", 2)] * 50, "test": [clash]}
    extras = training_extras(CATEGORY, TrainSettings(), splits)
    kept_train = [r for r in extras.train if r.source == "category_chat_train.jsonl"]
    assert len(kept_train) + len(extras.calibration) == len(written) - 1
    assert abs(len(extras.calibration) - 0.2 * len(written)) < 0.05 * len(written)
    assert {r.group for r in kept_train}.isdisjoint({r.group for r in extras.calibration})
    assert clash.group not in {r.group for r in extras.train + extras.calibration}
    assert any(r.id == "1+no-cues" for r in extras.train)
    assert training_extras(CATEGORY, TrainSettings(augment=False), splits).train == []
    rows = calibration_rows(splits["validation"], extras.calibration[:10])
    assert len(rows) == 50 + 10 * 5  # the written rows weigh as much as validation


def test_a_model_stores_its_typo_figures_and_scores_conversation_files(tiny_model, tmp_path) -> None:
    from routeclf.errors import RouteclfError
    from routeclf.evaluation.evaluate import evaluate_artifact

    metrics = json.loads((tiny_model / "metrics.json").read_text())
    for section in (metrics, metrics["paths"]["transformers"]):
        assert section["test_typos"]["n"] == section["test"]["n"] and "seeded typos" in \
            section["test_typos"]["data"]["source"]
    rows = [{"messages": [{"role": "user", "content": "integral of a matrix equation"},
                          {"role": "assistant", "content": "Sure."}, {"role": "user", "content": "and why?"}],
             "category": "math"},
            {"messages": [{"role": "user", "content": "the court ruled for the plaintiff"}], "category": "law"}]
    path = tmp_path / "conversations.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scored = evaluate_artifact(tiny_model, str(path), "all")
    assert scored["n"] == 2 and set(scored["conversation"]) == {
        "context_used", "accuracy_latest_turn_only", "accuracy_always_with_context"}
    path.write_text(json.dumps({"messages": [{"role": "assistant", "content": "hi"}], "category": "law"}) + "\n")
    with pytest.raises(RouteclfError, match="row 0: messages holds no user turn"):
        evaluate_artifact(tiny_model, str(path), "all")
