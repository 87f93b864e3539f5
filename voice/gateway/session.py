"""One phone call, from the first audio frame to its outcome. No SIP in here: the gateway's SIP side feeds it.

The media clock calls ``caller_frame`` (what the caller sent, 20 ms) and ``bot_frame`` (what to send next);
the SIP side calls ``answered``, ``dtmf``, ``agent_answered`` / ``agent_failed`` and ``hung_up``. Everything
slow (end of turn, ASR, the Rasa turn, TTS) runs on the session's own worker thread, so a slow turn never
stalls the audio of this or another call. What the SIP side must do (hang up, transfer) comes back as
``Command`` objects through ``commands``.

- **End of turn / barge-in**: Silero VAD (voice.vad.Endpointer). Speech lasting ``min_speech_ms`` while the bot
  is talking stops the prompt and is taken as the answer; shorter noises do not.
- **No input**: ``no_input_s`` after the bot stopped talking with nothing heard, the session sends ``/silence``.
- **DTMF**: a key becomes the text its mapping gives (``/affirm`` …), per scenario.
- **Answering machines** (outbound): the session listens before speaking; a first utterance running longer than
  ``machine_greeting_s`` without a pause, or one using a voicemail greeting's words, is a machine. The wait for
  the callee is counted in audio the session has processed, not wall time, so a busy worker with a backlog of
  frames does not start talking over a greeting it has not heard yet; and a greeting with a pause after its
  first words ("您好，……") is still caught when the callee's first reply to the bot uses voicemail wording.
- **Hand-over**: when the bot hands the call over, the session asks the SIP side to bridge an agent; if no agent
  answers, the caller hears an apology and a callback is recorded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from voice.asr.base import SpeechRecognizer
from voice.audio import AudioClip
from voice.gateway.dialogue import BotTurn, DialogueLink, DialogueUnavailable
from voice.gateway.lines import SpokenLines
from voice.gateway.recording import CallRecording
from voice.vad import Endpointer, SpeechPaused, SpeechStarted, UtteranceEnded

log = logging.getLogger(__name__)

FRAME = 160  # samples per 20 ms at 8 kHz
RATE = 8000
# What voicemail greetings and carrier announcements say (China Mobile / Unicom / Telecom wording).
MACHINE_WORDS = ("留言", "语音信箱", "无法接通", "已关机", "不在服务区", "提示音", "暂时无法", "空号", "正在通话中", "稍后再拨")
# Once the bot has spoken, only wording no person answers a call with still marks a machine ("暂时无法…" does not).
LATE_MACHINE_WORDS = ("您拨打的", "语音信箱", "提示音后", "无法接通", "已关机", "不在服务区", "稍后再拨", "请留言")


@dataclass(frozen=True)
class HangUp:
    call_id: str


@dataclass(frozen=True)
class Transfer:
    call_id: str
    uri: str


Command = HangUp | Transfer


@dataclass
class SessionConfig:
    min_speech_ms: int = 200
    end_silence_ms: int = 700
    # Transcription starts after this much silence, before the turn is known to be over; kept if it is.
    pause_ms: int = 300
    no_input_s: float = 7.0
    max_call_s: float = 600.0
    machine_greeting_s: float = 3.5
    listen_first_s: float = 2.0  # outbound: how long to wait for the callee's "喂" before the bot speaks
    # ... and in wall time when no audio arrives at all (a line whose media never starts)
    listen_first_wall_s: float = 6.0
    agent_uri: str = ""
    dtmf: dict[str, str] = field(default_factory=lambda: {"1": "/affirm", "2": "/deny", "0": "/request_human"})
    trouble_line: str = "抱歉，系统暂时无法处理您的请求，请稍后再拨，再见。"
    agent_busy_line: str = "抱歉，人工客服暂时都在忙，我们已经记录下来，会尽快给您回电，再见。"


@dataclass
class TurnTiming:
    """One caller turn, milliseconds from the end of the caller's speech."""
    text: str
    endpoint_ms: float  # end of speech → the endpointer decided the turn was over
    asr_ms: float
    rasa_ms: float
    tts_ms: float  # synthesis of the first line (0 when cached)
    first_audio_ms: float | None = None  # end of speech → first frame of the reply handed to RTP
    asr_early: bool = False  # decoded during the pause, before the end of the turn was known


