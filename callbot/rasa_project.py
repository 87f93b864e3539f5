"""Training the Rasa model in its own Python 3.10 environment, only when its inputs changed."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from callbot.settings import PROJECT_ROOT, Settings
from knowledge_base.errors import CallbotError

CONFIG = PROJECT_ROOT / "config.yml"


def fingerprint(settings: Settings) -> str:
    digest = hashlib.sha256()
    files = [CONFIG, settings.bot_dir / "domain.yml", *sorted((settings.bot_dir / "data").rglob("*.yml")),
             *sorted((settings.bot_dir / "components").rglob("*.py"))]
    for path in files:
        digest.update(str(path.relative_to(PROJECT_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def model_is_current(settings: Settings) -> bool:
    stamp = settings.bot_dir / "models" / "fingerprint.txt"
    models = list((settings.bot_dir / "models").glob("*.tar.gz"))
    return bool(models) and stamp.is_file() and stamp.read_text().strip() == fingerprint(settings)


def train(settings: Settings, force: bool = False) -> bool:
    """Returns True when a model was trained, False when the current one is up to date."""
    if not force and model_is_current(settings):
        return False
    rasa = settings.rasa_venv / "bin" / "rasa"
    if not rasa.exists():
        raise CallbotError(f"Rasa is not installed at {rasa}; run `make install` (it builds the Python 3.10 environment).")
    out_dir = settings.bot_dir / "models"
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.tar.gz"):
        old.unlink()
    cmd = [str(rasa), "train", "--config", str(CONFIG), "--domain", str(settings.bot_dir / "domain.yml"),
           "--data", str(settings.bot_dir / "data"), "--out", str(out_dir), "--fixed-model-name", "callbot"]
    env = {**os.environ, "RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "3"}
    log = settings.home / "log" / "rasa-train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        result = subprocess.run(cmd, cwd=PROJECT_ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        tail = "\n".join(Path(log).read_text(errors="replace").splitlines()[-20:])
        raise CallbotError(f"Rasa training failed (exit {result.returncode}); log {log}:\n{tail}")
    (out_dir / "fingerprint.txt").write_text(fingerprint(settings))
    return True
