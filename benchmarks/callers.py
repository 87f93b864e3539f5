"""The held-out test utterances through the running product, e5-small vs the released ALBERT-sim in one run.

`callbot model verify` measures the same sets in process; this benchmark goes through what a caller's words
really pass: Rasa's `/model/parse` with no conversation (the dialogue intent Rasa sees; an FAQ counts when
Rasa says `faq` and the matched FAQ is the right one) and, for a reply said inside a call, `/nlu/parse` with
the call's scenario — what Rasa's NLU component asks during a REST-channel call. Per intent, side by side.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from benchmarks.common import percentiles, running_product, save, served_models
from nlu.heldout import HeldoutUtterance, load

SCENARIO_QUESTION = "scenario_question"


def _rasa_label(body: dict[str, Any]) -> str | None:
    name = (body.get("intent") or {}).get("name")
    matched = ((body.get("callbot_nlu") or {}).get("matched") or {}).get("intent")
    if name in ("faq", SCENARIO_QUESTION):
        return matched
    return None if name in (None, "nlu_fallback") else name


def _nlu_label(body: dict[str, Any]) -> str | None:
    if body.get("decision") == "fallback":
        return None
    return (body.get("matched") or {}).get("intent")


def measure_product(model: str, utterances: list[HeldoutUtterance]) -> dict[str, Any]:
    hits: dict[str, dict[str, list[bool]]] = {"open": defaultdict(list), "call": defaultdict(list)}
    latency: list[float] = []
    with running_product(model) as product, httpx.Client(timeout=30, headers=product["auth"]) as c:
        served = c.get(product["web"] + "/nlu/status").json().get("model")
        for u in utterances:
            gold = u.intent or "(out of domain)"
            if u.set_name != "call_facts":
                r = c.post(product["rasa"] + "/model/parse", json={"text": u.text})
                latency.append(r.elapsed.total_seconds() * 1000)
                label = _rasa_label(r.json())
                hits["open"][gold].append(label == u.intent or u.accepts(label))
            if u.scenario:
                r = c.post(product["web"] + "/nlu/parse", json={"text": u.text, "scenario": u.scenario})
                label = _nlu_label(r.json())
                hits["call"][gold].append(label == u.intent or u.accepts(label))
    return {"model": served, "hits": hits, "rasa_model_parse": percentiles(latency)}


def _share(v: list[bool]) -> float:
    return sum(v) / len(v) if v else 0.0


def run(console: Console) -> dict:
    utterances = [u for u in load("test") if u.set_name in ("caller_replies", "call_facts", "out_of_domain")]
    results = {m: measure_product(m, utterances) for m in served_models()}
    models = list(results)
    out: dict[str, Any] = {}
    for mode, title in (("open", "Rasa /model/parse, no conversation"), ("call", "/nlu/parse inside the call's scenario")):
        table = Table("intent", "n", *(results[m]["model"] for m in models), title=title)
        intents = sorted({g for m in models for g in results[m]["hits"][mode]})
        for gold in intents:
            n = len(results[models[0]]["hits"][mode][gold])
            table.add_row(gold, str(n), *(f"{_share(results[m]['hits'][mode][gold]):.2f}" for m in models))
        overall = {}
        for m in models:
            dialogue = [x for g, v in results[m]["hits"][mode].items() if g != "(out of domain)" for x in v]
            overall[m] = _share(dialogue)
        table.add_row("[bold]all in-domain[/]", "", *(f"[bold]{overall[m]:.3f}[/]" for m in models))
        console.print(table)
        out[mode] = {results[m]["model"]: {"in_domain": round(overall[m], 4),
                                           "out_of_domain_rejected": round(_share(results[m]["hits"][mode]["(out of domain)"]), 4),
                                           "per_intent": {g: round(_share(v), 4) for g, v in results[m]["hits"][mode].items()}}
                     for m in models}
    out["rasa_model_parse_ms"] = {results[m]["model"]: results[m]["rasa_model_parse"] for m in models}
    save("callers", out)
    return out
