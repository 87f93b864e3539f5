"""The far end's media for sipp calls: sipp does the SIP, this socket the RTP its SDP announces.

sipp (SIPp 3.6) can play audio but not record what it receives; the tests need both, on one symmetric socket
(the gateway sends to the address the SDP names, and pjsua switches to wherever packets come from). So the
sipp scenarios put this peer's port in their SDP (``-key rtp_port N``). It sends G.711 μ-law at 20 ms pacing:
queued speech, or silence between, plus RFC 2833 DTMF events; and it keeps every payload it receives.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np

from voice.audio import AudioClip, ulaw_decode, ulaw_encode

FRAME = 160
DTMF_PT = 101


class RtpPeer:
    def __init__(self, host: str = "127.0.0.1", dtmf_type: int = DTMF_PT, mute: bool = False):
        self.mute = mute  # a one-way line: receives, never sends
        self.dtmf_type = dtmf_type  # the telephone-event payload type the SDP exchange agreed on
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.02)
        self.port = self.sock.getsockname()[1]
        self.remote: tuple[str, int] | None = None
        self.received: list[tuple[float, bytes]] = []  # (arrival time, μ-law payload)
        self._out: list[np.ndarray] = []
        self._events: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._seq, self._ts, self._ssrc = 1, 0, 0x1234ABCD
        self.sent_speech_end: float | None = None  # when the last queued speech frame left
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def play(self, clip: AudioClip) -> None:
        samples = np.clip(clip.resampled(8000).samples * 32767, -32768, 32767).astype(np.int16)
        with self._lock:
            self._out.append(samples)

    def press(self, digit: str) -> None:
        with self._lock:
            self._events.append(digit)

    @property
    def playing(self) -> bool:
        with self._lock:
            return bool(self._out)

    def received_speech(self, level: float = 0.01) -> bool:
        """Whether anything louder than silence has arrived yet."""
        return any(np.sqrt(np.mean(ulaw_decode(p).astype(np.float64) ** 2)) > level for _t, p in list(self.received))

    def heard(self, since: float = 0.0) -> AudioClip:
        """What the gateway sent (after ``since``), as 8 kHz audio."""
        payload = b"".join(p for t, p in self.received if t >= since)
        return AudioClip(ulaw_decode(payload), 8000)

    def first_loud_after(self, since: float, timeout: float = 30.0, level: float = 0.01) -> float | None:
        """Arrival time of the first packet louder than silence after ``since`` (None if none came in time)."""
        deadline, checked = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            packets = list(self.received)
            for t, p in packets[checked:]:  # each packet is looked at once, not on every poll
                if t >= since and np.sqrt(np.mean(ulaw_decode(p).astype(np.float64) ** 2)) > level:
                    return t
            checked = len(packets)
            time.sleep(0.01)
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def _packet(self, pt: int, payload: bytes, marker: bool = False, ts: int | None = None) -> bytes:
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, self._seq & 0xFFFF,
                             (self._ts if ts is None else ts) & 0xFFFFFFFF, self._ssrc)
        self._seq += 1
        return header + payload

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(2048)
                if len(data) > 12 and (data[1] & 0x7F) == 0:
                    self.received.append((time.monotonic(), data[12:]))
                    self.remote = self.remote or addr
            except TimeoutError:
                pass
            except OSError:
                return
            now = time.monotonic()
            if self.remote is None or self.mute:
                next_at = now  # no burst of back-dated frames once the far end is known: a real phone paces them
                continue
            if now < next_at:
                continue
            next_at = max(next_at + 0.02, now - 0.04)
            with self._lock:
                digit = self._events.pop(0) if self._events else None
                frame = None
                if digit is None and self._out:
                    head = self._out[0]
                    frame, self._out[0] = head[:FRAME], head[FRAME:]
                    if not len(self._out[0]):
                        self._out.pop(0)
                        if not self._out:
                            self.sent_speech_end = now
            if digit is not None:
                self._send_dtmf(digit)
                continue
            if frame is None:
                frame = np.zeros(FRAME, np.int16)
            if len(frame) < FRAME:
                frame = np.concatenate([frame, np.zeros(FRAME - len(frame), np.int16)])
            self.sock.sendto(self._packet(0, ulaw_encode(frame.astype(np.float32) / 32768)), self.remote)
            self._ts += FRAME

    def _send_dtmf(self, digit: str) -> None:
        """RFC 2833: the event repeated over 100 ms, then three end packets, one timestamp for all."""
        code = "0123456789*#".index(digit)
        start = self._ts
        for n in range(1, 6):
            self.sock.sendto(self._packet(self.dtmf_type, struct.pack("!BBH", code, 10, n * FRAME), marker=n == 1, ts=start), self.remote)
            time.sleep(0.02)
        for _ in range(3):
            self.sock.sendto(self._packet(self.dtmf_type, struct.pack("!BBH", code, 0x80 | 10, 6 * FRAME), ts=start), self.remote)
        self._ts += 6 * FRAME
