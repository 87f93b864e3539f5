"""The SIP user agent: the only module that imports pjsua2.

pjsua2 runs without worker threads (``threadCnt=0``, ``mainThreadOnly``): every SIP callback happens in the
thread that runs ``SipGateway.serve``; other threads (call sessions, the HTTP control port) hand it work
through ``submit``. Audio flows through one ``AudioMediaPort`` per call (8 kHz, 20 ms, 16-bit), driven by
the conference bridge's clock on a null sound device: no sound card is needed. G.711 (PCMU, PCMA) only,
with RFC 2833 DTMF; an offer without them is refused with 488 by pjsua itself.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pjsua2 as pj

from callbot.pii import mask_sensitive
from voice.gateway.session import FRAME, RATE, CallSession, Command, HangUp, Transfer

log = logging.getLogger(__name__)

PJ_ETOOMANY = 70010  # pjlib's "too many objects": pjsua has no free call slot

# SIP final responses of an outbound call that never connected → its outcome.
FAILED_CALL_OUTCOMES = {486: "busy", 600: "busy", 408: "no_answer", 480: "no_answer", 487: "no_answer",
                        603: "rejected", 403: "rejected", 404: "rejected", 484: "rejected", 604: "rejected"}


def outcome_of_failed_call(status: int) -> str:
    return FAILED_CALL_OUTCOMES.get(status, "no_answer" if status in (0, 503) else "rejected")


class _Port(pj.AudioMediaPort):
    """One call's audio: frames from the caller go to the session, the session's frames go to the caller."""

    def __init__(self, session: CallSession):
        super().__init__()
        self.session = session

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:
        if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO and frame.size:
            self.session.caller_frame(np.frombuffer(bytes(frame.buf), np.int16).copy())

    def onFrameRequested(self, frame: pj.MediaFrame) -> None:
        pcm = self.session.bot_frame()
        frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        frame.buf = pj.ByteVector(pcm.tobytes())
        frame.size = FRAME * 2


@dataclass
class _Leg:
    call: Any  # _Call
    session: CallSession | None  # None for an agent leg
    port: _Port | None = None
    connected: bool = False
    placed_at: float = field(default_factory=time.monotonic)
    agent_for: str | None = None  # an agent leg: the caller's call id
    agent_leg: str | None = None  # a caller leg being handed over: the agent leg's key
    bridged: bool = False
    media_index: int = -1
    rx_packets: int = -1
    rx_changed: float = field(default_factory=time.monotonic)


class _Call(pj.Call):
    def __init__(self, gateway: SipGateway, key: str, account: pj.Account, call_id: int = pj.PJSUA_INVALID_ID):
        super().__init__(account, call_id)
        self.gateway, self.key = gateway, key

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        self.gateway._on_state(self.key, self.getInfo())

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        self.gateway._on_media(self.key, self)

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        self.gateway._on_dtmf(self.key, str(prm.digit))


class _Account(pj.Account):
    def __init__(self, gateway: SipGateway):
        super().__init__()
        self.gateway = gateway

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        self.gateway._on_incoming(prm.callId)


@dataclass
class PlaceCall:
    call_id: str
    uri: str
    scenario: str
    customer_name: str
    variables: dict[str, Any]


class SipGateway:
    """``session_factory(call_id, direction, commands, **outbound)`` makes the CallSession of a new call."""

    def __init__(self, host: str, port: int, max_calls: int, session_factory: Callable[..., CallSession],
                 ring_timeout_s: float = 40.0, agent_timeout_s: float = 20.0, rtp_timeout_s: float = 30.0):
        self.host, self.port, self.max_calls = host, port, max_calls
        self.rtp_timeout_s = rtp_timeout_s
        self._last_rtp_check = 0.0
        self.session_factory = session_factory
        self.ring_timeout_s, self.agent_timeout_s = ring_timeout_s, agent_timeout_s
        self._work: queue.Queue[Any] = queue.Queue()
        self._legs: dict[str, _Leg] = {}
        self._graveyard: list[Any] = []  # Call objects are deleted outside their own callbacks
        # Audio ports of ended calls, kept a moment: the conference clock may still be inside one of their callbacks,
        # and destroying one from a SIP callback raced with it (the gateway died in CI on a caller hanging up).
        self._retired_ports: list[tuple[float, Any]] = []
        self.ready = threading.Event()
        self.stopping = threading.Event()

    # -- any thread --
    def submit(self, item: Command | PlaceCall) -> None:
        self._work.put(item)

    def place(self, uri: str, scenario: str, customer_name: str = "", variables: dict[str, Any] | None = None,
              call_id: str | None = None) -> str:
        call_id = call_id or "call-" + uuid.uuid4().hex[:12]
        self.submit(PlaceCall(call_id, uri, scenario, customer_name, dict(variables or {})))
        return call_id

    def active_calls(self) -> int:
        # list(): the control port's thread reads this while the SIP thread adds and removes legs
        return sum(1 for leg in list(self._legs.values()) if leg.session is not None)

    # -- the SIP thread --
    def serve(self) -> None:
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = 4  # PJSUA_MAX_CALLS of the wheel: every slot, for handed-over calls' agent legs
        cfg.uaConfig.userAgent = "callbot-gateway"
        cfg.logConfig.level = 1
        cfg.logConfig.consoleLevel = 1
        cfg.medConfig.clockRate = RATE
        cfg.medConfig.sndClockRate = RATE
        cfg.medConfig.noVad = True
        cfg.medConfig.ecTailLen = 0
        self.ep.libInit(cfg)
        self.ep.audDevManager().setNullDev()
        tcfg = pj.TransportConfig()
        tcfg.port = self.port
        tcfg.boundAddress = self.host
        self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        self.ep.libStart()
        for codec in self.ep.codecEnum2():
            keep = codec.codecId.startswith(("PCMU/", "PCMA/"))
            self.ep.codecSetPriority(codec.codecId, 200 if codec.codecId.startswith("PCMU/") else (150 if keep else 0))
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:callbot@{self.host}:{self.port}"
        # An answer listing several codecs stays as it is: no re-INVITE to lock one (simple peers reject it).
        acfg.mediaConfig.lockCodecEnabled = False
        if self.host not in ("0.0.0.0", ""):
            # RTP on the same address as SIP, and that address in the SDP (not whatever interface pjsua guesses).
            acfg.mediaConfig.transportConfig.boundAddress = self.host
            acfg.mediaConfig.transportConfig.publicAddress = self.host
        self.account = _Account(self)
        self.account.create(acfg)
        self.ready.set()
        log.info("SIP gateway listening", extra={"fields": {"sip": f"udp:{self.host}:{self.port}"}})
        try:
            while not self.stopping.is_set():
                self.ep.libHandleEvents(10)
                self._drain()
                self._timeouts()
                self._graveyard.clear()
                if self._retired_ports and time.monotonic() - self._retired_ports[0][0] > 2.0:
                    self._retired_ports.pop(0)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        busy = bool(self._legs or self._retired_ports)
        self.ep.hangupAllCalls()
        for _ in range(250 if busy else 20):  # ended calls' ports go quiet before they are destroyed (see __init__)
            self.ep.libHandleEvents(10)
        for leg in list(self._legs.values()):
            if leg.session is not None:
                leg.session.hung_up("gateway stopped")
        self._legs.clear()
        self._graveyard.clear()
        self._retired_ports.clear()
        self.account = None
        self.ep.libDestroy()

    def _drain(self) -> None:
        while True:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                return
            try:
                if isinstance(item, PlaceCall):
                    self._place(item)
                elif isinstance(item, HangUp):
                    self._hangup(item.call_id)
                elif isinstance(item, Transfer):
                    self._bridge_agent(item.call_id, item.uri)
            except pj.Error as exc:
                log.error("SIP request failed", extra={"fields": {"request": type(item).__name__, "error": exc.info()[:200]}})
                leg = self._legs.get(getattr(item, "call_id", ""))
                if isinstance(item, Transfer) and leg is not None and leg.session is not None:
                    agent = self._legs.pop(leg.agent_leg or "", None)
                    leg.agent_leg = None
                    if agent is not None:
                        self._graveyard.append(agent.call)
                    leg.session.agent_failed("agent call could not be placed")
                elif isinstance(item, PlaceCall):
                    # pjsua full (PJ_ETOOMANY) is this worker's limit, not the callee's answer: retryable
                    outcome = "no_answer" if exc.status == PJ_ETOOMANY else "rejected"
                    self._unplaced(item.call_id, outcome, f"call could not be placed: {exc.reason or exc.info()[:120]}")

    def _timeouts(self) -> None:
        now = time.monotonic()
        check_rtp = now - self._last_rtp_check > 2.0
        if check_rtp:
            self._last_rtp_check = now
        for key, leg in list(self._legs.items()):
            if leg.connected:
                if check_rtp and leg.session is not None and leg.media_index >= 0:
                    self._check_rtp(key, leg, now)
                continue
            limit = self.agent_timeout_s if leg.agent_for else self.ring_timeout_s
            if leg.session is not None and leg.session.direction == "inbound":
                continue
            if now - leg.placed_at > limit:
                log.info("no answer", extra={"fields": {"call": key}})
                if leg.session is not None:
                    leg.session.outcome, leg.session.outcome_detail = "no_answer", {"reason": f"no answer in {limit:.0f} s"}
                self._hangup(key)

    def _check_rtp(self, key: str, leg: _Leg, now: float) -> None:
        """A far end that sends no RTP for rtp_timeout_s is gone (a dropped line sends no BYE): hang up."""
        try:
            packets = int(leg.call.getStreamStat(leg.media_index).rtcp.rxStat.pkt)
        except pj.Error:
            return
        if packets != leg.rx_packets:
            leg.rx_packets, leg.rx_changed = packets, now
        elif now - leg.rx_changed > self.rtp_timeout_s and leg.session is not None:
            log.info("no audio from the far end", extra={"fields": {"call": key, "seconds": round(now - leg.rx_changed)}})
            if leg.session.outcome is None:
                leg.session.outcome = "dropped"
                leg.session.outcome_detail = {"reason": f"no audio from the far end for {self.rtp_timeout_s:.0f} s"}
            leg.rx_changed = now  # once
            self._hangup(key)

    def _place(self, item: PlaceCall) -> None:
        full = self.active_calls() >= self.max_calls
        session = self.session_factory(item.call_id, "outbound", self.submit, scenario=item.scenario,
                                       customer_name=item.customer_name, variables=item.variables)
        call = _Call(self, item.call_id, self.account)
        self._legs[item.call_id] = _Leg(call, session)
        if full:  # the control port refuses this with 503 too; requests queued before it filled end here
            log.warning("call limit reached", extra={"fields": {"call": item.call_id, "max_calls": self.max_calls}})
            self._unplaced(item.call_id, "no_answer", f"this gateway worker is at its call limit (voice.max_calls = "
                                                      f"{self.max_calls}, at most 4 per worker); add gateway workers (voice.workers)")
            return
        log.info("placing a call", extra={"fields": {"call": item.call_id, "to": mask_sensitive(item.uri), "scenario": item.scenario}})
        call.makeCall(item.uri, pj.CallOpParam(True))

    def _unplaced(self, call_id: str, outcome: str, reason: str) -> None:
        """An outbound call that never reached the network: its session ends with ``outcome`` and no SIP call is left
        behind (a pjsua call without an id must never be hung up: pjsua asserts and the whole gateway aborts)."""
        leg = self._legs.pop(call_id, None)
        if leg is None or leg.session is None:
            return
        self._graveyard.append(leg.call)
        if leg.session.outcome is None:
            leg.session.outcome, leg.session.outcome_detail = outcome, {"reason": reason}
        leg.session.hung_up(reason)

    def _on_incoming(self, pj_call_id: int) -> None:
        key = "call-" + uuid.uuid4().hex[:12]
        call = _Call(self, key, self.account, pj_call_id)
        prm = pj.CallOpParam()
        if self.active_calls() >= self.max_calls:
            prm.statusCode = 486  # busy here: this worker is full, the dispatcher tries another
            call.hangup(prm)
            self._graveyard.append(call)
            return
        session = self.session_factory(key, "inbound", self.submit)
        self._legs[key] = _Leg(call, session)
        info = call.getInfo()
        log.info("incoming call", extra={"fields": {"call": key, "from": mask_sensitive(info.remoteUri)}})
        prm.statusCode = 200
        call.answer(prm)

    def _on_state(self, key: str, info: pj.CallInfo) -> None:
        leg = self._legs.get(key)
        if leg is None:
            return
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED and not leg.connected:
            leg.connected = True
            if leg.session is not None:
                leg.session.answered()
            elif leg.agent_for:
                caller = self._legs.get(leg.agent_for)
                if caller is not None and caller.session is not None:
                    caller.session.agent_answered()
                    self._connect_bridge(caller, leg)  # or when its media comes up
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._legs.pop(key, None)
            self._graveyard.append(leg.call)
            if leg.port is not None:
                self._retired_ports.append((time.monotonic(), leg.port))
                leg.port = None
            if leg.session is not None:
                session = leg.session
                if not leg.connected and session.direction == "outbound" and session.outcome is None:
                    session.outcome = outcome_of_failed_call(info.lastStatusCode)
                    session.outcome_detail = {"sip_status": info.lastStatusCode, "reason": info.lastReason}
                session.hung_up("hung up" if leg.connected else f"SIP {info.lastStatusCode} {info.lastReason}")
                if leg.agent_leg:
                    self._hangup(leg.agent_leg)
            elif leg.agent_for:
                caller = self._legs.get(leg.agent_for)
                if caller is not None and caller.session is not None:
                    if leg.connected:
                        self._hangup(leg.agent_for)  # the agent finished the call
                    else:
                        caller.agent_leg = None
                        caller.session.agent_failed(f"agent line answered {info.lastStatusCode} {info.lastReason}")

    def _on_media(self, key: str, call: _Call) -> None:
        leg = self._legs.get(key)
        if leg is not None and leg.agent_for and leg.connected:
            caller = self._legs.get(leg.agent_for)
            if caller is not None:
                self._connect_bridge(caller, leg)
            return
        if leg is None or leg.session is None or leg.port is not None:
            return
        info = call.getInfo()  # held: its media vector dies with it
        for index, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                audio = call.getAudioMedia(index)
                fmt = pj.MediaFormatAudio()
                fmt.type = pj.PJMEDIA_TYPE_AUDIO
                fmt.clockRate = RATE
                fmt.channelCount = 1
                fmt.bitsPerSample = 16
                fmt.frameTimeUsec = 20_000
                port = _Port(leg.session)
                port.createPort(f"p{key[-8:]}", fmt)
                audio.startTransmit(port)
                port.startTransmit(audio)
                leg.port, leg.media_index = port, index
                return

    def _on_dtmf(self, key: str, digit: str) -> None:
        leg = self._legs.get(key)
        if leg is not None and leg.session is not None:
            leg.session.dtmf(digit)

    def _hangup(self, key: str) -> None:
        leg = self._legs.get(key)
        if leg is None:
            return
        if leg.call.getId() < 0:  # never placed (makeCall failed): nothing on the network to end
            if leg.session is not None:
                self._unplaced(key, leg.session.outcome or "rejected", "call could not be placed")
            else:
                self._graveyard.append(self._legs.pop(key).call)
            return
        prm = pj.CallOpParam()
        prm.statusCode = 487 if not leg.connected and leg.session is not None and leg.session.direction == "outbound" else 603
        try:
            leg.call.hangup(prm)
        except pj.Error as exc:  # already gone: the DISCONNECTED callback cleans up
            log.info("hang-up of a finished call", extra={"fields": {"call": key, "error": exc.info()[:120]}})

    def _bridge_agent(self, key: str, uri: str) -> None:
        caller = self._legs.get(key)
        if caller is None or caller.session is None:
            return
        agent_key = key + "-agent"
        call = _Call(self, agent_key, self.account)
        self._legs[agent_key] = _Leg(call, None, agent_for=key)
        caller.agent_leg = agent_key
        log.info("handing over to an agent", extra={"fields": {"call": key, "agent": mask_sensitive(uri)}})
        call.makeCall(uri, pj.CallOpParam(True))

    def _connect_bridge(self, caller: _Leg, agent: _Leg) -> None:
        if agent.bridged:
            return
        caller_audio = _audio_of(caller.call)
        agent_audio = _audio_of(agent.call)
        if caller_audio is None or agent_audio is None:
            return
        agent.bridged = True
        if caller.port is not None:
            caller.port.stopTransmit(caller_audio)  # the bot falls silent
        caller_audio.startTransmit(agent_audio)
        agent_audio.startTransmit(caller_audio)


def _audio_of(call: _Call) -> pj.AudioMedia | None:
    info = call.getInfo()  # held: its media vector dies with it
    for index, media in enumerate(info.media):
        if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
            return call.getAudioMedia(index)
    return None
