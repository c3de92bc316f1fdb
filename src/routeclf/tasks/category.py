"""The category task's training-only rows: exam questions read the way chat requests are written,
and chat-style requests written for this project.

MMLU-Pro is an exam. Its questions carry cues a router never sees ("Which of the following ...",
blanks to fill) and a third of them are longer than the 64 tokens the encoder reads in training,
so the question itself, at the end, is cut off. Each training question therefore also appears
without its exam cues and, when long, as its final sentences alone. The views are made from the
train split's rows only and keep their row's group, so no view crosses a split.
"""

from __future__ import annotations

import importlib.resources
import json
import re

from routeclf.data.sources import Row, normalise_text

CHAT_TRAINING_FILE = "category_chat_train.jsonl"
LONG_WORDS = 40  # a question longer than this also trains as its ending
ENDING_WORDS = 30

_CUES = [
    (re.compile(r"(?i)\b(which|what)( one)? of the following\b"), r"\1"),
    (re.compile(r"(?i)^\s*question\s*:\s*"), ""),
    (re.compile(r"(?i)\s*\banswer\s*:\s*$"), ""),
    (re.compile(r"_{2,}"), "..."),
    (re.compile(r"(?i)\bthe following\b"), "these"),
]
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


def without_exam_cues(text: str) -> str:
    for pattern, replacement in _CUES:
        text = pattern.sub(replacement, text)
    return re.sub(r"\s+", " ", text).strip()


def ending(text: str) -> str:
    """The last sentences of a long question, up to about `ENDING_WORDS` words: where its
    question is asked."""
    sentences = _SENTENCE_END.split(text.strip())
    kept: list[str] = []
    while sentences and sum(len(s.split()) for s in kept) < ENDING_WORDS:
        kept.insert(0, sentences.pop())
    return " ".join(kept)


def question_views(rows: list[Row], seed: int) -> list[Row]:
    """Each row without its exam cues (when it has any) and, when long, its ending."""
    del seed  # the views are deterministic
    views = []
    for row in rows:
        plain = without_exam_cues(row.text)
        if plain and plain != row.text:
            views.append(Row(f"{row.id}+no-cues", plain, row.label, row.group, row.source))
        if len(row.text.split()) > LONG_WORDS:
            end = ending(plain or row.text)
            if end and len(end.split()) < len(row.text.split()):
                views.append(Row(f"{row.id}+ending", end, row.label, row.group, row.source))
    return views


def chat_training_rows() -> list[Row]:
    """Chat-style requests and conversations written for this project as training text.

    Their provenance is in `data/README.md` beside the file. A conversation trains as its latest
    user turn followed by the earlier ones, as a follow-up is read at inference."""
    from routeclf.inference.conversation import read_messages

    resource = importlib.resources.files("routeclf.tasks") / "data" / CHAT_TRAINING_FILE
    rows = []
    for n, line in enumerate(resource.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        record = json.loads(line)
        if "messages" in record:
            conversation = read_messages(record["messages"])
            text = conversation.context or conversation.latest
        else:
            text = record["text"]
        rows.append(Row(f"chat-train-{n}", text, record["label"], normalise_text(text), CHAT_TRAINING_FILE))
    return rows
