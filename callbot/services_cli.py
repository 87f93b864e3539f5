"""`callbot up | down | status` and `callbot bot train`."""

from __future__ import annotations

import os
import signal
import time
from typing import Annotated, Optional

import typer
from rich.table import Table

from callbot.cli import app, err, out
from callbot.context import get_kb, get_store
from callbot.rasa_project import model_is_current, train
from callbot.services import Service, Supervisor, check_ports, service_specs
from callbot.settings import Settings, get_settings
from knowledge_base.errors import CallbotError
from nlu.model_cache import resolve_model

# In the run directory: the profile `callbot up` started, so that `callbot status` describes that topology.
PROFILE_FILE = "profile"

bot_app = typer.Typer(help="The Rasa project in bot/.", no_args_is_help=True)
app.add_typer(bot_app, name="bot")


@bot_app.command("train")
def bot_train(force: Annotated[bool, typer.Option(help="Train even if the model is current.")] = False) -> None:
    """Train the Rasa model if config.yml or bot/ changed since the last training."""
    with err.status("Training the Rasa model (about 1–2 minutes)…"):
        trained = train(get_settings(), force=force)
    out.print("Rasa model trained." if trained else "Rasa model is up to date.")


def _urls() -> list[tuple[str, str]]:
    s = get_settings()
    web, rasa = s.url("web"), s.url("rasa")
    return [("demo page with chat widget", f"{web}/"), ("chat (full window)", f"{web}/chat"), ("staff console", f"{web}/admin"),
            ("agent desk", f"{web}/desk"), ("web API (OpenAPI)", f"{web}/api/openapi.json"),
            ("Rasa HTTP API", f"{rasa}/status"), ("Rasa REST channel", f"{rasa}/webhooks/rest/webhook"),
            ("action server", f"{s.url('actions')}/health")] + (
        [("SIP gateway", f"sip:callbot@{s.voice.sip_host}:{s.voice.sip_port} (udp; control {s.url('gateway')}/health)")]
        if s.voice.enabled else [])


def _first_admin_hint(settings: Settings) -> None:
    """The console has no default account: say how to make the first one."""
    from callbot.auth.accounts import StaffAccounts

    if StaffAccounts(get_store(), settings.auth).count_admins() == 0:
        out.print("No staff account yet: create the first admin with "
                  "`.venv/bin/callbot user create --username NAME --role admin` (it asks for the password).")


@app.command("up")
def up(detach: Annotated[bool, typer.Option("--detach", "-d", help="Start in the background and return.")] = False,
       profile: Annotated[Optional[str], typer.Option(help="default (SQLite, one process each) or scale (PostgreSQL, Redis, "
                                                           "nginx and N workers of each; see docs/operations.md).")] = None) -> None:
    """Start the web app, the action server, Rasa and the SIP gateway; Ctrl-C stops them all."""
    if profile is not None:
        if profile not in ("default", "scale"):
            raise CallbotError(f"--profile {profile!r}: default or scale.")
        os.environ["CALLBOT_PROFILE"] = profile  # the services started below read it too
        get_settings.cache_clear()
        get_store.cache_clear()
    settings = get_settings()
    supervisor = Supervisor(settings)
    specs = service_specs(settings)
    check_ports(settings, specs)  # before touching anything else: a clear message, nothing started
    resolve_model(settings.models_dir, settings.nlu.model)  # a missing encoder is named before anything starts
    if not model_is_current(settings):
        raise CallbotError("The Rasa model is missing or older than config.yml/bot/; run `callbot bot train` first.")

    def ready(svc: Service) -> None:
        err.print(f"  {svc.name} is up" + (f" on port {svc.port(settings)}" if svc.port(settings) else ""))

    if settings.profile == "scale":
        from callbot.scale import ensure_databases, infrastructure_specs

        infra = infrastructure_specs(settings)
        err.print("Starting PostgreSQL and Redis…")
        supervisor.start(infra, on_ready=ready)
        specs = [s for s in specs if s.name not in {i.name for i in infra}]
        try:
            ensure_databases(settings)
            _prepare_database(settings)
        except BaseException:
            supervisor.stop()
            raise
    else:
        get_store().migrate()
    err.print("Starting services (Rasa takes about a minute to load)…")
    supervisor.start(specs, on_ready=ready)
    (supervisor.run_dir / PROFILE_FILE).write_text(settings.profile)  # `callbot status` shows this topology
    for label, url in _urls():
        out.print(f"{label:>26}: {url}")
    _first_admin_hint(settings)
    if detach:
        out.print("Running in the background; `callbot down` stops everything.")
        supervisor.procs.clear()  # the pid files keep track of them now
        return

    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    # Explicitly: a process started from a non-interactive shell in the background inherits SIGINT as ignored.
    signal.signal(signal.SIGINT, _stop)
    out.print("Press Ctrl-C to stop.")
    try:
        while not stopping:
            for name, proc in supervisor.procs.items():
                if proc.poll() is not None:
                    err.print(f"[red]{name} exited with code {proc.returncode}[/red]; stopping the others (log: {settings.home / 'log' / (name + '.log')}).")
                    stopping = True
                    break
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    err.print("Stopping…")
    supervisor.stop()
    (supervisor.run_dir / PROFILE_FILE).unlink(missing_ok=True)
    err.print("All services stopped.")


def _prepare_database(settings: Settings) -> None:
    """The scale profile's database: migrated, and holding the demo knowledge base when it has none yet (as
    `make demo` loads it into SQLite)."""
    store = get_store()
    store.migrate()
    if not store.intent_keys():
        from knowledge_base.demo import write_demo_file

        get_kb().import_files([write_demo_file(settings.home / "demo-kb.yaml")], actor="callbot up")
        err.print("  loaded the demo knowledge base into PostgreSQL")


@app.command("down")
def down() -> None:
    """Stop services started by `callbot up --detach`."""
    settings = get_settings()
    stopped = Supervisor(settings).stop()
    (settings.home / "run" / PROFILE_FILE).unlink(missing_ok=True)
    out.print(f"Stopped: {', '.join(stopped)}" if stopped else "Nothing was running.")


def _settings_of_running_product() -> Settings:
    """The settings of what `callbot up` started: its profile is remembered in the run directory, so `callbot status`
    lists the scale profile's workers without CALLBOT_PROFILE being set again (an explicit setting wins)."""
    settings = get_settings()
    remembered = settings.home / "run" / PROFILE_FILE
    if "CALLBOT_PROFILE" not in os.environ and remembered.is_file():
        profile = remembered.read_text().strip()
        if profile in ("default", "scale") and profile != settings.profile:
            os.environ["CALLBOT_PROFILE"] = profile
            get_settings.cache_clear()
            settings = get_settings()
    return settings


@app.command("status")
def status() -> None:
    """Which services are running and answering."""
    settings = _settings_of_running_product()
    table = Table("service", "port", "process", "answering")
    for name, port, alive, ok in Supervisor(settings).status(service_specs(settings)):
        table.add_row(name, str(port) if port else "-", "running" if alive else "-", "yes" if ok else "no")
    out.print(table)
