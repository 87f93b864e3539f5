"""The gateway process: SIP user agent, call sessions, outcome records, and a small HTTP control port.

Control port (``ports.gateway``, loopback by default): ``GET /health``; ``POST /calls`` with
``{"uri", "scenario", "customer_name", "variables"[, "call_id"]}`` places an outbound call and answers its call id;
``GET /calls/{id}`` gives its phase, outcome, transcript and turn timings (the last 500 calls are kept);
``DELETE /calls/{id}`` hangs a call up.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from callbot.settings import Settings, get_settings
from knowledge_base.errors import CallbotError
from voice.gateway.dialogue import DialogueLink
from voice.gateway.lines import SpokenLines, script_prompts
from voice.gateway.recording import CallRecording, purge_recordings
from voice.gateway.session import CallSession, HangUp, SessionConfig, SpeechKit

log = logging.getLogger(__name__)
KEPT_CALLS = 500


def record_call(session: CallSession, recording: str | None) -> None:
    """The call's conversation record: created if Rasa never saw the call (no answer, busy, a machine), the
    outcome the gateway decided when the dialogue decided none, and the recording's path."""
    from sqlalchemy import select

    from actions.records import ConversationRecorder
    from callbot.context import get_store
    from knowledge_base.models import Conversation, utcnow

    recorder = ConversationRecorder(session.call_id, "voice", session.scenario)
    if session.outcome is not None:
        recorder.finish(session.outcome, session.outcome_detail)
    with get_store().session("gateway") as s:
        conv = s.scalar(select(Conversation).where(Conversation.id == recorder.conversation_id))
        if conv is not None:
            conv.recording = recording
            conv.ended_at = conv.ended_at or utcnow()


def session_config(settings: Settings, scenario: str | None = None) -> SessionConfig:
    voice = settings.voice
    return SessionConfig(min_speech_ms=voice.min_speech_ms, end_silence_ms=voice.end_silence_ms, pause_ms=voice.asr_early_ms,
                         no_input_s=voice.no_input_s, max_call_s=voice.max_call_s,
                         machine_greeting_s=voice.machine_greeting_s, agent_uri=voice.agent_uri,
                         dtmf={**voice.dtmf, **voice.dtmf_by_scenario.get(scenario or "", {})})


class Gateway:
    def __init__(self, settings: Settings | None = None, kit: SpeechKit | None = None):
        from voice.gateway.sip import SipGateway

        self.settings = settings or get_settings()
        self.kit = kit or _speech_kit(self.settings)
        self.link = DialogueLink(self.settings.url("rasa"))
        self.calls: OrderedDict[str, CallSession] = OrderedDict()
        self.sip = SipGateway(self.settings.voice.sip_host, self.settings.voice.sip_port, self.settings.voice.max_calls,
                              self._new_session, self.settings.voice.ring_timeout_s, self.settings.voice.agent_timeout_s,
                              self.settings.voice.rtp_timeout_s)

    def _new_session(self, call_id: str, direction: str, commands: Any, **outbound: Any) -> CallSession:
        from actions.records import ConversationRecorder

        # The record exists from the first ring, as a voice call: Rasa's actions find it by the call id.
        ConversationRecorder(call_id, "voice", outbound.get("scenario"))
        recording = CallRecording(self.settings.recordings_dir, call_id) if self.settings.voice.recordings else None
        session = CallSession(call_id, direction, self.kit, self.link, session_config(self.settings, outbound.get("scenario")),
                              commands, recording=recording, on_end=self._ended, **outbound)  # type: ignore[arg-type]
        self.calls[call_id] = session
        while len(self.calls) > KEPT_CALLS:
            self.calls.popitem(last=False)
        return session

    def _ended(self, session: CallSession) -> None:
        path = session.recording.save() if session.recording is not None else None
        try:
            record_call(session, str(session.recording.relative) if path is not None and session.recording else None)
        except Exception:  # the database is down: the call is over anyway; say so loudly, keep serving
            log.exception("could not record a call's outcome", extra={"fields": {"call": session.call_id, "outcome": session.outcome}})
        self.link.forget(session.call_id)
        log.info("call ended", extra={"fields": {"call": session.call_id, "outcome": session.outcome,
                                                 "turns": len(session.timings), "barge_ins": session.barge_ins}})

    def describe(self, call_id: str) -> dict[str, Any] | None:
        session = self.calls.get(call_id)
        if session is None:
            return None
        return {"call_id": call_id, "direction": session.direction, "scenario": session.scenario, "phase": session.phase,
                "outcome": session.outcome, "outcome_detail": session.outcome_detail, "barge_ins": session.barge_ins,
                "transcript": [{"speaker": s, "text": t} for s, t in session.transcript],
                "timings": [t.__dict__ for t in session.timings],
                "recording": str(session.recording.relative) if session.recording is not None else None}

    def serve(self) -> None:
        purge_recordings(self.settings.recordings_dir, self.settings.voice.recording_retention_days)
        threading.Thread(target=self._warm, name="warm-prompts", daemon=True).start()
        control = ThreadingHTTPServer((self.settings.host, self.settings.ports.gateway), _handler(self))
        threading.Thread(target=control.serve_forever, name="control", daemon=True).start()

        def stop(*_: Any) -> None:
            self.sip.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            self.sip.serve()
        finally:
            control.shutdown()

    def _warm(self) -> None:
        try:
            made = self.kit.lines.warm(script_prompts())
            log.info("script prompts synthesised", extra={"fields": {"new": made}})
        except Exception as exc:  # a prompt that fails now is synthesised, or reported, when a call needs it
            log.warning("could not warm the prompt cache", extra={"fields": {"error": str(exc)[:200]}})


