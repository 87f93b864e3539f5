"""Shared helpers: which models are available, timing, result files."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from callbot.settings import get_settings

RESULTS = get_settings().home / "bench"


DEFAULT_MODELS = ("albert-sim-init", "albert-sim-distilled", "albert-sim-distilled-research", "albert-sim-trained")


def available_models() -> list[tuple[str, Path]]:
    """e5-small (every ratio's baseline) and the ALBERT-sims named in ``CALLBOT_BENCH_MODELS``
    (comma-separated cache names; default: the four standard build stages), those that exist."""
    models = get_settings().models_dir
    chosen = [n.strip() for n in os.environ.get("CALLBOT_BENCH_MODELS", "").split(",") if n.strip()] or DEFAULT_MODELS
    out = []
    for name in dict.fromkeys(("e5-small-v1", *chosen)):
        if (models / name / "callbot_encoder.json").is_file():
            out.append((name, models / name))
    return out


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {"p50": round(statistics.median(ordered), 3), "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
            "n": len(ordered)}


def time_calls(fn: Callable[[], Any], n: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2))
    return path


ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_block(size: int) -> int:
    """The first of ``size`` consecutive free TCP ports (the scale profile puts its workers on base + n)."""
    import random

    from callbot.services import port_is_free

    for _ in range(200):
        base = random.randrange(20000, 30000)
        if all(port_is_free("127.0.0.1", base + i) for i in range(size)):
            return base
    raise RuntimeError(f"no {size} consecutive free ports between 20000 and 30000")


def served_models() -> list[str]:
    """e5-small (the baseline) and the released ALBERT-sim when it is installed (`callbot model base`), or the
    models named in ``CALLBOT_BENCH_MODELS``."""
    from nlu.release import RELEASE_NAME

    chosen = [n.strip() for n in os.environ.get("CALLBOT_BENCH_MODELS", "").split(",") if n.strip()]
    if not chosen and (get_settings().models_dir / RELEASE_NAME / "callbot_encoder.json").is_file():
        chosen = [RELEASE_NAME]
    return list(dict.fromkeys(["e5-small", *chosen]))


def staff_headers(env: dict[str, str]) -> dict[str, str]:
    """An admin API token for the benchmark's own product (the staff routes, /nlu/parse among them, need one)."""
    import json
    import secrets

    callbot = str(Path(sys.executable).parent / "callbot")
    subprocess.run([callbot, "user", "create", "-u", "bench", "--role", "admin", "--password-stdin"], cwd=ROOT, env=env,
                   input=secrets.token_urlsafe(24) + "\n", capture_output=True, text=True, timeout=120)  # exists: fine
    made = subprocess.run([callbot, "user", "token", "bench", "--label", "benchmarks"], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True, timeout=120)
    return {"Authorization": "Bearer " + json.loads(made.stdout)["token"]}


@contextlib.contextmanager
def running_product(model: str, voice: bool = False, extra_env: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """The demo product (web + NLU, actions, Rasa; the SIP gateway with ``voice``) on free ports in a fresh home,
    matching with ``model``."""
    home = Path(tempfile.mkdtemp(prefix="callbot-bench-"))
    ports = {"web": free_port(), "rasa": free_port(), "actions": free_port(), "gateway": free_port()}
    sip_port = free_port()  # a free TCP port number; UDP on loopback is as free in practice
    env = {**os.environ, "CALLBOT_HOME": str(home), "CALLBOT_NLU__MODEL": model,
           "CALLBOT_VOICE__ENABLED": str(voice).lower(), "CALLBOT_VOICE__SIP_PORT": str(sip_port),
           **{f"CALLBOT_PORTS__{k.upper()}": str(v) for k, v in ports.items()}, **(extra_env or {})}
    callbot = str(Path(sys.executable).parent / "callbot")
    for step in (["kb", "demo"], ["bot", "train"], ["up", "--detach"]):
        subprocess.run([callbot, *step], cwd=ROOT, env=env, check=True, capture_output=True, timeout=900)
    try:
        yield {"web": f"http://127.0.0.1:{ports['web']}", "rasa": f"http://127.0.0.1:{ports['rasa']}", "home": str(home),
               "control": f"http://127.0.0.1:{ports['gateway']}", "sip": f"127.0.0.1:{sip_port}", "auth": staff_headers(env)}
    finally:
        subprocess.run([callbot, "down"], cwd=ROOT, env=env, capture_output=True, timeout=120)
