"""What a text costs the model: the encoder inputs (windows) it is read in. The service limits and
batches work in these units, not in characters."""

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
