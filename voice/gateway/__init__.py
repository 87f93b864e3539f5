"""The phone channel: a SIP gateway that bridges each call to a Rasa conversation.

One module per concern: ``dialogue`` (Rasa, the same channel and actions as chat), ``lines`` (bot lines as
phone audio, cached), ``recording`` (a stereo WAV per call), ``session`` (one call: end of turn, barge-in,
no input, DTMF, hand-over, answering machines; no SIP in it), ``sip`` (the only module that imports pjsua2),
``control`` (the HTTP port `callbot voice call` and health checks use).
"""
