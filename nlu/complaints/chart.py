"""Per-label F1 of an evaluation as a bar chart (tail labels marked), for people who would rather look."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CJK_FONTS = ["WenQuanYi Micro Hei", "Noto Sans CJK SC", "DejaVu Sans"]


def per_label_chart(report: dict[str, Any], path: Path, names: dict[str, str] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams["font.sans-serif"] = CJK_FONTS
    rows = sorted(((code, s) for code, s in report["per_label"].items() if s["support"] > 0), key=lambda kv: kv[1]["f1"])
    tail = set(report.get("tail_labels", []))
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.26 * len(rows) + 1)))
    labels = [f"{(names or {}).get(code, code)} ({s['train_count']})" for code, s in rows]
    ax.barh(labels, [s["f1"] for _c, s in rows], color=["#ef6c00" if code in tail else "#1565c0" for code, _s in rows])
    ax.set_xlim(0, 1)
    below = report.get("tail_below", 100)
    ax.set_xlabel(f"F1 (orange: tail label, fewer than {below} training examples; in brackets: training count)")
    ax.set_title(f"{report.get('model', 'model')}: micro-F1 {report['micro_f1']:.3f} · macro-F1 {report['macro_f1']:.3f}"
                 f" · tail macro-F1 {report['tail_macro_f1']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
