"""Quality of generated extension questions: of the top-10 per source question, the share e5 (the
teacher) judges a paraphrase at its calibrated threshold, the share new to the knowledge base, and examples."""

from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.common import save
from callbot.context import get_kb
from nlu.data.corpora import corpus_file, read_pairs, sample
from nlu.encoders.sentence_encoder import SentenceEncoder
from nlu.model_cache import e5_dir
from nlu.similarity_eval import encoder_scores, evaluate_pairs

SOURCES = 30
TOP = 10


def _teacher_threshold(teacher: SentenceEncoder) -> tuple[float, str]:
    try:
        dev = sample(read_pairs(corpus_file("lcqmc_train.tsv"), "dev"), 2000, seed=11)
    except Exception:
        return 0.90, "default 0.90 (no corpora to calibrate on)"
    r = evaluate_pairs(encoder_scores(teacher, dev), dev)
    return r["threshold"], f"best-accuracy threshold on LCQMC dev ({r['accuracy']:.1f}% acc)"


def run(console: Console) -> dict:
    from callbot.settings import get_settings
    from nlu.service import get_generator

    generator = get_generator()
    teacher = SentenceEncoder(e5_dir(get_settings().models_dir))
    threshold, how = _teacher_threshold(teacher)
    kb = get_kb()
    faq = kb.intents("faq")
    existing = {q["text"] for it in faq for q in kb.intent(it["id"])["extension_questions"]} | {it["standard_question"] for it in faq}
    sources = [it["standard_question"] for it in sample(faq, SOURCES, seed=2)]
    total = paraphrase = new = 0
    examples = []
    for src in sources:
        cands = [c for c in generator.beam(src, TOP) if c and c != src][:TOP]
        if not cands:
            continue
        vecs = teacher.encode([src, *cands])
        sims = vecs[1:] @ vecs[0]
        total += len(cands)
        paraphrase += int((sims >= threshold).sum())
        new += sum(c not in existing for c in cands)
        if len(examples) < 10:
            best = int(np.argmax(sims))
            examples.append((src, cands[best], float(sims[best])))
    result = {"model": generator.name, "sources": len(sources), "candidates": total, "teacher_threshold": threshold,
              "threshold_from": how, "paraphrase_share": round(paraphrase / max(1, total), 4),
              "new_to_kb_share": round(new / max(1, total), 4), "examples": examples}
    console.print(f"{generator.name}: {total} candidates from {len(sources)} FAQ standard questions; "
                  f"teacher-judged paraphrases {result['paraphrase_share']:.1%} (threshold {threshold:.4f}, {how}); "
                  f"new to the KB {result['new_to_kb_share']:.1%}")
    table = Table("source", "generated", "teacher cosine")
    for s, c, v in examples:
        table.add_row(s, c, f"{v:.4f}")
    console.print(table)
    save("expansion", result)
    return result
