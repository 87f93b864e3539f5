"""A campaign's report as a picture: final outcomes per contact, and attempts per hour split by how they ended."""

from __future__ import annotations

import io
from collections import Counter

from campaigns.service import NOT_ANSWERED, SUCCESS, Campaigns

# The Debian font of requirements/apt.txt: campaign names are Chinese.
CJK_FONTS = ["WenQuanYi Micro Hei", "Noto Sans CJK SC", "DejaVu Sans"]


def _colour(outcome: str) -> str:
    if outcome in SUCCESS:
        return "#2e7d32"
    if outcome in NOT_ANSWERED or outcome in ("no_answer", "dropped"):
        return "#9e9e9e"
    return "#1565c0" if outcome in ("pending", "calling", "callback") else "#ef6c00"


def render_chart(campaigns: Campaigns, campaign_id: int) -> bytes:
    """PNG bytes of the two panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams["font.sans-serif"] = CJK_FONTS
    matplotlib.rcParams["axes.unicode_minus"] = False
    status = campaigns.status(campaign_id)[0]
    report = campaigns.report(campaign_id)
    attempts = campaigns.attempts(campaign_id)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    outcomes = sorted(report["by_outcome"].items(), key=lambda kv: -kv[1])
    names = [k for k, _ in outcomes] or ["(no contacts)"]
    counts = [v for _, v in outcomes] or [0]
    left.barh(names[::-1], counts[::-1], color=[_colour(n) for n in names[::-1]])
    rate = report["success_rate"]
    left.set_title(f"Contacts by outcome · success {rate:.1%} of answered" if rate is not None else "Contacts by outcome")
    left.set_xlabel("contacts")
    hours: Counter[str] = Counter()
    answered: Counter[str] = Counter()
    for started, outcome in attempts:
        hour = started.strftime("%m-%d %H:00")
        hours[hour] += 1
        if outcome and outcome not in NOT_ANSWERED and outcome not in ("no_answer", "dropped"):
            answered[hour] += 1
    labels = sorted(hours)
    if labels:
        right.bar(labels, [hours[h] for h in labels], color="#bdbdbd", label="attempts")
        right.bar(labels, [answered[h] for h in labels], color="#1565c0", label="answered")
        right.legend()
        right.tick_params(axis="x", rotation=45)
    else:
        right.text(0.5, 0.5, "no calls yet", ha="center", va="center", transform=right.transAxes)
    right.set_title("Attempts per hour (UTC)")
    fig.suptitle(f"{status['name']} — {status['status']}, {report['contacts']} contacts, {report['attempts']} attempts")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
