"""Run benchmarks: `python -m benchmarks [similarity retrieval latency parse expansion mining dialogue callers voice tts gateway load campaign complaints compliance web asr_window endpoint lexical_head asr_numbers]` (all by default)."""

from __future__ import annotations

import sys

from rich.console import Console

from benchmarks import (
    asr_numbers,
    asr_window,
    callers,
    campaign,
    complaints,
    compliance,
    dialogue,
    endpoint,
    expansion,
    gateway,
    latency,
    lexical_head,
    load,
    mining,
    parse,
    retrieval,
    similarity,
    tts,
    voice,
    web,
)

SUITES = {"similarity": similarity.run, "retrieval": retrieval.run, "latency": latency.run, "parse": parse.run,
          "expansion": expansion.run, "mining": mining.run,
          "dialogue": dialogue.run, "callers": callers.run, "voice": voice.run, "tts": tts.run, "gateway": gateway.run,
          "load": load.run, "campaign": campaign.run, "complaints": complaints.run, "compliance": compliance.run, "web": web.run, "asr_window": asr_window.run,
          "endpoint": endpoint.run,
          "lexical_head": lexical_head.run, "asr_numbers": asr_numbers.run}


def main() -> None:
    console = Console()
    names = sys.argv[1:] or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        console.print(f"unknown benchmark(s) {unknown}; choose from {list(SUITES)}")
        sys.exit(2)
    for name in names:
        console.rule(name)
        SUITES[name](console)


if __name__ == "__main__":
    main()
