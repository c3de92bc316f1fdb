"""The one decision rule: scores and a policy -> the answer a router acts on."""

from __future__ import annotations

import numpy as np

from routeclf.inference.decision import Policy, decide

LABELS = ("code", "math", "other")


def test_a_classifier_abstains_to_its_fallback_below_the_threshold() -> None:
    policy = Policy(LABELS, temperature=1.0, threshold=0.6, fallback_label="other")
    scores = np.log(np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7]]))
    decisions = decide(scores, policy)
    assert decisions.labels_of(decisions.top) == ["code", "code", "other"]
    assert decisions.labels_of(decisions.answer) == ["code", "other", "other"]
    # Only the second is an abstention: the third is a confident, real `other`.
    assert decisions.abstained.tolist() == [False, True, False]
    row = decisions.row(1)
    assert (row["label"], row["abstained"], row["top_label"]) == ("other", True, "code")
    # A caller's own threshold replaces the policy's for that call.
    assert decide(scores, policy, threshold=0.0).abstained.tolist() == [False, False, False]


def test_temperature_is_applied_once_and_can_change_the_answer() -> None:
    scores = np.log(np.array([[0.55, 0.40, 0.05]]))
    sharp = decide(scores, Policy(LABELS, temperature=0.5, threshold=0.6, fallback_label="other"))
    flat = decide(scores, Policy(LABELS, temperature=1.0, threshold=0.6, fallback_label="other"))
    assert sharp.probabilities[0, 0] > 0.6 > flat.probabilities[0, 0]
    assert sharp.labels_of(sharp.answer) == ["code"] and flat.labels_of(flat.answer) == ["other"]


def test_without_a_fallback_the_top_label_is_always_answered() -> None:
    decisions = decide(np.zeros((2, 3)), Policy(LABELS, temperature=1.0, threshold=0.9))
    assert not decisions.abstained.any() and (decisions.answer == decisions.top).all()


def test_a_detector_answers_at_its_threshold_and_never_abstains() -> None:
    policy = Policy(("benign", "jailbreak"), temperature=1.0, threshold=0.3, fallback_label="benign",
                    positive_label="jailbreak")
    scores = np.log(np.array([[0.8, 0.2], [0.65, 0.35], [0.1, 0.9]]))
    decisions = decide(scores, policy)
    assert decisions.labels_of(decisions.answer) == ["benign", "jailbreak", "jailbreak"]
    assert decisions.labels_of(decisions.top) == ["benign", "benign", "jailbreak"]
    assert np.allclose(decisions.score, [0.2, 0.35, 0.9]) and not decisions.abstained.any()
