"""Sentence vectors from ALBERT-sim: the [CLS] state of ``[CLS] sentence [SEP]`` (segment 1 only)."""

from __future__ import annotations

import torch


def cls_vectors(albert: torch.nn.Module, tokenizer, texts: list[str], max_length: int = 64) -> torch.Tensor:  # type: ignore[no-untyped-def]
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    out = albert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 token_type_ids=torch.zeros_like(batch["input_ids"]))
    return out.last_hidden_state[:, 0]
