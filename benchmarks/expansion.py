"""Quality of generated extension questions: of the top-10 per source question, the share e5 (the
teacher) judges a paraphrase at its calibrated threshold, the share new to the knowledge base, and examples."""

from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.common import save
from callbot.context import get_kb
from nlu.encoders.sentence_encoder import SentenceEncoder
from nlu.generation_quality import TOP, faq_sources, measure, teacher_threshold
from nlu.generation_quality import save as save_beside_model
from nlu.model_cache import e5_dir


def run(console: Console) -> dict:
    from callbot.settings import get_settings
    from nlu.service import get_generator

    generator = get_generator()
    teacher = SentenceEncoder(e5_dir(get_settings().models_dir))
    threshold, how = teacher_threshold(teacher)
    kb = get_kb()
    sources, existing = faq_sources(kb)
    configured = generator.copy_bias
    existing_list = sorted(existing)
    existing_vecs = teacher.encode(existing_list)
    runs = {bias: measure(generator, bias, sources, teacher, threshold, existing, existing_vecs)
            for bias in sorted({0.0, 1.0, 2.0, 3.0, 4.0, configured})}
    generator.copy_bias = configured
    rerank = _rerank(generator, sources, teacher, threshold, existing, existing_vecs)
    best_bias = max(runs, key=lambda b: runs[b]["useful_share"])
    result = {"model": generator.name, "sources": len(sources), "teacher_threshold": threshold, "threshold_from": how,
              "configured_copy_bias": configured, "by_copy_bias": runs, "rerank": rerank, **runs[configured]}
    table = Table("copy bias", "candidates", "teacher-judged paraphrases", "new to the KB",
                  "paraphrase, not a near-duplicate (< 0.98) of a KB question", "vs no bias")
    base = runs[0.0]["useful_share"]
    for bias, r in runs.items():
        ratio = f"{r['useful_share'] / base:.2f}×" if base else "-"
        table.add_row(f"{bias:g}" + (" (configured)" if bias == configured else ""), str(r["candidates"]),
                      f"{r['paraphrase_share']:.1%}", f"{r['new_to_kb_share']:.1%}", f"{r['useful_share']:.1%}", ratio)
    console.print(f"{generator.name}: top-{TOP} beam candidates for {len(sources)} FAQ standard questions; "
                  f"teacher threshold {threshold:.4f} ({how})")
    console.print(table)
    examples = Table("source", f"generated (copy bias {best_bias:g})", "teacher cosine")
    for src, cand, v in runs[best_bias]["examples"]:
        examples.add_row(src, cand, f"{v:.4f}")
    console.print(examples)
    order = Table("which 10 of the beam's candidates", "useful", "teacher-judged paraphrases", "vs beam order",
                  title=f"Choosing among up to {TOP * 3} beam candidates per source (copy bias {configured:g})")
    for how, r in rerank["by_selection"].items():
        base_r = rerank["by_selection"]["beam order"]["useful_share"]
        order.add_row(how, f"{r['useful_share']:.1%}", f"{r['paraphrase_share']:.1%}",
                      f"{r['useful_share'] / base_r:.2f}×" if base_r else "-")
    console.print(order)
    save("expansion", result)
    save_beside_model(generator.path, {**runs[configured], "copy_bias": configured, "sources": len(sources),
                                       "teacher_threshold": threshold, "threshold_from": how,
                                       "kb_version": kb.store.kb_version()})
    return result


def _rerank(generator, sources: list[str], teacher: SentenceEncoder, threshold: float,  # type: ignore[no-untyped-def]
            existing: set[str], existing_vecs: np.ndarray) -> dict:
    """The beam's own order vs the round-trip score (how well a candidate regenerates its source)."""
    picks: dict[str, list[tuple[bool, bool]]] = {"beam order": [], "round trip": [], "beam + round trip": []}
    for src in sources:
        cands = [c for c in generator.beam(src, TOP) if c and c != src and c not in existing]
        if not cands:
            continue
        vecs = teacher.encode([src, *cands])
        para = vecs[1:] @ vecs[0] >= threshold
        near = (vecs[1:] @ existing_vecs.T).max(axis=1) >= 0.98 if len(existing_vecs) else np.zeros(len(cands), bool)
        back = np.array(generator.back_scores(src, cands))
        beam_rank = np.arange(len(cands))
        back_rank = np.argsort(np.argsort(-back))
        orders = {"beam order": beam_rank, "round trip": np.argsort(-back),
                  "beam + round trip": np.argsort(back_rank + beam_rank, kind="stable")}
        for how, idx in orders.items():
            picks[how] += [(bool(para[i]), bool(para[i] and not near[i])) for i in idx[:TOP]]
    by = {how: {"candidates": len(p), "paraphrase_share": round(sum(a for a, _ in p) / max(1, len(p)), 4),
                "useful_share": round(sum(b for _, b in p) / max(1, len(p)), 4)} for how, p in picks.items()}
    return {"by_selection": by}