@dataclass
class SpeechKit:
    recognizer: SpeechRecognizer
    lines: SpokenLines
    hint: Callable[[str | None], str | None] = lambda _scenario: None
    # A transcript that sounds like one of the call's expected wordings becomes that wording (voice.asr.phonetic).
    rescore: Callable[[str | None, str], str] = lambda _scenario, text: text


Phase = Literal["ringing", "listening_first", "talking", "closing", "bridged", "ended"]


class CallSession:
    def __init__(self, call_id: str, direction: Literal["inbound", "outbound"], kit: SpeechKit, link: DialogueLink,
                 config: SessionConfig, commands: Callable[[Command], None], *, scenario: str | None = None,
                 customer_name: str = "", variables: dict[str, Any] | None = None,
                 recording: CallRecording | None = None, on_end: Callable[[CallSession], None] | None = None):
        self.call_id = call_id
        self.direction = direction
        self.kit, self.link, self.config, self.commands = kit, link, config, commands
        self.scenario, self.customer_name, self.variables = scenario, customer_name, dict(variables or {})
        self.recording = recording
        self.on_end = on_end
        self.phase: Phase = "ringing"
        self.outcome: str | None = None  # set by the gateway when Rasa never decided one (no answer, machine, hang-up)
        self.outcome_detail: dict[str, Any] = {}
        self.transcript: list[tuple[str, str]] = []  # (speaker, text): what was heard and said
        self.timings: list[TurnTiming] = []
        self.barge_ins = 0
        self._inbox: queue.Queue[tuple[str, Any, float]] = queue.Queue()
        self._playback: list[np.ndarray] = []
        self._play_lock = threading.Lock()
        self._after_playback: Command | None = None
        self._endpointer = Endpointer(min_speech_ms=config.min_speech_ms, end_silence_ms=config.end_silence_ms, rate=RATE,
                                      pause_ms=config.pause_ms if config.pause_ms < config.end_silence_ms else None)
        self._early: tuple[float, Any] | None = None  # (last speech time, transcript) decoded at a pause
        self._stream_s = 0.0  # caller audio fed to the endpointer, seconds
        self._in_speech_since: float | None = None  # stream time the current utterance started
        self._quiet_since = time.monotonic()
        self._answered_at: float | None = None
        self._first_reply_pending = False  # outbound: the callee's first reply to the bot may still be a machine
        self._pending_timing: TurnTiming | None = None
        self._speech_end_wall: float | None = None
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name=f"call-{call_id}", daemon=True)

    # -- called by the SIP side (any thread) --
    def answered(self) -> None:
        self._answered_at = time.monotonic()
        self._inbox.put(("answered", None, time.monotonic()))
        if not self._worker.is_alive():
            self._worker.start()

    def caller_frame(self, pcm: np.ndarray) -> None:
        if self.recording is not None:
            self.recording.caller(pcm)
        self._inbox.put(("audio", pcm, time.monotonic()))

    def bot_frame(self) -> np.ndarray:
        with self._play_lock:
            if not self._playback:
                frame = np.zeros(FRAME, np.int16)
            else:
                head = self._playback[0]
                frame, rest = head[:FRAME], head[FRAME:]
                if len(rest):
                    self._playback[0] = rest
                else:
                    self._playback.pop(0)
                if len(frame) < FRAME:
                    frame = np.concatenate([frame, np.zeros(FRAME - len(frame), np.int16)])
                if self._pending_timing is not None and self._speech_end_wall is not None:
                    self._pending_timing.first_audio_ms = round((time.monotonic() - self._speech_end_wall) * 1000, 1)
                    self._pending_timing = None
                if not self._playback:
                    self._quiet_since = time.monotonic()
        if self.recording is not None:
            self.recording.bot(frame)
        return frame

    def dtmf(self, digit: str) -> None:
        self._inbox.put(("dtmf", digit, time.monotonic()))

    def agent_answered(self) -> None:
        self._inbox.put(("agent", True, time.monotonic()))

    def agent_failed(self, reason: str) -> None:
        self._inbox.put(("agent", reason, time.monotonic()))

    def hung_up(self, reason: str = "") -> None:
        self._inbox.put(("hangup", reason, time.monotonic()))
        if not self._worker.is_alive():  # never answered: no worker ran; end here
            self._finish(reason)

    @property
    def speaking(self) -> bool:
        with self._play_lock:
            return bool(self._playback)

    def wait(self, timeout: float | None = None) -> bool:
        self._worker.join(timeout)
        return not self._worker.is_alive()

    # -- the worker --
    def _run(self) -> None:
        reason = ""
        try:
            while not self._stop.is_set():
                try:
                    kind, value, at = self._inbox.get(timeout=0.05)
                except queue.Empty:
                    kind, value, at = "tick", None, time.monotonic()
                if kind == "hangup":
                    reason = str(value or "caller hung up")
                    break
                self._handle(kind, value, at)
        except Exception as exc:  # one call's failure must not take the gateway down; it is recorded
            log.exception("call session failed", extra={"fields": {"call": self.call_id}})
            self.outcome_detail["error"] = str(exc)[:300]
            self.commands(HangUp(self.call_id))
            reason = "gateway error"
        self._finish(reason)

    def _finish(self, reason: str) -> None:
        if self.phase == "ended":
            return
        if self.outcome is None and self.phase not in ("closing", "bridged"):
            self.outcome = "dropped"
            self.outcome_detail.setdefault("reason", reason or "hung up")
        self.phase = "ended"
        self._stop.set()
        if self.on_end is not None:
            self.on_end(self)

    def _handle(self, kind: str, value: Any, at: float) -> None:
        if kind == "answered":
            if self.direction == "outbound":
                self.phase = "listening_first"
            else:
                self.phase = "talking"
                self._respond(self._dialogue(lambda: self.link.say(self.call_id, "/greet")))
        elif kind == "audio":
            self._audio(value, at)
        elif kind == "dtmf":
            self._dtmf(str(value))
        elif kind == "agent":
            self._agent(value)
        self._timers()

    def _audio(self, pcm: np.ndarray, at: float) -> None:
        if self.phase in ("bridged", "ended", "ringing"):
            return
        clip = AudioClip(pcm.astype(np.float32) / 32768.0, RATE)
        self._stream_s += clip.seconds
        for event in self._endpointer.feed(clip):
            if isinstance(event, SpeechStarted):
                self._in_speech_since = event.at_s
                if self.phase == "talking" and self.speaking:
                    self._stop_playback()
                    self.barge_ins += 1
                    log.info("barge-in", extra={"fields": {"call": self.call_id, "lag_ms": round((time.monotonic() - at) * 1000, 1),
                                                           "backlog": self._inbox.qsize()}})
            elif isinstance(event, SpeechPaused):
                if self.phase == "talking":
                    self._early = (event.last_speech_s, self.kit.recognizer.transcribe(event.clip, self.kit.hint(self.scenario)))
            elif isinstance(event, UtteranceEnded):
                self._in_speech_since = None
                speech_end_wall = at - max(0.0, self._stream_s - event.ended_s)
                self._utterance(event, speech_end_wall)
        if (self.phase == "listening_first" and self._in_speech_since is not None
                and self._stream_s - self._in_speech_since > self.config.machine_greeting_s):
            self._machine("long greeting")

    def _utterance(self, event: UtteranceEnded, speech_end_wall: float) -> None:
        endpoint_ms = (time.monotonic() - speech_end_wall) * 1000
        if self.phase == "listening_first":
            if event.ended_s - event.started_s > self.config.machine_greeting_s:
                self._machine("long greeting")
                return
            heard = self.kit.recognizer.transcribe(event.clip)
            if any(word in heard.text for word in MACHINE_WORDS):
                self._machine("voicemail wording", heard.text)
                return
            if heard.text:
                self.transcript.append(("callee", heard.text))
            self._start_outbound()
            return
        if self.phase != "talking":
            return
        early, self._early = self._early, None
        if early is not None and early[0] == event.ended_s:
            heard = early[1]  # decoded at the pause; nothing was said since
        else:
            heard = self.kit.recognizer.transcribe(event.clip, self.kit.hint(self.scenario))
        if self._first_reply_pending and heard.text:
            self._first_reply_pending = False
            if any(word in heard.text for word in LATE_MACHINE_WORDS):
                self._machine("voicemail wording after the bot started", heard.text)
                return
        if not heard.text:
            log.info("nothing understood in a caller turn", extra={"fields": {"call": self.call_id, "dropped": heard.dropped}})
            self._quiet_since = time.monotonic()
            return
        text = self.kit.rescore(self.scenario, heard.text)
        self.transcript.append(("caller", text))
        turn = self._dialogue(lambda: self.link.say(self.call_id, text))
        timing = TurnTiming(text, round(endpoint_ms, 1), round(heard.ms, 1), round(turn.ms, 1), 0.0,
                            asr_early=early is not None and heard is early[1])
        self._respond(turn, timing, speech_end_wall)

    def _dtmf(self, digit: str) -> None:
        text = self.config.dtmf.get(digit)
        if text is None or self.phase != "talking":
            return
        self._stop_playback()
        self.transcript.append(("dtmf", digit))
        self._respond(self._dialogue(lambda: self.link.say(self.call_id, text)))

    def _timers(self) -> None:
        now = time.monotonic()
        if self._answered_at is not None and now - self._answered_at > self.config.max_call_s and self.phase != "ended":
            self.outcome_detail["reason"] = "call too long"
            self._close_after_playback()
        if self.phase == "listening_first" and self._in_speech_since is None and self._answered_at is not None \
                and (self._stream_s > self.config.listen_first_s
                     or now - self._answered_at > max(self.config.listen_first_s, self.config.listen_first_wall_s)):
            self._start_outbound()
        if (self.phase == "talking" and not self.speaking and self._in_speech_since is None
                and now - self._quiet_since > self.config.no_input_s):
            self._quiet_since = now
            self.transcript.append(("event", "/silence"))
            self._respond(self._dialogue(lambda: self.link.say(self.call_id, "/silence")))
        if self._after_playback is not None and not self.speaking:
            command, self._after_playback = self._after_playback, None
            self.commands(command)

    # -- what the bot does --
    def _start_outbound(self) -> None:
        self.phase = "talking"
        self._first_reply_pending = True
        self._respond(self._dialogue(lambda: self.link.start_outbound(
            self.call_id, self.scenario or "", self.customer_name, self.variables)))

    def _machine(self, why: str, heard: str = "") -> None:
        self.outcome = "answering_machine"
        self.outcome_detail = {"reason": why, **({"heard": heard} if heard else {})}
        self.phase = "closing"
        self.commands(HangUp(self.call_id))

    def _dialogue(self, call: Callable[[], BotTurn]) -> BotTurn:
        try:
            return call()
        except DialogueUnavailable as exc:
            log.error("dialogue unavailable during a call", extra={"fields": {"call": self.call_id, "error": str(exc)[:200]}})
            self.outcome, self.outcome_detail = "dropped", {"reason": "dialogue unavailable"}
            return BotTurn([self.config.trouble_line], ended=True)

    def _respond(self, turn: BotTurn, timing: TurnTiming | None = None, speech_end_wall: float | None = None) -> None:
        for n, line in enumerate(turn.lines):
            samples, tts_ms = self.kit.lines.speak(line)
            self.transcript.append(("bot", line))
            if n == 0 and timing is not None:
                timing.tts_ms = round(tts_ms, 1)
                self.timings.append(timing)
                with self._play_lock:
                    self._pending_timing, self._speech_end_wall = timing, speech_end_wall
                log.info("voice turn", extra={"fields": {"call": self.call_id, "endpoint_ms": timing.endpoint_ms,
                                                         "asr_ms": timing.asr_ms, "rasa_ms": timing.rasa_ms, "tts_ms": timing.tts_ms}})
            with self._play_lock:
                self._playback.append(samples)
        if (turn.ended or turn.handoff) and turn.outcome and self.outcome is None:
            self.outcome = turn.outcome  # what the dialogue recorded, for the gateway's own report
        if turn.handoff:
            self.phase = "closing"
            if self.config.agent_uri:
                self._after_playback = Transfer(self.call_id, self.config.agent_uri)
            else:
                self._agent("no agent line configured")
        elif turn.ended:
            self._close_after_playback()
        if not turn.lines:
            self._quiet_since = time.monotonic()

    def _close_after_playback(self) -> None:
        self.phase = "closing"
        self._after_playback = HangUp(self.call_id)

    def _agent(self, result: Any) -> None:
        if result is True:
            self.phase = "bridged"
            self._stop_playback()
            return
        # Nobody took the call: apologise, record a callback, hang up.
        self.outcome, self.outcome_detail = "callback", {"reason": f"hand-over failed: {result}"}
        with self._play_lock:
            samples, _ms = self.kit.lines.speak(self.config.agent_busy_line)
            self._playback.append(samples)
        self.transcript.append(("bot", self.config.agent_busy_line))
        self._close_after_playback()

    def _stop_playback(self) -> None:
        with self._play_lock:
            self._playback.clear()
        self._quiet_since = time.monotonic()
