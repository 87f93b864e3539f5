"""One stereo WAV per call: the caller on the left channel, what the bot sent on the right.

Both directions are appended by the media clock (one 20 ms frame each way per tick), so the channels stay
aligned without timestamps. Files live under the recordings folder (never in the repository) and are
deleted after the retention period.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import soundfile as sf


class CallRecording:
    def __init__(self, root: Path, call_id: str, rate: int = 8000):
        stamp = datetime.now(UTC)
        self.relative = Path(stamp.strftime("%Y-%m-%d")) / f"{call_id}.wav"
        self.path = root / self.relative
        self.rate = rate
        self._caller: list[np.ndarray] = []
        self._bot: list[np.ndarray] = []

    def caller(self, frame: np.ndarray) -> None:
        self._caller.append(frame.astype(np.int16, copy=False))

    def bot(self, frame: np.ndarray) -> None:
        self._bot.append(frame.astype(np.int16, copy=False))

    def save(self) -> Path | None:
        left = np.concatenate(self._caller) if self._caller else np.zeros(0, np.int16)
        right = np.concatenate(self._bot) if self._bot else np.zeros(0, np.int16)
        n = max(len(left), len(right))
        if n == 0:
            return None
        stereo = np.zeros((n, 2), np.int16)
        stereo[: len(left), 0] = left
        stereo[: len(right), 1] = right
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(self.path, stereo, self.rate, subtype="PCM_16")
        return self.path


def purge_recordings(root: Path, retention_days: int) -> int:
    """Delete recordings older than the retention period; returns how many went."""
    if not root.is_dir() or retention_days <= 0:
        return 0
    cutoff = time.time() - retention_days * 86400
    gone = 0
    for path in root.rglob("*.wav"):
        if path.stat().st_mtime < cutoff:
            path.unlink()
            gone += 1
    return gone
