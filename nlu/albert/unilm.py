"""Building ALBERT-sim inputs: plain sentences (encoding) and UniLM pairs (generation + similarity).

A UniLM sequence is ``[CLS] a [SEP] b [SEP]`` with token types 0/1. Segment-1 tokens attend to
segment 1 only (so [CLS] is a sentence vector of ``a`` alone); segment-2 tokens attend to segment 1
and causally to earlier segment-2 tokens (so ``b`` can be generated token by token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class UnilmBatch:
    input_ids: torch.Tensor  # (n, L)
    token_type_ids: torch.Tensor  # (n, L)
    attention_mask: torch.Tensor  # (n, 1, L, L) bool
    target_mask: torch.Tensor  # (n, L): segment-2 tokens to predict


def unilm_mask(token_type_ids: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
    """(n, 1, L, L) boolean mask: True where query position i may attend to key position j."""
    n, length = token_type_ids.shape
    seg1 = token_type_ids == 0
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=token_type_ids.device))
    seg2 = ~seg1
    allowed = seg1[:, None, :] | (seg2[:, :, None] & seg2[:, None, :] & causal)
    # Padding is neither attended to nor allowed to see segment 2.
    allowed = allowed & key_valid[:, None, :]
    allowed = allowed & ~(seg1[:, :, None] & seg2[:, None, :])
    return allowed[:, None, :, :]


def build_unilm_batch(pairs_ids: list[tuple[list[int], list[int]]], cls_id: int, sep_id: int, pad_id: int,
                      max_len: int = 32) -> UnilmBatch:
    rows, types, targets = [], [], []
    for a, b in pairs_ids:
        a, b = a[: max_len - 2], b[: max_len - 1]
        ids = [cls_id, *a, sep_id, *b, sep_id]
        tt = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        tgt = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        rows.append(ids)
        types.append(tt)
        targets.append(tgt)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    token_type_ids = torch.ones((len(rows), width), dtype=torch.long)  # padding counts as segment 2: never seen by seg 1
    target_mask = torch.zeros((len(rows), width), dtype=torch.long)
    valid = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (ids, tt, tgt) in enumerate(zip(rows, types, targets, strict=True)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        token_type_ids[i, : len(tt)] = torch.tensor(tt)
        target_mask[i, : len(tgt)] = torch.tensor(tgt)
        valid[i, : len(ids)] = True
    return UnilmBatch(input_ids, token_type_ids, unilm_mask(token_type_ids, valid), target_mask)
