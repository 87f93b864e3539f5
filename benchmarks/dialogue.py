"""REST message → bot reply over 200 messages with Rasa, the action server and the NLU service running
for real; the share spent in NLU, in Rasa (pipeline + policies) and in the actions.

How the shares are measured: the same texts are also sent to `/nlu/parse` (NLU alone) and to Rasa's
`/model/parse` (Rasa's pipeline, which includes the HTTP call to the NLU service); the actions'
share is what the full REST turn costs beyond `/model/parse` plus Rasa's policy prediction, which is
small for rules — so the "actions" column is an upper bound that includes policy prediction.
Each action's own time comes from Rasa's trackers: an ActionExecuted event is stamped when the action
returned, so its time is the gap to the event before it (the action-server round trip plus the policy
prediction, or none for a follow-up action). Rasa stamps the `user_featurization` marker after the
turn's first action ran, so it is not a boundary.
"""

from __future__ import annotations

import statistics
import time

import httpx
from rich.console import Console
from rich.table import Table

from benchmarks.common import percentiles, running_product, save, served_models

CHAT = ["我想开个户怎么弄", "交易时间是几点", "密码忘了怎么办", "逆回购怎么买", "中签了怎么缴款", "佣金能不能低一点",
        "科创板权限怎么开", "分红什么时候到账", "港股通怎么开通", "可转债怎么申购"]
CALL = ["嗯是我", "你哪位", "好的", "证券账户怎么销户", "对", "好"]


def run(console: Console, messages: int = 200) -> dict:
    """Each served model (e5-small first, the baseline) in its own product run; ratios against e5-small."""
    results = {}
    for model in served_models():
        console.print(f"[bold]{model}[/]")
        results[model] = run_model(console, model, messages)
    base = results.get("e5-small")
    if base and len(results) > 1:
        table = Table("model", "REST turn p50 ms", "vs e5-small", "NLU p50 ms", "vs e5-small")
        for model, r in results.items():
            table.add_row(model, f"{r['rest_turn']['p50']:.1f}", f"{base['rest_turn']['p50'] / r['rest_turn']['p50']:.2f}×",
                          f"{r['nlu_parse']['p50']:.1f}", f"{base['nlu_parse']['p50'] / r['nlu_parse']['p50']:.2f}×")
        console.print(table)
    save("dialogue", results)
    return results


def run_model(console: Console, model: str, messages: int = 200) -> dict:
    rest, parse_rasa, parse_nlu = [], [], []
    senders: set[str] = set()
    per_action: dict[str, list[float]] = {}
    with running_product(model) as product, httpx.Client(timeout=30, headers=product["auth"]) as c:
        web, rasa = product["web"], product["rasa"]
        served = c.get(f"{web}/nlu/status").json().get("model")
        texts = []
        i = 0
        while len(texts) < messages:
            sender = f"bench-call-{i}"
            c.post(f"{rasa}/conversations/{sender}/trigger_intent", json={"name": "EXTERNAL_start_call", "entities": {
                "scenario": "ipo_allotment_notice", "customer_name": "张先生",
                "variables": {"stock_name": "华安科技", "stock_code": "688001", "allotted_shares": 500, "amount": "1.00", "pay_deadline": "明天"}}})
            for text in CALL + CHAT[i % len(CHAT) : i % len(CHAT) + 2]:
                t = time.perf_counter()
                who = sender if text in CALL else f"bench-chat-{i}"
                senders.add(who)
                c.post(f"{rasa}/webhooks/rest/webhook", json={"sender": who, "message": text})
                rest.append((time.perf_counter() - t) * 1000)
                texts.append(text)
            i += 1
        for text in texts[:messages]:
            t = time.perf_counter()
            c.post(f"{rasa}/model/parse", json={"text": text})
            parse_rasa.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            c.post(f"{web}/nlu/parse", json={"text": text})
            parse_nlu.append((time.perf_counter() - t) * 1000)
        for who in sorted(senders):
            for name, ms in action_times(c.get(f"{rasa}/conversations/{who}/tracker").json()):
                per_action.setdefault(name, []).append(ms)
    rest = rest[:messages]
    total, nlu, pipeline = statistics.median(rest), statistics.median(parse_nlu), statistics.median(parse_rasa)
    shares = {"nlu": round(nlu / total, 3), "rasa_pipeline": round(max(0.0, pipeline - nlu) / total, 3),
              "actions_and_policies": round(max(0.0, total - pipeline) / total, 3)}
    actions = {name: percentiles(v) for name, v in sorted(per_action.items())}
    result = {"model": served, "rest_turn": percentiles(rest), "nlu_parse": percentiles(parse_nlu),
              "rasa_model_parse": percentiles(parse_rasa), "share_of_median": shares, "actions": actions}
    table = Table("measure", "p50 ms", "p95 ms", "share of the median turn", title=f"served model: {served}")
    table.add_row("REST message → reply", f"{result['rest_turn']['p50']:.1f}", f"{result['rest_turn']['p95']:.1f}", "1.00")
    table.add_row("NLU service (/nlu/parse)", f"{result['nlu_parse']['p50']:.1f}", f"{result['nlu_parse']['p95']:.1f}", f"{shares['nlu']:.2f}")
    table.add_row("Rasa pipeline beyond NLU (/model/parse − NLU)", "", "", f"{shares['rasa_pipeline']:.2f}")
    table.add_row("actions + policies (turn − /model/parse)", "", "", f"{shares['actions_and_policies']:.2f}")
    console.print(table)
    per = Table("action (time to return, from Rasa's tracker)", "runs", "p50 ms", "p95 ms")
    for name, pct in actions.items():
        per.add_row(name, str(len(per_action[name])), f"{pct['p50']:.1f}", f"{pct['p95']:.1f}")
    console.print(per)
    return result


def action_times(tracker: dict) -> list[tuple[str, float]]:
    """(action name, ms) for each custom action in a tracker: the gap from the previous event to its ActionExecuted."""
    out, previous = [], None
    for event in tracker.get("events", []):
        if event.get("event") == "user_featurization":
            continue
        ts = event.get("timestamp")
        if event.get("event") == "action" and previous is not None and str(event.get("name", "")).startswith("action_") \
                and event["name"] not in ("action_listen", "action_session_start"):
            out.append((event["name"], (ts - previous) * 1000))
        previous = ts
    return out
