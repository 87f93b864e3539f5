"""A sentence encoder over a transformers checkpoint described by ``callbot_encoder.json``."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from knowledge_base.errors import CallbotError

REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "callbot_encoder.json")
QUANTIZATIONS = ("none", "int8")


class ModelFilesMissing(CallbotError):
    pass


class SentenceEncoder:
    """Encodes text to L2-normalised float32 vectors (mean or [CLS] pooling, optional prefix).

    ``quantize="int8"`` runs the linear layers with int8 weights (torch dynamic quantization): per single
    sentence the weights are most of the memory traffic, so a small model gets faster on a CPU; vectors
    move slightly (benchmarks/latency.py and `callbot model verify --quantize int8` measure both).
    """

    def __init__(self, path: Path, threads: int | None = None, quantize: str = "none"):
        if quantize not in QUANTIZATIONS:
            raise CallbotError(f"Unknown quantization {quantize!r}; use one of {', '.join(QUANTIZATIONS)}.")
        missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
        if missing:
            raise ModelFilesMissing(
                f"Model directory {path} is missing {', '.join(missing)}; rebuild it "
                "(`callbot model base` for e5-small) or point --model at a complete checkpoint."
            )
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()  # loading a base model from a pre-training checkpoint is expected here

        if threads:
            torch.set_num_threads(threads)
        self.path = path
        self.meta: dict[str, Any] = json.loads((path / "callbot_encoder.json").read_text())
        self.name: str = self.meta.get("name", path.name)
        weights = (path / "model.safetensors").stat()
        # Retraining rewrites the weights under the same name: cached vectors must not outlive them.
        self.cache_id = f"{self.name}-{hashlib.sha1(f'{weights.st_size}:{weights.st_mtime_ns}'.encode()).hexdigest()[:8]}"
        self.pooling: str = self.meta.get("pooling", "mean")
        self.prefix: str = self.meta.get("prefix", "")
        self.max_length: int = int(self.meta.get("max_length", 128))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        kwargs: dict[str, Any] = {"dtype": torch.float32}
        if self.meta.get("kind") in ("e5", "albert-sim"):
            kwargs["add_pooling_layer"] = False  # we pool ourselves (mean or [CLS])
        self.model = AutoModel.from_pretrained(path, **kwargs).eval()
        self.quantize = quantize
        if quantize == "int8":
            self.model = _int8(self.model)
            self.cache_id += "-int8"  # its vectors differ slightly: never share a vector cache with float32
        self._torch = torch

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        torch = self._torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch: less padding
        batches = range(0, len(texts), batch_size)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"encoding with {self.name}", unit="batch")
        with torch.inference_mode():
            for start in batches:
                idx = order[start : start + batch_size]
                batch = self.tokenizer(
                    [self.prefix + texts[i] for i in idx], padding=True, truncation=True,
                    max_length=self.max_length, return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                if self.pooling == "cls":
                    vec = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                vec = torch.nn.functional.normalize(vec, dim=-1)
                out[idx] = vec.numpy()
        return out

    def token_states(self, texts: list[str], max_length: int = 256, batch_size: int = 16) -> list[np.ndarray]:
        """Each text's last-layer token states, (tokens, dim) float32, padding removed (for token-level heads)."""
        torch = self._torch
        out: list[np.ndarray] = [np.zeros((0, self.dim), np.float32)] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                batch = self.tokenizer([self.prefix + texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=max_length, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                for row, i in enumerate(idx):
                    n = int(batch["attention_mask"][row].sum())
                    out[i] = hidden[row, :n].float().numpy().copy()
        return out


_shared: dict[tuple[str, str], SentenceEncoder] = {}
_shared_lock = threading.Lock()


def shared_encoder(path: Path, quantize: str = "none") -> SentenceEncoder:
    """One loaded encoder per (checkpoint, quantization) in a process: the compliance guard and the complaint
    classifier both read e5-small int8 in the action server, which need not hold it twice."""
    key = (str(path.resolve()), quantize)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = SentenceEncoder(path, quantize=quantize)
        return _shared[key]


def _int8(model):  # type: ignore[no-untyped-def]
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch announces the move of eager quantization to torchao
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
