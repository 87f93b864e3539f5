"""The teacher's hidden states for hidden-state distillation, aligned token by token with the student's.

ALBERT-sim's vocabulary is e5's restricted to the pieces the training text uses, so a sentence splits
into the same pieces in both; e5 only adds its ``query: `` prefix in front. The aligned positions are
the student's text tokens and the last tokens before e5's ``</s>``; a sentence whose pieces differ
(text outside the cut vocabulary) just takes no part in the hidden-state term.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


def matched_layers(init_layer: int | list[int] | None, passes: int, teacher_layers: int) -> list[int]:
    """Which e5 layer (0-based) each student pass imitates: the layers the groups were copied from when
    there is one per pass; otherwise evenly spaced, ending at e5's last layer."""
    if isinstance(init_layer, list) and len(init_layer) == passes:
        return [int(x) for x in init_layer]
    return [int(round(x)) for x in np.linspace(teacher_layers - 1, 0, passes, endpoint=False)[::-1]]


@dataclass
class AlignedStates:
    teacher: list[torch.Tensor]  # per matched layer: (batch, teacher length, hidden)
    rows: torch.Tensor
    student_pos: torch.Tensor
    teacher_pos: torch.Tensor


class TeacherStates:
    def __init__(self, e5_dir: Path, layers: list[int]):
        from nlu.encoders.sentence_encoder import SentenceEncoder

        enc = SentenceEncoder(e5_dir)  # checks the directory is complete; float32 (the file is float16: slow on a CPU)
        self.prefix, self.tokenizer, self.model = enc.prefix, enc.tokenizer, enc.model
        self.layers = layers

    def states(self, texts: list[str], student_tokenizer, max_length: int) -> AlignedStates:  # type: ignore[no-untyped-def]
        s_ids = student_tokenizer(texts, add_special_tokens=False)["input_ids"]
        # One tokenization of the teacher side serves both the alignment and the forward pass: a sentence
        # short enough to align (n + 2 ≤ max_length) is never truncated at max_length + 8.
        batch = self.tokenizer([self.prefix + t for t in texts], padding=True, truncation=True,
                               max_length=max_length + 8, return_tensors="pt")
        lengths = batch["attention_mask"].sum(1).tolist()
        rows, s_pos, t_pos = [], [], []
        for i, s in enumerate(s_ids):
            n = len(s)
            t = batch["input_ids"][i, 1 : lengths[i] - 1].tolist()  # without <s> and </s>
            if not n or n + 2 > max_length or len(t) < n:
                continue
            mapped = self.tokenizer.convert_tokens_to_ids(student_tokenizer.convert_ids_to_tokens(s))
            if t[-n:] != mapped:
                continue
            offset = len(t) - n + 1  # +1: the teacher's <s>
            rows += [i] * n
            s_pos += range(1, n + 1)
            t_pos += range(offset, offset + n)
        with torch.no_grad():
            hidden = self.model(**batch, output_hidden_states=True).hidden_states
        return AlignedStates([hidden[layer + 1] for layer in self.layers], torch.tensor(rows, dtype=torch.long),
                             torch.tensor(s_pos, dtype=torch.long), torch.tensor(t_pos, dtype=torch.long))
