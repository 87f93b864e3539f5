"""sipp (Debian sip-tester) as the real far end of the gateway's calls: scenario files and a runner.

Each scenario's SDP names an ``RtpPeer``'s port (``-key rtp_port``): sipp does the signalling, the peer the
media. Scenarios:
- ``caller(hold_ms)``: calls the gateway; hangs up after ``hold_ms`` unless the gateway hangs up first;
- ``callee(ring_ms, hold_ms)``: answers after ringing; hangs up after ``hold_ms`` unless the gateway does;
- ``busy_callee()``: 486 Busy Here;
- ``unanswered_callee()``: rings until the gateway gives up (CANCEL → 200, 487).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

_SDP = """v=0
o=sipp 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio [rtp_port] RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
"""

_OK_TO_BYE = """  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
"""


def _answer(status: str, cseq: str = "[last_CSeq:]", contact: bool = False, sdp: str = "") -> str:
    """A callee's response to the last request: the dialog's headers echoed, our To tag added."""
    extra = "Contact: <sip:callee@[local_ip]:[local_port]>\n" if contact else ""
    body = f"Content-Type: application/sdp\nContent-Length: [len]\n\n{sdp}" if sdp else "Content-Length: 0\n\n"
    return f"""  <send{' retrans="500"' if sdp else ''}><![CDATA[
SIP/2.0 {status}
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
{cseq}
{extra}{body}]]></send>
"""


def caller(hold_ms: int, service: str = "callbot", codecs: str = "0 8 101") -> str:
    sdp = _SDP.replace("RTP/AVP 0 8 101", f"RTP/AVP {codecs}")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<scenario name="caller">
  <send retrans="500"><![CDATA[
INVITE sip:{service}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:13800138000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{service}@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:13800138000@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{sdp}]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="486" optional="true" next="refused"/>
  <recv response="488" optional="true" next="refused"/>
  <recv response="503" optional="true" next="refused"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:13800138000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
[routes]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: <sip:13800138000@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv request="BYE" timeout="{hold_ms}" ontimeout="hangup"/>
{_OK_TO_BYE}  <nop next="done"/>
  <label id="hangup"/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:13800138000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
[routes]
Call-ID: [call_id]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" crlf="true"/>
  <nop next="done"/>
  <label id="refused"/>
  <send><![CDATA[
ACK sip:{service}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:13800138000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
  <label id="done"/>
</scenario>
"""


def callee(ring_ms: int = 500, hold_ms: int = 170_000) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<scenario name="callee">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="a=rtpmap:([0-9]+) telephone-event" search_in="body" assign_to="rtpmap,te"/>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="caller_from"/>
      <ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" assign_to="caller_contact"/>
    </action>
  </recv>
{_answer("180 Ringing", contact=True)}  <pause milliseconds="{ring_ms}"/>
{_answer("200 OK", contact=True, sdp=_SDP.replace("101", "[$te]"))}  <recv request="ACK" crlf="true"/>
  <recv request="BYE" timeout="{hold_ms}" ontimeout="hangup"/>
{_OK_TO_BYE}  <nop next="done"/>
  <label id="hangup"/>
  <send retrans="500"><![CDATA[
BYE [$caller_contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To:[$caller_from]
Call-ID: [call_id]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" crlf="true"/>
  <label id="done"/>
  <Reference variables="rtpmap"/>
</scenario>
"""


def busy_callee() -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<scenario name="busy callee">
  <recv request="INVITE" crlf="true"/>
{_answer("486 Busy Here")}  <recv request="ACK"/>
</scenario>
"""


def unanswered_callee() -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<scenario name="unanswered callee">
  <recv request="INVITE" crlf="true">
    <action><ereg regexp="CSeq: ([0-9]+) INVITE" search_in="msg" assign_to="whole,cseq"/></action>
  </recv>
{_answer("180 Ringing")}  <recv request="CANCEL"/>
{_answer("200 OK")}{_answer("487 Request Terminated", cseq="CSeq: [$cseq] INVITE")}  <recv request="ACK"/>
  <Reference variables="whole"/>
</scenario>
"""


class Sipp:
    """One sipp process running ``calls`` calls of ``scenario`` (then it exits): a caller (``target`` = the gateway) or
    a callee listening on ``port``."""

    def __init__(self, scenario: str, workdir: Path, port: int, rtp_port: int, target: str | None = None,
                 timeout_s: int = 180, calls: int = 1):
        self.file = workdir / f"sipp-{port}.xml"
        self.file.write_text(scenario)
        self.log = workdir / f"sipp-{port}.log"
        args = ["sipp", "-sf", str(self.file), "-m", str(calls), "-i", "127.0.0.1", "-p", str(port), "-key", "rtp_port",
                str(rtp_port), "-nostdin", "-timeout", f"{timeout_s}s", "-timeout_error", "-trace_err",
                "-error_file", str(workdir / f"sipp-{port}.errors"), "-trace_msg",
                "-message_file", str(workdir / f"sipp-{port}.messages")]
        if target:
            args.append(target)
        self.proc = subprocess.Popen(args, cwd=workdir, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def errors(self) -> str:
        path = self.file.parent / f"sipp-{self.file.stem.removeprefix('sipp-')}.errors"
        return path.read_text(errors="replace")[-3000:] if path.is_file() else ""

    def messages(self) -> str:
        path = self.file.parent / f"sipp-{self.file.stem.removeprefix('sipp-')}.messages"
        return path.read_text(errors="replace") if path.is_file() else ""

    def offered_dtmf_type(self) -> int:
        """The telephone-event payload type in the INVITE sipp received (pjsua offers its own, 120 in 2.15)."""
        import re

        path = self.file.parent / f"sipp-{self.file.stem.removeprefix('sipp-')}.messages"
        found = re.search(r"a=rtpmap:(\d+) telephone-event", path.read_text(errors="replace")) if path.is_file() else None
        assert found, "no telephone-event in the offer"
        return int(found.group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
