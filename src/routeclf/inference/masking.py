"""Masking found entities, reversibly: a router sends the masked text to an LLM and puts the
values back into the LLM's answer with the placeholder map.

`[PERSON]` (bare type) hides a value and its kind; `[PERSON_1]` (numbered) also keeps which
mentions are the same value, so that "[PERSON_1] wrote to [PERSON_2]" stays readable and every
placeholder maps to exactly one value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from routeclf.data.alignment import Entity

PLACEHOLDER_STYLES = ("type", "numbered")


@dataclass
class Masked:
    text: str
    placeholders: dict[str, str] = field(default_factory=dict)  # numbered placeholder -> original value


def mask(text: str, entities: list[Entity], style: str = "type") -> Masked:
    """`text` with each entity's value replaced by its placeholder. Overlapping entities keep the
    first. Numbered placeholders count per type in order of appearance; one value (as written)
    keeps one number, and a number whose placeholder already occurs in the text is skipped, so
    restoring never touches the user's own text."""
    if style not in PLACEHOLDER_STYLES:
        raise ValueError(f"unknown placeholder style {style!r}; use one of {', '.join(PLACEHOLDER_STYLES)}")
    pieces: list[str] = []
    position = 0
    numbers: dict[tuple[str, str], str] = {}
    counts: dict[str, int] = {}
    placeholders: dict[str, str] = {}
    for entity in sorted(entities, key=lambda e: e.start):
        if entity.start < position:
            continue
        value = text[entity.start : entity.end]
        if style == "type":
            placeholder = f"[{entity.type}]"
        else:
            placeholder = numbers.get((entity.type, value), "")
            while not placeholder or (placeholder in text and placeholder not in placeholders):
                counts[entity.type] = counts.get(entity.type, 0) + 1
                placeholder = f"[{entity.type}_{counts[entity.type]}]"
            numbers[(entity.type, value)] = placeholder
            placeholders[placeholder] = value
        pieces += [text[position : entity.start], placeholder]
        position = entity.end
    return Masked("".join(pieces) + text[position:], placeholders)


def restore(text: str, placeholders: dict[str, str]) -> str:
    """The values put back wherever their placeholders occur (in one pass: a restored value that
    looks like a placeholder is left as it is)."""
    if not placeholders:
        return text
    pattern = re.compile("|".join(re.escape(p) for p in sorted(placeholders, key=len, reverse=True)))
    return pattern.sub(lambda match: placeholders[match.group(0)], text)
