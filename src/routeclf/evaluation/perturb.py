"""A seeded typo-perturbed copy of an evaluation split: real requests are typed in a hurry.

Each word of four or more letters is, with probability `rate`, hit by one keyboard slip: two
neighbouring letters swapped, a letter dropped, a letter doubled, or a letter replaced by a key
beside it. Half the rows also lose their punctuation. The copy keeps ids and labels, so its
figures compare row for row with the clean split's.
"""

from __future__ import annotations

import dataclasses
import random
import re

from routeclf.data.sources import Row

TYPO_RATE = 0.15
TYPOS_SECTION = "test_typos"  # its name in metrics.json
_WORD = re.compile(r"[A-Za-z]{4,}")
_PUNCTUATION = re.compile(r"[^\w\s]")
_KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
_NEIGHBOURS = {
    key: "".join(row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)) for row in _KEYBOARD for i, key in enumerate(row)
}


def _slip(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)  # first and last letters are the ones people get right
    kind = rng.choice(("swap", "drop", "double", "neighbour"))
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "drop":
        return word[:i] + word[i + 1:]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    near = _NEIGHBOURS.get(word[i].lower())
    return word[:i] + (rng.choice(near) if near else word[i]) + word[i + 1:]


def with_typos(text: str, rng: random.Random, rate: float = TYPO_RATE) -> str:
    text = _WORD.sub(lambda m: _slip(m.group(), rng) if rng.random() < rate else m.group(), text)
    if rng.random() < 0.5:
        text = re.sub(r"\s+", " ", _PUNCTUATION.sub(" ", text)).strip() or text
    return text


def typo_copy(rows: list[Row], seed: int, rate: float = TYPO_RATE) -> list[Row]:
    """The same rows with typos; the same seed gives the same copy."""
    rng = random.Random(seed)
    return [dataclasses.replace(r, text=with_typos(r.text, rng, rate)) for r in rows]
