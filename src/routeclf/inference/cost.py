"""What a text costs the model: the encoder inputs (windows) it is read in, which the service limits
and batches, and the characters it reads, by which the service predicts how long its queue takes."""

from __future__ import annotations

import math


def window_stride(max_length: int) -> int:
    """Tokens shared by consecutive windows of a long text, in training and inference alike."""
    return max(1, max_length // 4)


def model_inputs(tokenizer, texts: list[str], max_length: int, windowed: bool) -> list[int]:
    """Encoder inputs per text: 1 for a text read whole (truncated), else its window count."""
    if not windowed:
        return [1] * len(texts)
    room = max_length - tokenizer.num_special_tokens_to_add()
    step = max(1, room - window_stride(max_length))
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return [1 if n <= room else 1 + math.ceil((n - room) / step) for n in lengths]


# A text read whole is cut at `max_length` tokens; English runs about 4 to 5 characters a token, so
# a text's first `max_length * CHARS_PER_TOKEN` characters bound what the model reads of it.
CHARS_PER_TOKEN = 6


def read_chars(text: str, max_length: int, windowed: bool) -> int:
    """Characters of `text` the model reads: what its scoring time grows with (all of a windowed
    text; a truncated text's head)."""
    return len(text) if windowed else min(len(text), max_length * CHARS_PER_TOKEN)
