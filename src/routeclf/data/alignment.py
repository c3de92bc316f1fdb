"""Character spans <-> token BIO tags, through a fast tokenizer's offsets.

Training labels the first sub-token of each word (and of each piece of a word that a span
boundary cuts) and leaves the other sub-tokens out of the loss. Prediction goes the other way:
each word's tag, read from its first sub-token, covers the whole word, the words' tags are read
as one valid BIO sequence (`decode_tags`), and consecutive words of one entity merge into one
character span.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import log_softmax

Span = tuple[int, int, str]  # character start, end (exclusive), entity type


@dataclass(frozen=True)
class Entity:
    type: str
    value: str
    start: int
    end: int
    confidence: float


def _entity_at(position: int, spans: Sequence[Span]) -> int | None:
    for index, (start, end, _) in enumerate(spans):
        if start <= position < end:
            return index
    return None


def token_tags(offsets: Sequence[tuple[int, int]], word_ids: Sequence[int | None], spans: Sequence[Span]) -> list[str | None]:
    """One BIO tag per token, or None for tokens outside the loss (special tokens, and sub-tokens
    after the first of a word unless a span boundary falls inside the word)."""
    tags: list[str | None] = []
    previous_word: int | None = None
    previous_entity: int | None = None
    started: set[int] = set()
    for (start, end), word in zip(offsets, word_ids):
        if word is None or start == end:
            tags.append(None)
            previous_word, previous_entity = None, None
            continue
        entity = _entity_at(start, spans)
        if word == previous_word and entity == previous_entity:
            tags.append(None)
            continue
        if entity is None:
            tags.append("O")
        else:
            tags.append(("I-" if entity in started else "B-") + spans[entity][2])
            started.add(entity)
        previous_word, previous_entity = word, entity
    return tags


def units(
    offsets: Sequence[tuple[int, int]], word_ids: Sequence[int | None], opens: Sequence[bool] | None = None
) -> list[list[int]]:
    """Token indices grouped into the units a tag is given for, special tokens left out: words,
    also cut where `opens` is true (the tokens `token_tags` labelled)."""
    groups: list[list[int]] = []
    previous: int | None = None
    for index, ((start, end), word) in enumerate(zip(offsets, word_ids)):
        if word is None or start == end:
            previous = None
            continue
        if word == previous and groups and not (opens is not None and opens[index]):
            groups[-1].append(index)
        else:
            groups.append([index])
        previous = word
    return groups


def merge_units(
    text: str, tagged: Sequence[tuple[int, int, str, float]], threshold: float = 0.0
) -> list[Entity]:
    """Words `(start, end, tag, probability)` in text order -> entities.

    `B-X` opens an entity; `I-X` continues an open `X` (or opens one: models sometimes skip the
    `B-`); `O` or another type closes it. An entity's confidence is the mean probability of its
    words' tags; entities below `threshold` are dropped.
    """
    entities: list[Entity] = []
    current: list[tuple[int, int, str, float]] = []

    def close() -> None:
        if current:
            start, end, kind = current[0][0], current[-1][1], current[0][2][2:]
            confidence = sum(p for *_, p in current) / len(current)
            if confidence >= threshold:
                entities.append(Entity(kind, text[start:end], start, end, round(confidence, 6)))
            current.clear()

    for start, end, tag, probability in tagged:
        if tag == "O":
            close()
            continue
        kind = tag[2:]
        if tag.startswith("B-") or not current or current[0][2][2:] != kind:
            close()
        current.append((start, end, tag, probability))
    close()
    return entities


@lru_cache(maxsize=8)
def _transitions(labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Which labels are `I-` tags, and the log transition score [previous, next]: 0 where the
    move is valid, -inf where it is not."""
    inside = np.array([label.startswith("I-") for label in labels])
    allowed = np.array([[not inside[j] or (previous != "O" and previous[2:] == label[2:])
                         for j, label in enumerate(labels)] for previous in labels])
    return inside, np.where(allowed, 0.0, -np.inf)


def decode_tags(logits: np.ndarray, labels: Sequence[str]) -> list[int]:
    """The most probable valid BIO sequence (Viterbi) for words' logits (or log-probabilities):
    `I-X` only after `B-X` or `I-X`.

    Reading each word's best tag alone lets `O I-PERSON` open a name at its second word, or
    `B-PERSON I-LOCATION` cut it; the constrained path weighs the whole sequence instead.
    """
    n = len(logits)
    if n == 0:
        return []
    log_probabilities = log_softmax(logits, axis=-1)
    inside, transition = _transitions(tuple(labels))
    score = np.where(inside, -np.inf, log_probabilities[0])
    back = np.zeros((n, len(labels)), dtype=int)
    for t in range(1, n):
        candidates = score[:, None] + transition
        back[t] = candidates.argmax(0)
        score = candidates.max(0) + log_probabilities[t]
    path = [int(score.argmax())]
    for t in range(n - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]