def _speech_kit(settings: Settings) -> SpeechKit:
    from voice.asr import recognizer_from_settings
    from voice.asr.hints import call_hint
    from voice.asr.phonetic import call_phonetics
    from voice.tts import synthesizer_from_settings

    def rescore(scenario: str | None, text: str) -> str:
        return call_phonetics(scenario).rescore(text) if scenario and text else text

    return SpeechKit(recognizer_from_settings(), SpokenLines(synthesizer_from_settings(), settings.cache_dir / "prompts",
                                                             settings.voice.phone_rate), call_hint, rescore)


def _handler(gateway: Gateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            return

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path == "/health":
                status = 200 if gateway.sip.ready.is_set() else 503
                self._send(status, {"status": "ok" if status == 200 else "starting", "calls": gateway.sip.active_calls(),
                                    "sip": f"udp:{gateway.settings.voice.sip_host}:{gateway.settings.voice.sip_port}"})
            elif self.path.startswith("/calls/"):
                found = gateway.describe(self.path.removeprefix("/calls/"))
                self._send(200 if found else 404, found or {"error": "no such call"})
            else:
                self._send(404, {"error": "not found"})

        def do_DELETE(self) -> None:  # noqa: N802 - http.server's name
            call_id = self.path.removeprefix("/calls/")
            found = gateway.describe(call_id) if self.path.startswith("/calls/") else None
            if found is None:
                self._send(404, {"error": "no such call"})
                return
            gateway.sip.submit(HangUp(call_id))  # an operator ends a call; its outcome is kept or becomes dropped
            self._send(202, {"call_id": call_id, "phase": found["phase"]})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/calls":
                self._send(404, {"error": "not found"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > 64_000:
                    raise ValueError("request too large")
                body = json.loads(self.rfile.read(length) or b"{}")
                uri, scenario = str(body["uri"]), str(body["scenario"])
                if not uri.startswith(("sip:", "sips:")):
                    raise ValueError(f"not a SIP URI: {uri!r} (write sip:user@host:port)")
                variables = body.get("variables") or {}
                if not isinstance(variables, dict):
                    raise ValueError("variables must be an object")
                chosen = body.get("call_id")  # a dialer names its calls, so that a restart can find them
                if chosen is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", str(chosen)):
                    raise ValueError("call_id: letters, digits, . _ - only, at most 100")
                if chosen is not None and gateway.describe(str(chosen)) is not None:
                    raise ValueError(f"call_id {chosen} is taken")
            except (ValueError, KeyError, TypeError) as exc:
                self._send(400, {"error": f"bad call request: {exc}; send JSON with uri, scenario, customer_name, variables"})
                return
            if gateway.sip.active_calls() >= gateway.sip.max_calls:
                self._send(503, {"error": f"this gateway worker is at its call limit (voice.max_calls = "
                                          f"{gateway.sip.max_calls}); retry when a call ends, or add gateway workers "
                                          "(voice.workers) behind the dispatcher"})
                return
            call_id = gateway.sip.place(uri, scenario, str(body.get("customer_name") or ""), variables,
                                        str(chosen) if chosen is not None else None)
            self._send(202, {"call_id": call_id})

    return Handler


def check_sip_port(host: str, port: int) -> None:
    from callbot.services import udp_port_is_free

    if not udp_port_is_free(host, port):
        raise CallbotError(f"UDP port {port} (SIP) on {host} is in use; stop what holds it "
                           f"(`ss -lunp 'sport = :{port}'`) or choose another with CALLBOT_VOICE__SIP_PORT=…")


def main() -> None:
    import faulthandler

    from callbot.logs import setup_logging

    faulthandler.enable()  # a crash inside the SIP library leaves its stack in the gateway's log

    settings = get_settings()
    setup_logging(settings.log_level)
    try:
        check_sip_port(settings.voice.sip_host, settings.voice.sip_port)
        Gateway(settings).serve()
    except CallbotError as exc:
        log.error(str(exc))
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
