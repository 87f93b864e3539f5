"""Quality of generated extension questions (nlu.generation_quality): of the top-10 candidates per FAQ
standard question, the share useful (same intent by the e5 judge, new to the KB, not a near-duplicate),
per generator, for the chosen methods against beam alone, with examples.

`python -m benchmarks expansion` measures mixed against beam; `python -m benchmarks.expansion --method
mixed,rewrite,thesaurus --sources 30` chooses the methods (beam is always measured as the baseline).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.common import save
from callbot.context import get_kb
from knowledge_base.errors import CallbotError
from nlu.encoders.sentence_encoder import SentenceEncoder
from nlu.generation_quality import SOURCES, TOP, faq_source_intents, measure, setting
from nlu.generation_quality import save as save_beside_model
from nlu.model_cache import e5_dir


def run(console: Console, methods: tuple[str, ...] = ("mixed",), n_sources: int = SOURCES, sweep: bool = True,
        write_model: bool = True) -> dict:
    """``sweep``: also beam at other copy biases and the round-trip rerank; ``write_model``: save beam's
    figures beside the generator as expansion.json (what generator `auto` ranks by)."""
    from callbot.settings import get_settings
    from nlu.expansion import check_method
    from nlu.service import get_generator

    for m in methods:
        check_method(m)
    teacher = SentenceEncoder(e5_dir(get_settings().models_dir))
    kb = get_kb()
    s = setting(kb, teacher)
    sources, _ = faq_source_intents(kb, n_sources)
    try:
        generator = get_generator()
    except CallbotError as exc:  # no trained ALBERT-sim yet: the other sources are still measured
        generator, why = None, str(exc)
    runs: dict[str, Any] = {}
    for m in dict.fromkeys((*methods, "beam")):
        if m in ("beam", "sample") and generator is None:
            runs[m] = {"unavailable": why}
            continue
        runs[m] = measure(sources, m, s["serving"], s["judge"], get_generator, s["threshold"], s["existing"], s["existing_vecs"])
    result: dict[str, Any] = {"serving_model": s["serving"].encoder.name, "judge_model": teacher.name, "sources": len(sources),
                              "top": TOP, "teacher_threshold": s["threshold"], "threshold_from": s["threshold_from"],
                              "generator": generator.name if generator else None, "by_method": runs}
    _print(console, result)
    if generator is not None and sweep:
        result["by_copy_bias"] = _copy_bias_sweep(console, generator, sources, s)
        result["rerank"] = _rerank(generator, [q for q, _ in sources], teacher, s["threshold"], s["existing"], s["existing_vecs"])
    if generator is not None and write_model:
        save_beside_model(generator.path, {**runs["beam"], "copy_bias": generator.copy_bias, "teacher_threshold": s["threshold"],
                                           "threshold_from": s["threshold_from"], "serving_model": result["serving_model"],
                                           "judge_model": teacher.name, "kb_version": kb.store.kb_version()})
    save("expansion", result)
    return result


def _print(console: Console, result: dict[str, Any]) -> None:
    runs = result["by_method"]
    console.print(f"Top-{TOP} candidates for {result['sources']} FAQ standard questions; serving {result['serving_model']}, "
                  f"judge {result['judge_model']} matcher; generator {result['generator'] or 'none'}")
    base = runs.get("beam", {}).get("useful_share")
    table = Table("method", "source", "candidates", "same intent (judge)", "new to the KB", "e5 paraphrase",
                  "useful of returned", f"useful per top-{TOP} slot", "vs beam")
    for method, r in runs.items():
        if "unavailable" in r:
            table.add_row(method, "-", "-", "-", "-", "-", "-", "unavailable", "-")
            continue
        ratio = f"{r['useful_share'] / base:.2f}×" if base else "-"
        table.add_row(method, "all", str(r["candidates"]), f"{r['paraphrase_share']:.1%}", f"{r['new_to_kb_share']:.1%}",
                      f"{r['teacher_paraphrase_share']:.1%}", f"{r['useful_of_candidates']:.1%}", f"{r['useful_share']:.1%}", ratio)
        for source, b in r["by_source"].items():
            table.add_row("", source, str(b["candidates"]), f"{b['same_intent'] / max(1, b['candidates']):.1%}",
                          f"{b['new'] / max(1, b['candidates']):.1%}", f"{b['teacher_paraphrase'] / max(1, b['candidates']):.1%}",
                          f"{b['useful_of_candidates']:.1%}", f"{b['useful_share']:.1%}", "")
    console.print(table)
    for method, r in runs.items():
        for note in r.get("notes", []) + ([r["unavailable"]] if "unavailable" in r else []):
            console.print(f"[yellow]{method}: {note}[/yellow]")
        if r.get("examples"):
            examples = Table("source question", "useful candidate", "source", "score", title=f"{method}: accepted examples")
            for e in r["examples"]:
                examples.add_row(e["source_question"], e["candidate"], e["source"], f"{e['score']:.4f}")
            console.print(examples)


def _copy_bias_sweep(console: Console, generator, sources: list[tuple[str, str]], s: dict[str, Any]) -> dict:  # type: ignore[no-untyped-def]
    """Beam's useful share at other copy biases (the configured one is restored after)."""
    configured = generator.copy_bias
    runs = {}
    try:
        for bias in sorted({0.0, 1.0, 2.0, 3.0, 4.0, configured}):
            generator.copy_bias = bias
            runs[bias] = measure(sources, "beam", s["serving"], s["judge"], lambda: generator, s["threshold"], s["existing"],
                                 s["existing_vecs"])
    finally:
        generator.copy_bias = configured
    table = Table("copy bias", "candidates", f"useful per top-{TOP} slot", title="beam by copy bias")
    for bias, r in runs.items():
        table.add_row(f"{bias:g}" + (" (configured)" if bias == configured else ""), str(r["candidates"]), f"{r['useful_share']:.1%}")
    console.print(table)
    return runs


def _rerank(generator, sources: list[str], teacher: SentenceEncoder, threshold: float,  # type: ignore[no-untyped-def]
            existing: set[str], existing_vecs: np.ndarray) -> dict:
    """The beam's own order vs the round-trip score (how well a candidate regenerates its source), by the
    first measure (e5 paraphrase threshold, not a near-duplicate), on the raw beam without the filter."""
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.expansion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="mixed", help="Comma-separated methods to measure against beam (mixed, beam, sample, rewrite, thesaurus).")
    parser.add_argument("--sources", type=int, default=SOURCES, help="FAQ standard questions to expand (a fixed sample).")
    parser.add_argument("--no-sweep", action="store_true", help="Skip beam at other copy biases and the round-trip rerank.")
    parser.add_argument("--no-write-model", action="store_true", help="Do not write expansion.json beside the generator.")
    args = parser.parse_args()
    console = Console()
    try:
        if not 1 <= args.sources <= 500:
            raise CallbotError(f"--sources {args.sources} must be between 1 and 500.")
        run(console, tuple(m.strip() for m in args.method.split(",") if m.strip()), args.sources, not args.no_sweep,
            not args.no_write_model)
    except CallbotError as exc:
        console.print(f"[red]{exc}[/red]")
        raise SystemExit(exc.exit_code) from None


if __name__ == "__main__":
    main()
