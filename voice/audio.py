"""Audio clips: reading any WAV a user hands us, resampling, and G.711 (the telephone codecs).

Everything downstream (VAD, ASR, TTS output, recordings) works on ``AudioClip``: mono float32 in [-1, 1] with
its sample rate. Reading rejects what is not usable audio with a message that says what was wrong, so a broken
file never reaches the recogniser as noise.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np

from knowledge_base.errors import CallbotError

MAX_SECONDS = 600.0  # a caller's turn is seconds; a ten-minute "reply" is a wrong file, not speech


class BadAudio(CallbotError):
    exit_code = 3


@dataclass(frozen=True)
class AudioClip:
    samples: np.ndarray  # mono float32 in [-1, 1]
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate if self.rate else 0.0

    def resampled(self, rate: int) -> AudioClip:
        if not len(self.samples):
            return AudioClip(self.samples, rate)
        if rate == self.rate:
            return self
        from scipy.signal import resample_poly

        g = gcd(rate, self.rate)
        out = resample_poly(self.samples, rate // g, self.rate // g).astype(np.float32)
        return AudioClip(np.clip(out, -1.0, 1.0), rate)

    def padded(self, seconds: float) -> AudioClip:
        """Silence on both sides: Whisper garbles replies that start or end at the very edge of the audio."""
        pad = np.zeros(int(seconds * self.rate), dtype=np.float32)
        return AudioClip(np.concatenate([pad, self.samples, pad]), self.rate)

    def rms_dbfs(self) -> float:
        if not len(self.samples):
            return -120.0
        rms = float(np.sqrt(np.mean(np.square(self.samples, dtype=np.float64))))
        return 20 * np.log10(max(rms, 1e-6))


def read_audio(source: Path | bytes, name: str = "audio") -> AudioClip:
    """A WAV/FLAC/OGG file (any rate, any channel count: channels are averaged) as a mono clip."""
    import soundfile as sf

    label = str(source) if isinstance(source, Path) else name
    if isinstance(source, Path):
        if not source.is_file():
            raise BadAudio(f"{label}: no such file.")
        data = source.read_bytes()
    else:
        data = source
    if not data:
        raise BadAudio(f"{label}: the file is empty. Record or export the audio again (WAV, mono or stereo, any rate).")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.frames / max(f.samplerate, 1) > MAX_SECONDS:
                raise BadAudio(f"{label}: {f.frames / f.samplerate:.0f} s of audio; a caller's turn is at most "
                               f"{MAX_SECONDS:.0f} s. Cut the file into turns first.")
            samples = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except BadAudio:
        raise
    except Exception as exc:  # noqa: BLE001 — libsndfile's messages are terse; say what we expected
        raise BadAudio(f"{label}: not readable audio ({exc}). Expected a WAV (PCM, A-law or μ-law), FLAC or OGG file; "
                       "convert other formats first, e.g. `sox in.mp3 -r 16000 -c 1 out.wav`.") from exc
    if not len(samples):
        raise BadAudio(f"{label}: the file holds no audio samples.")
    mono = samples.mean(axis=1).astype(np.float32)
    if not np.isfinite(mono).all():
        raise BadAudio(f"{label}: the samples contain NaN or infinite values; the file is damaged.")
    return AudioClip(np.clip(mono, -1.0, 1.0), int(rate))


def write_wav(clip: AudioClip, path: Path, subtype: str = "PCM_16") -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), clip.samples, clip.rate, subtype=subtype)
    return path


# ---------------------------------------------------------------- G.711 (ITU-T), for RTP payloads 0 and 8
_BIAS, _CLIP = 0x84, 32635


def _to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int32)


def ulaw_encode(samples: np.ndarray) -> bytes:
    x = _to_int16(samples) >> 2  # μ-law works on 14-bit values
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.where(x < 0, -x, x), 8159) + 0x21
    segment = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), mag)
    u = np.where(segment >= 8, 0x7F, (segment << 4) | ((mag >> (segment + 1)) & 0x0F))
    return ((u ^ mask) & 0xFF).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    mag = ((mantissa << 3) + _BIAS) << exponent
    return (np.where(sign, _BIAS - mag, mag - _BIAS) / 32768.0).astype(np.float32)


def alaw_encode(samples: np.ndarray) -> bytes:
    x = _to_int16(samples) >> 3  # A-law works on 13-bit magnitudes
    sign = np.where(x >= 0, 0x80, 0)
    mag = np.minimum(np.where(x < 0, -x - 1, x), 0xFFF)
    exponent = np.where(mag < 32, 0, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4)
    mantissa = np.where(exponent == 0, mag >> 1, mag >> exponent) & 0x0F
    return ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8).tobytes()


def alaw_decode(data: bytes) -> np.ndarray:
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    sign, exponent, mantissa = a & 0x80, (a >> 4) & 0x07, a & 0x0F
    mag = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    return (np.where(sign, mag, -mag) / 32768.0).astype(np.float32)
