"""The FMLC network: encoder → per-label attention → gated graph network over labels → a sigmoid per label.

- **Encoder** ``gru``: word vectors (frozen: 1,500 complaints are too few to move 40k vectors without forgetting
  the words only the package corpus taught) → BiGRU. ``states``: token states of a transformer encoder (e5-small,
  frozen, computed outside) → a linear layer; the alternative the issue asks to measure.
- **Label attention** (LWAN): each label has a trainable query; it attends over the token states and gets its own
  view of the complaint, so a long complaint can be about fees in one sentence and a rude agent in another.
- **Gated graph network** (Li et al. 2016), ``steps`` rounds: a label's message is the sum of its neighbours'
  transformed views along the co-occurrence graph (both edge directions), and a GRU cell gates how much of it the
  label takes. With the identity graph (ablation) a label only talks to itself.
  The views are projected to ``graph_dim`` first: 37 labels × a batch of 32 are 1,184 nodes, and a GRU cell
  over 300-wide nodes was most of an epoch's time on a CPU.
- **Output**: per label, a score over [final node state; attention view].
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class FMLCNet(nn.Module):
    def __init__(self, labels: int, adjacency: np.ndarray, *, encoder: str = "gru", embeddings: np.ndarray | None = None,
                 input_dim: int = 300, hidden: int = 150, graph_dim: int = 128, steps: int = 2, dropout_input: float = 0.2,
                 dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        if encoder == "gru":
            if embeddings is None:
                raise ValueError("the gru encoder needs word vectors")
            self.embed = nn.Embedding.from_pretrained(torch.tensor(embeddings), freeze=True, padding_idx=0)
            self.rnn = nn.GRU(embeddings.shape[1], hidden, batch_first=True, bidirectional=True)
            dim = 2 * hidden
        elif encoder == "states":
            dim = 2 * hidden
            self.project = nn.Linear(input_dim, dim)
        else:
            raise ValueError(f"unknown encoder {encoder!r}")
        self.drop_in, self.drop = nn.Dropout(dropout_input), nn.Dropout(dropout)
        self.keys = nn.Linear(dim, dim)
        self.queries = nn.Parameter(torch.empty(labels, dim))
        nn.init.xavier_uniform_(self.queries)
        self.register_buffer("adj", torch.tensor(adjacency, dtype=torch.float32))
        self.to_nodes = nn.Linear(dim, graph_dim)
        self.forward_msg, self.backward_msg = nn.Linear(graph_dim, graph_dim), nn.Linear(graph_dim, graph_dim)
        self.cell = nn.GRUCell(graph_dim, graph_dim)
        self.steps = steps
        self.out_w = nn.Parameter(torch.empty(labels, graph_dim + dim))
        nn.init.xavier_uniform_(self.out_w)
        self.out_b = nn.Parameter(torch.zeros(labels))

    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.encoder == "gru":
            x = self.drop_in(self.embed(inputs))
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
            h, _ = self.rnn(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=inputs.shape[1])
        else:
            h = torch.tanh(self.project(self.drop_in(inputs)))
        return self.drop(h)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.encode(inputs, lengths)  # (B, T, d)
        mask = torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]  # (B, T)
        scores = torch.tanh(self.keys(h)) @ self.queries.T  # (B, T, L)
        scores = scores.masked_fill(~mask[:, :, None], float("-inf"))
        alpha = torch.softmax(scores, dim=1)
        views = torch.einsum("btl,btd->bld", alpha, h)  # (B, L, d): each label's view of the complaint
        nodes = torch.tanh(self.to_nodes(views))
        b, labels, d = nodes.shape
        for _ in range(self.steps):
            message = self.adj @ self.forward_msg(nodes) + self.adj.T @ self.backward_msg(nodes)
            nodes = self.cell(message.reshape(b * labels, d), nodes.reshape(b * labels, d)).reshape(b, labels, d)
        return (torch.cat([nodes, views], dim=-1) * self.out_w).sum(-1) + self.out_b
