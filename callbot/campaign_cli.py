"""`callbot campaign …`: outbound campaigns from a customer file, their lifecycle, reports, and the dialer."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from callbot.cli import app, out
from callbot.context import get_store

campaign_app = typer.Typer(help="Outbound campaigns: create from a customer CSV, start/pause/resume/cancel, report, dial.",
                           no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")


def _campaigns():  # type: ignore[no-untyped-def]
    from campaigns.service import Campaigns

    return Campaigns(get_store())


@campaign_app.command("create")
def campaign_create(
    scenario: Annotated[str, typer.Option(help="The call script, e.g. ipo_allotment_notice.")],
    customers: Annotated[Path, typer.Option(help="CSV: name, phone and the scenario's variables (UTF-8 or GBK).")],
    name: Annotated[str, typer.Option(help="A name staff recognise.")] = "",
    window: Annotated[str, typer.Option(help="Calling hours in the campaign's time zone.")] = "09:00-20:00",
    weekdays: Annotated[str, typer.Option(help="ISO weekdays to call on: 1-5 = Monday to Friday.")] = "1-7",
    concurrency: Annotated[int, typer.Option(help="Calls at once, at most.")] = 4,
    retries: Annotated[int, typer.Option(help="Further attempts after no answer / busy / dropped.")] = 2,
    retry_after: Annotated[str, typer.Option(help="Back-off before a retry, times the attempt number: 30m, 2h.")] = "2h",
    timezone: Annotated[str, typer.Option(help="Time zone of the calling window.")] = "Asia/Shanghai",
) -> None:
    """Validate the whole file (every bad line named; nothing written on error), then create a draft campaign."""
    from tqdm import tqdm

    size = customers.stat().st_size if customers.is_file() else 0
    # A progress bar only where a person waits: big files (100k customers is about 5 MB).
    with tqdm(total=size, unit="B", unit_scale=True, desc="reading customers", disable=size < 1_000_000) as bar:
        def progress(done: int) -> None:
            bar.update(done - bar.n)

        made = _campaigns().create(scenario, customers, name, window, weekdays, concurrency, retries, retry_after, timezone,
                                   progress)
    out.print(f"Created campaign {made['id']} ({made['name']}) with {made['contacts']} contacts; "
              f"`callbot campaign start {made['id']}` starts it.")


def _lifecycle(action: str):  # type: ignore[no-untyped-def]
    def command(campaign_id: Annotated[int, typer.Argument(help="The campaign's id (`callbot campaign status`).")]) -> None:
        status = _campaigns().change(campaign_id, action)
        out.print(f"Campaign {campaign_id} is {status}.")

    command.__doc__ = f"{action.capitalize()} a campaign."
    return command


for _action in ("start", "pause", "resume", "cancel"):
    campaign_app.command(_action)(_lifecycle(_action))


@campaign_app.command("status")
def campaign_status(campaign_id: Annotated[Optional[int], typer.Argument(help="One campaign (default: all).")] = None) -> None:
    """Each campaign's state and its contacts by state."""
    rows = _campaigns().status(campaign_id)
    table = Table("id", "name", "status", "window", "at once", "contacts")
    for r in rows:
        table.add_row(str(r["id"]), r["name"], r["status"] + (f" ({r['note']})" if r["note"] else ""), r["window"],
                      str(r["concurrency"]), ", ".join(f"{k} {v}" for k, v in sorted(r["contacts"].items())))
    out.print(table)


@campaign_app.command("report")
def campaign_report(
    campaign_id: Annotated[int, typer.Argument(help="The campaign's id.")],
    csv_file: Annotated[Optional[Path], typer.Option("--csv", help="Also write one line per contact (phones masked).")] = None,
    chart: Annotated[Optional[Path], typer.Option(help="Also draw outcomes and attempts per hour into this PNG file.")] = None,
) -> None:
    """Outcomes, the success rate (completed over answered calls), handling time, callbacks due."""
    campaigns = _campaigns()
    out.print(json.dumps(campaigns.report(campaign_id), ensure_ascii=False, indent=2), highlight=False)
    if csv_file is not None:
        csv_file.write_text(campaigns.export_csv(campaign_id), encoding="utf-8-sig")
        out.print(f"Wrote {csv_file}.")
    if chart is not None:
        from campaigns.chart import render_chart

        chart.write_bytes(render_chart(campaigns, campaign_id))
        out.print(f"Wrote {chart}.")


@campaign_app.command("dial")
def campaign_dial(
    driver: Annotated[str, typer.Option(help="gateway (phone calls through the SIP gateway) or text (conversations only).")] = "gateway",
    worker: Annotated[str, typer.Option(help="This dialer's name; a restart with the same name settles its unfinished calls.")] = "",
    until_idle: Annotated[bool, typer.Option(help="Return when no campaign is running and no call is in flight.")] = False,
    trunk: Annotated[Optional[str], typer.Option(help="host:port the gateway dials numbers at (campaigns.sip_trunk).")] = None,
) -> None:
    """Run the dialer in the foreground: places the running campaigns' calls; Ctrl-C stops it."""
    from campaigns.dialer import run_dialer

    run_dialer(driver, worker or f"{socket.gethostname()}-dialer", until_idle, trunk=trunk)
