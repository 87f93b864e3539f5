"""Several gateway workers behind one SIP address: Kamailio's dispatcher (Debian `kamailio`).

pjsua2 holds a few calls per process (``voice.max_calls``); more calls means more worker processes. With
``voice.workers`` > 1, `callbot up` starts that many gateways on the UDP ports from ``voice.worker_sip_base`` and
Kamailio on ``voice.sip_port``, rendered from ``deploy/kamailio.cfg.tmpl``: new calls go round-robin, a full or
dead worker passes the call on, in-dialog requests follow the Record-Route.
"""

from __future__ import annotations

import shutil
import socket
import uuid
from pathlib import Path

from callbot.settings import PROJECT_ROOT, Settings
from knowledge_base.errors import CallbotError

TEMPLATE = PROJECT_ROOT / "deploy" / "kamailio.cfg.tmpl"
MODULE_PATHS = ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/aarch64-linux-gnu/kamailio/modules",
                "/usr/lib/kamailio/modules")


def worker_sip_ports(settings: Settings) -> list[int]:
    return [settings.voice.worker_sip_base + n for n in range(settings.voice.workers)]


def render_config(settings: Settings) -> Path:
    run = settings.home / "run"
    run.mkdir(parents=True, exist_ok=True)
    module_path = next((p for p in MODULE_PATHS if Path(p, "dispatcher.so").is_file()), None)
    if module_path is None or shutil.which("kamailio") is None:
        raise CallbotError("voice.workers > 1 needs Kamailio (Debian package `kamailio`, installed by scripts/install.sh); "
                           "install it or set CALLBOT_VOICE__WORKERS=1.")
    host = settings.voice.sip_host
    listing = run / "dispatcher.list"
    listing.write_text("".join(f"1 sip:{host}:{port}\n" for port in worker_sip_ports(settings)))
    config = run / "kamailio.cfg"
    text = TEMPLATE.read_text()
    for key, value in {"children": 2, "listen_host": host, "listen_port": settings.voice.sip_port,
                       "module_path": module_path, "list_file": listing}.items():
        text = text.replace(f"@@{key}@@", str(value))
    config.write_text(text)
    return config


def dispatcher_command(settings: Settings) -> list[str]:
    config = render_config(settings)
    # -DD: stay in the foreground (the supervisor owns it); -E: log to stderr (its log file); no pid or runtime dir of
    # the system's.
    return ["kamailio", "-f", str(config), "-DD", "-E", "-Y", str(settings.home / "run" / "kamailio-rt"), "-m", "64", "-M", "8"]


def sip_options_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a SIP element answers OPTIONS with 200 on UDP host:port."""
    tag = uuid.uuid4().hex[:8]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        local = sock.getsockname()[1]
        message = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{local};branch=z9hG4bK{tag}\r\n"
                   f"From: <sip:probe@{host}>;tag={tag}\r\nTo: <sip:{host}:{port}>\r\nCall-ID: {tag}@callbot\r\n"
                   f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        sock.settimeout(timeout)
        try:
            sock.sendto(message.encode(), (host, port))
            data, _ = sock.recvfrom(4096)
        except OSError:
            return False
    return data.startswith(b"SIP/2.0 200")
