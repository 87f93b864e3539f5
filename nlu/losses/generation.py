"""Generation loss (GenF): next-token cross-entropy over segment 2 of a UniLM-masked sequence.

Inputs: ``logits`` (batch, len, vocab) from the masked-LM head, ``input_ids`` (batch, len) and
``target_mask`` (batch, len) marking segment-2 tokens that must be predicted (their own closing
[SEP] included, so the model learns where to stop). Position t predicts token t+1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def generation_loss(logits: torch.Tensor, input_ids: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    pred = logits[:, :-1]
    gold = input_ids[:, 1:]
    mask = target_mask[:, 1:].bool()
    if not mask.any():
        return logits.sum() * 0.0
    return F.cross_entropy(pred[mask], gold[mask])


def generation_loss_from_hidden(head: torch.nn.Module, hidden: torch.Tensor, input_ids: torch.Tensor,
                                target_mask: torch.Tensor) -> torch.Tensor:
    """The same loss, applying the vocabulary head only where a token is predicted.

    ``head`` maps (m, hidden) to (m, vocab) logits (ALBERT's ``predictions``); ``hidden`` is the
    final layer (batch, len, hidden). Segment-1 positions never pay for the vocabulary softmax.
    """
    mask = target_mask[:, 1:].bool()
    if not mask.any():
        return hidden.sum() * 0.0
    logits = head(hidden[:, :-1][mask])
    return F.cross_entropy(logits, input_ids[:, 1:][mask])
