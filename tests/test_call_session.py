"""One call's logic without SIP: the media clock is driven by hand, Rasa and the voices are stand-ins.

The SIP side and real Rasa are exercised in tests/test_gateway.py; here each rule of the session is pinned
where a phone network cannot produce the case on demand (an agent line that never answers, Rasa down, a cough).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from voice.asr.base import Transcript
from voice.audio import AudioClip
from voice.gateway.dialogue import BotTurn, DialogueUnavailable
from voice.gateway.lines import SpokenLines
from voice.gateway.session import FRAME, CallSession, HangUp, SessionConfig, SpeechKit, Transfer


class ToneVoice:
    """Every line is a 440 Hz tone, 40 ms per character: loud, and cheap to make."""
    name = "tone"

    def synthesize(self, text: str) -> AudioClip:
        t = np.arange(int(0.04 * len(text) * 8000)) / 8000
        return AudioClip((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000)


class ScriptedDialogue:
    def __init__(self, replies: dict[str, BotTurn], down: bool = False):
        self.replies, self.down, self.heard = replies, down, []

    def say(self, sender: str, text: str) -> BotTurn:
        self.heard.append(text)
        if self.down:
            raise DialogueUnavailable("Rasa is not running")
        return self.replies.get(text, BotTurn(["请再说一遍。"]))

    def start_outbound(self, sender: str, *args: Any) -> BotTurn:
        return self.say(sender, "start")

    def forget(self, sender: str) -> None:
        pass


class Heard:
    name = "fixed"

    def transcribe(self, clip: AudioClip, hint: str | None = None) -> Transcript:
        return Transcript("我要找人工", "我要找人工", 1.0, clip.seconds)


def make(tmp_path: Path, dialogue: ScriptedDialogue, **config: Any) -> tuple[CallSession, list[Any]]:
    commands: list[Any] = []
    kit = SpeechKit(Heard(), SpokenLines(ToneVoice(), tmp_path))
    session = CallSession("call-test", "inbound", kit, dialogue, SessionConfig(**config), commands.append)  # type: ignore[arg-type]
    return session, commands


def pump(session: CallSession, seconds: float, caller: np.ndarray | None = None) -> np.ndarray:
    """Run the media clock for ``seconds`` (in real time, 20 ms a tick), sending ``caller`` audio then silence;
    returns what the bot sent."""
    sent = []
    audio = caller if caller is not None else np.zeros(0, np.int16)
    for n in range(int(seconds / 0.02)):
        chunk = audio[n * FRAME:(n + 1) * FRAME]
        session.caller_frame(np.concatenate([chunk, np.zeros(FRAME - len(chunk), np.int16)]).astype(np.int16))
        sent.append(session.bot_frame())
        time.sleep(0.02)
    return np.concatenate(sent)


def spoken(seconds: float) -> np.ndarray:
    """Real speech (espeak-ng, Mandarin) cut to ``seconds``: a cough-length piece of it, or a caller's turn."""
    from voice.tts.espeak import EspeakSynthesizer

    clip = EspeakSynthesizer().synthesize("您好，我想问一下怎么开户，需要带什么材料").resampled(8000)
    samples = clip.samples[np.argmax(np.abs(clip.samples) > 0.05):]  # from the first loud sample
    return (samples[: int(seconds * 8000)] * 32767).astype(np.int16)


def test_hand_over_nobody_answers_apology_callback_and_hang_up(tmp_path: Path) -> None:
    dialogue = ScriptedDialogue({"/greet": BotTurn(["您好"]), "/request_human": BotTurn(["正在转接"], handoff=True)})
    session, commands = make(tmp_path, dialogue, agent_uri="sip:agents@pbx")
    session.answered()
    pump(session, 0.5)
    session.dtmf("0")
    pump(session, 1.0)
    assert commands == [Transfer("call-test", "sip:agents@pbx")]
    session.agent_failed("486 Busy Here")
    sent = pump(session, 4.0)
    assert np.abs(sent).max() > 1000, "the caller hears the apology"
    assert commands[-1] == HangUp("call-test")
    assert session.outcome == "callback" and "486" in session.outcome_detail["reason"]
    assert ("bot", session.config.agent_busy_line) in session.transcript
    session.hung_up()
    assert session.wait(5)


def test_dialogue_down_the_caller_hears_an_apology_and_the_call_is_recorded(tmp_path: Path) -> None:
    session, commands = make(tmp_path, ScriptedDialogue({}, down=True))
    session.answered()
    sent = pump(session, 4.0)
    assert np.abs(sent).max() > 1000
    assert commands == [HangUp("call-test")]
    assert session.outcome == "dropped" and session.outcome_detail["reason"] == "dialogue unavailable"


def test_a_cough_does_not_interrupt_the_prompt_but_speech_does(tmp_path: Path) -> None:
    long_line = "您好，" + "这是一段很长的提示语" * 6
    dialogue = ScriptedDialogue({"/greet": BotTurn([long_line])})
    session, _commands = make(tmp_path, dialogue, no_input_s=60)
    session.answered()
    pump(session, 0.3)
    cough = spoken(0.1)
    after_cough = pump(session, 1.0, cough)
    assert session.barge_ins == 0 and np.abs(after_cough[-1600:]).max() > 1000, "a 100 ms noise must not stop the prompt"
    pump(session, 1.5, spoken(1.2))
    assert session.barge_ins == 1
    assert np.abs(pump(session, 0.3)).max() == 0, "the prompt stopped"
    session.hung_up()
    assert session.wait(5)


