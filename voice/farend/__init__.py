"""A far end for the gateway's calls, for tests, benchmarks and smoke checks: sipp (Debian sip-tester) does the
SIP, ``RtpPeer`` the media its SDP announces (plays speech and DTMF, records what the bot sends)."""
