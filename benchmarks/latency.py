"""Encoder latency (batch 1, p50/p95) and throughput (batch 64), 1 and 2 threads: ALBERT-sim vs e5-small,
each also with int8 weights (`nlu.quantize`); ratios are against float32 e5-small, the default."""

from __future__ import annotations

import time

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.common import available_models, percentiles, save, time_calls
from nlu.data.corpora import package_sentences, sample
from nlu.encoders.sentence_encoder import QUANTIZATIONS, SentenceEncoder


def run(console: Console) -> dict:
    sentences = [s for s in package_sentences(max_chars=24) if len(s) >= 6]
    single = sample(sentences, 200, seed=1)
    batch = sample(sentences, 1024, seed=2)
    results: dict[str, dict] = {}
    for name, path in available_models():
        if name == "albert-sim-init":
            continue
        for quantize in QUANTIZATIONS:
            enc = SentenceEncoder(path, quantize=quantize)
            label = name if quantize == "none" else f"{name}+{quantize}"
            for threads in (1, 2):
                torch.set_num_threads(threads)
                it = iter(single * 10)
                lat = percentiles(time_calls(lambda: enc.encode([next(it)]), 200))  # noqa: B023
                t = time.perf_counter()
                enc.encode(batch, batch_size=64)
                throughput = len(batch) / (time.perf_counter() - t)
                results[f"{label}@{threads}t"] = {**lat, "sentences_per_s": round(throughput, 1)}
    table = Table("model@threads", "batch-1 p50 ms", "p95 ms", "sentences/s (batch 64)", "p50 speed-up vs e5", "throughput vs e5")
    for key, r in results.items():
        base = results.get(f"e5-small-v1@{key.split('@')[1]}")
        table.add_row(key, f"{r['p50']:.2f}", f"{r['p95']:.2f}", f"{r['sentences_per_s']:.0f}",
                      f"{base['p50'] / r['p50']:.2f}×" if base else "-", f"{r['sentences_per_s'] / base['sentences_per_s']:.2f}×" if base else "-")
    console.print(table)
    save("latency", results)
    return results
