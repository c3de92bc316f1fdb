"""The `jailbreak` loader: rows for prompt-injection detection (`benign` or `jailbreak`).

From a folder laid out like the shared data folder, the rows combine three sources:
jackhhao (`jailbreak/jackhhao/default_full.csv`: long DAN-style jailbreaks, benign prompts and
role-play), deepset (`jailbreak/deepset-prompt-injections/{train,test}.csv`: short injections,
English and German) and, as short benign negatives, a seeded sample of MMLU-Pro questions as
large as the number of attacks. Without those short negatives and short injections a model learns
length: a length-only rule already scores 0.80 on jackhhao alone. The MMLU-Pro questions are easy
padding (no detector flags them), so the threshold's false-positive budget is fitted without them
(`threshold_excludes_sources` in the task file).

Training only (`written_training_rows`): requests written for this project in English and six
other languages, hard benign ones (prompts, roles and jailbreaks talked about; role-play; security
work; ordinary requests in German, Spanish, French, Italian, Portuguese and Dutch) and attacks
beyond the public sets' shapes (fiction, hypotheticals, hidden in documents, split over turns,
obfuscated, non-English); provenance in `data/README.md`.
"""

from __future__ import annotations

import importlib.resources
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

from routeclf.errors import DataError

if TYPE_CHECKING:
    from routeclf.data.sources import LoadedData, Row
    from routeclf.tasks.base import Task

JACKHHAO = Path("jailbreak/jackhhao/default_full.csv")
DEEPSET = (Path("jailbreak/deepset-prompt-injections/train.csv"), Path("jailbreak/deepset-prompt-injections/test.csv"))
MMLU_PRO = Path("mmlu-pro/test.jsonl")
NEGATIVES_SEED = 42  # fixed, so that reloading the folder always gives the same rows (and sha256)
WRITTEN_FILES = ("jailbreak_train_en.jsonl", "jailbreak_train_multilingual.jsonl")


def _read(root: Path, relative: Path) -> list[dict]:
    from routeclf.data.sources import read_records

    path = root / relative
    if not path.is_file():
        raise DataError(f"{root} is not laid out like the shared data folder: {relative} is missing")
    return read_records(str(path))


def load_folder(root: Path, task: Task) -> LoadedData:
    # Imported here: the data layer imports the task registry, which imports this module.
    from routeclf.data.sources import LoadedData, Row, normalise_text, rows_sha256

    candidates: list[tuple[str, str, str]] = []  # (source, text, label)
    for record in _read(root, JACKHHAO):
        candidates.append(("jackhhao", record["prompt"], str(record["type"]).strip()))
    for relative in DEEPSET:
        for record in _read(root, relative):
            candidates.append(("deepset", record["text"], "jailbreak" if int(record["label"]) == 1 else "benign"))
    attacks = sum(1 for _, _, label in candidates if label == "jailbreak")
    questions = sorted({r["question"] for r in _read(root, MMLU_PRO)})
    for text in random.Random(NEGATIVES_SEED).sample(questions, min(attacks, len(questions))):
        candidates.append(("mmlu-pro", text, "benign"))

    # One row per normalised text: copies across sources would otherwise be counted twice.
    labels_by_group: dict[str, set[str]] = {}
    for _, text, label in candidates:
        if isinstance(text, str) and text.strip():
            labels_by_group.setdefault(normalise_text(text), set()).add(label)
    conflicting = sorted(g for g, labels in labels_by_group.items() if len(labels) > 1)
    if conflicting:
        raise DataError(f"{len(conflicting)} texts carry both labels across sources, e.g. {conflicting[0][:80]!r}")
    rows: list[Row] = []
    seen: set[str] = set()
    for source, text, label in candidates:
        if not isinstance(text, str) or not text.strip():
            continue
        if label not in task.labels:
            raise DataError(f"{source}: unknown label {label!r}; the task's labels are {', '.join(task.labels)}")
        group = normalise_text(text)
        if group in seen:
            continue
        seen.add(group)
        rows.append(Row(f"{source}-{len(rows)}", text, label, group, source))
    return LoadedData(rows=rows, source=str(root), sha256=rows_sha256(rows))


MIXED_CHARS = 500  # about 110 tokens: a mixture fits in one 128-token training window


def _tail(text: str, room: int) -> str:
    """The last `room` characters of a text, starting at a word."""
    if len(text) <= room:
        return text
    cut = text[-room:]
    return cut.split(" ", 1)[1] if " " in cut else cut


def mixed_rows(rows: list[Row], seed: int) -> list[Row]:
    """Mixtures made from one split's rows: each short attack after the tail of benign texts
    (still an attack), and as many benign texts joined (still benign). At inference the window
    that holds an attack buried in a long benign text looks like the first kind; without these
    the model and the n-gram blend have only seen attacks alone."""
    from routeclf.data.sources import Row

    rng = random.Random(seed)
    benign = [r for r in rows if r.label == "benign"]
    attacks = [r for r in rows if r.label == "jailbreak" and len(r.text) < MIXED_CHARS // 2]
    if not benign:
        return []
    extra = []
    for attack in attacks:
        room = MIXED_CHARS - len(attack.text)
        parts = [rng.choice(benign)]
        while sum(len(r.text) + 1 for r in parts) < room:
            parts.append(rng.choice(benign))
        preamble = _tail("\n".join(r.text for r in parts), room)
        ending = _tail(rng.choice(benign).text, len(attack.text))
        extra.append(Row(f"{attack.id}+after-benign", f"{preamble}\n{attack.text}", "jailbreak", attack.group,
                         attack.source))
        extra.append(Row(f"{attack.id}+benign-only", f"{preamble}\n{ending}", "benign", parts[0].group, parts[0].source))
    return extra


def written_training_rows() -> list[Row]:
    """Requests written for this project as training text (`data/README.md`). A conversation
    trains as the detector reads it: its user and tool turns in order. Each row's source names
    its language (`written-de`), so that slices report languages apart."""
    from routeclf.data.sources import Row, normalise_text
    from routeclf.inference.conversation import whole_conversation

    folder = importlib.resources.files("routeclf.tasks") / "data"
    rows = []
    for name in WRITTEN_FILES:
        for n, line in enumerate((folder / name).read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            record = json.loads(line)
            text = whole_conversation(record["messages"]) if "messages" in record else record["text"]
            rows.append(Row(f"{name.removesuffix('.jsonl')}-{n}", text, record["label"], normalise_text(text),
                            f"written-{record['lang']}"))
    return rows