def test_dtmf_follows_the_scenario_mapping(tmp_path: Path) -> None:
    dialogue = ScriptedDialogue({"/greet": BotTurn(["您好"])})
    session, _commands = make(tmp_path, dialogue, dtmf={"1": "/affirm", "9": "/goodbye"})
    session.answered()
    pump(session, 0.3)
    for key in "195":
        session.dtmf(key)
    pump(session, 0.5)
    assert dialogue.heard == ["/greet", "/affirm", "/goodbye"]  # 5 maps to nothing: ignored
    session.hung_up()
    assert session.wait(5)


def test_a_filled_in_prompt_synthesises_only_the_customer_values(tmp_path: Path) -> None:
    class Counting(ToneVoice):
        said: list[str] = []

        def synthesize(self, text: str) -> AudioClip:
            self.said.append(text)
            return super().synthesize(text)

    voice = Counting()
    lines = SpokenLines(voice, tmp_path)
    template = "您申购的{stock_name}（{stock_code}）中签{allotted_shares}股，请问您会按时缴款吗？"
    lines.warm(["您好，请问是本人吗？", template])
    assert voice.said == ["您好，请问是本人吗？", "您申购的", "）中签", "股，请问您会按时缴款吗？"]
    voice.said.clear()
    samples, _ms = lines.speak("您申购的华源科技（688001）中签500股，请问您会按时缴款吗？")
    assert voice.said == ["华源科技", "688001", "500"]
    fixed = sum(len(p) for p in ("您申购的", "）中签", "股，请问您会按时缴款吗？"))
    assert len(samples) >= int(0.04 * (fixed + 4 + 6 + 3) * 8000), "every piece is in the line"
    voice.said.clear()
    lines.speak("与模板无关的一句话")
    assert voice.said == ["与模板无关的一句话"]


class Says:
    """The callee's utterances, in order, as the recogniser would hear them."""
    name = "scripted"

    def __init__(self, *texts: str):
        self.texts = list(texts)

    def transcribe(self, clip: AudioClip, hint: str | None = None) -> Transcript:
        text = self.texts.pop(0) if self.texts else ""
        return Transcript(text, text, 1.0, clip.seconds)


def outbound(tmp_path: Path, recognizer: Any, dialogue: ScriptedDialogue) -> tuple[CallSession, list[Any]]:
    commands: list[Any] = []
    kit = SpeechKit(recognizer, SpokenLines(ToneVoice(), tmp_path))
    session = CallSession("call-out", "outbound", kit, dialogue, SessionConfig(), commands.append,  # type: ignore[arg-type]
                          scenario="ipo_allotment_notice")
    return session, commands


def test_a_media_backlog_does_not_make_the_bot_talk_over_a_voicemail_greeting(tmp_path: Path) -> None:
    # The call is answered but the first frames reach the session late (a busy machine): the wait for the
    # callee counts audio heard, so the voicemail greeting that follows is still heard before the bot speaks.
    dialogue = ScriptedDialogue({"start": BotTurn(["您好，这里是证券公司"])})
    session, commands = outbound(tmp_path, Says("您拨打的用户暂时无法接听，请在提示音后留言"), dialogue)
    session.answered()
    time.sleep(2.6)  # longer than listen_first_s, no frame processed yet
    pump(session, 2.5, spoken(1.5))
    assert dialogue.heard == [], "the bot did not start the script over the greeting"
    assert session.outcome == "answering_machine" and commands == [HangUp("call-out")]
    session.hung_up()
    assert session.wait(5)


def test_a_greeting_that_pauses_after_hello_is_still_a_machine(tmp_path: Path) -> None:
    dialogue = ScriptedDialogue({"start": BotTurn(["您好"])})
    session, commands = outbound(tmp_path, Says("您好", "您拨打的用户暂时无法接听，请在提示音后留言"), dialogue)
    session.answered()
    pump(session, 1.5, spoken(0.5))  # "您好" and a pause longer than end_silence_ms: taken for a person
    assert dialogue.heard == ["start"]
    pump(session, 3.0, spoken(1.5))  # the rest of the greeting
    assert session.outcome == "answering_machine", session.outcome_detail
    assert "您拨打的" in session.outcome_detail["heard"] and commands == [HangUp("call-out")]
    session.hung_up()
    assert session.wait(5)


def test_a_person_who_answers_the_bot_is_not_a_machine(tmp_path: Path) -> None:
    dialogue = ScriptedDialogue({"start": BotTurn(["您好"]), "我暂时无法确认": BotTurn(["好的"])})
    session, commands = outbound(tmp_path, Says("喂", "我暂时无法确认"), dialogue)
    session.answered()
    pump(session, 1.5, spoken(0.5))
    pump(session, 3.0, spoken(1.0))
    assert dialogue.heard == ["start", "我暂时无法确认"] and session.outcome is None and commands == []
    session.hung_up()
    assert session.wait(5)
