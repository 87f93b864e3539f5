"""Starting, watching and stopping the product's processes (web app, action server, Rasa)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from callbot.auth.service_token import service_token
from callbot.settings import PROJECT_ROOT, Settings
from knowledge_base.errors import CallbotError


class PortInUse(CallbotError):
    pass


class ServiceFailed(CallbotError):
    pass


@dataclass
class Service:
    name: str
    port_key: str  # attribute of Settings.ports
    command: list[str]
    health_path: str
    startup_timeout_s: float
    cwd: Path = PROJECT_ROOT
    env: dict[str, str] | None = None
    offset: int = 0  # the n-th worker of a kind listens on its port + n
    probe: Callable[[], bool] | None = None  # health check of a service with no HTTP (the SIP dispatcher)
    udp: bool = False  # its port is UDP (checked free as such)

    def port(self, settings: Settings) -> int:
        """Its port; 0 for a service that listens on none (the dialer)."""
        if self.port_key:
            return int(getattr(settings.ports, self.port_key)) + self.offset
        return int(settings.voice.sip_port) if self.udp else 0

    def healthy(self, settings: Settings) -> bool:
        if self.probe is not None:
            return self.probe()
        return healthy(f"http://{settings.host}:{self.port(settings)}{self.health_path}")


def service_specs(settings: Settings) -> list[Service]:
    if settings.profile == "scale":
        from callbot.scale import infrastructure_specs, worker_specs

        return infrastructure_specs(settings) + worker_specs(settings)
    py = sys.executable
    rasa = settings.rasa_venv / "bin" / "rasa"
    return [
        Service("web", "web", [py, "-m", "callbot.webapp"], "/health", settings.service_start_timeout_s),
        Service("actions", "actions", [py, "-m", "rasa_sdk", "--actions", "actions", "--port", str(settings.ports.actions)],
                "/health", settings.service_start_timeout_s),
        Service("rasa", "rasa",
                [str(rasa), "run", "--enable-api", "--cors", "*", "--port", str(settings.ports.rasa),
                 "--model", str(settings.bot_dir / "models"), "--endpoints", str(settings.home / "run" / "endpoints.yml"),
                 "--credentials", str(settings.bot_dir / "credentials.yml")],
                "/", max(240.0, settings.service_start_timeout_s), env={"RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "3",
                               "CALLBOT_NLU_URL": settings.url("web"), "CALLBOT_NLU_TIMEOUT": str(settings.nlu.timeout_s),
                               "CALLBOT_SERVICE_TOKEN": service_token(settings)}),
    ] + (gateway_specs(settings) if settings.voice.enabled else []) + (
        # The dialer places the running campaigns' calls: through the gateway, or as text conversations without it.
        [Service("dialer", "", [py, "-m", "campaigns.dialer", "--driver", "gateway" if settings.voice.enabled else "text"],
                 "", 30.0, probe=lambda: True)] if settings.campaigns.dialer else [])  # ready once it runs


def gateway_specs(settings: Settings) -> list[Service]:
    """One SIP gateway on voice.sip_port; with voice.workers > 1, that many gateway workers on the SIP ports after
    voice.worker_sip_base, behind Kamailio's dispatcher listening on voice.sip_port (deploy/kamailio.cfg)."""
    py, workers = sys.executable, settings.voice.workers
    if workers <= 1:
        return [Service("gateway", "gateway", [py, "-m", "voice.gateway.service"], "/health", settings.service_start_timeout_s)]
    from voice.gateway.dispatcher import dispatcher_command, sip_options_ok, worker_sip_ports

    specs = [Service(f"gateway-{n + 1}", "gateway", [py, "-m", "voice.gateway.service"], "/health",
                     settings.service_start_timeout_s, offset=n,
                     env={"CALLBOT_VOICE__SIP_PORT": str(port), "CALLBOT_PORTS__GATEWAY": str(settings.ports.gateway + n)})
             for n, port in enumerate(worker_sip_ports(settings))]
    specs.append(Service("dispatcher", "", dispatcher_command(settings), "", 30.0, udp=True,
                         probe=lambda: sip_options_ok(settings.voice.sip_host, settings.voice.sip_port)))
    return specs


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def udp_port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False


def check_ports(settings: Settings, services: list[Service]) -> None:
    busy = [(s, s.port(settings)) for s in services if s.port(settings)
            and not (udp_port_is_free(settings.voice.sip_host, s.port(settings)) if s.udp else port_is_free(settings.host, s.port(settings)))]
    if busy:
        lines = [
            f"port {port} ({s.name}) is already in use by another process; stop it (`callbot down` if it is ours, "
            f"or `ss -lnp 'sport = :{port}'` to find it) or choose another port with "
            f"{'CALLBOT_PORTS__' + s.port_key.upper() if s.port_key else 'CALLBOT_VOICE__SIP_PORT'}=…"
            for s, port in busy
        ]
        raise PortInUse("Cannot start: " + "; ".join(lines) + ". Nothing was started.")


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Supervisor:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.run_dir = settings.home / "run"
        self.log_dir = settings.home / "log"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def start(self, services: list[Service], on_ready: Callable[[Service], None] | None = None) -> None:
        check_ports(self.settings, services)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Rasa's endpoints come from the settings, so a changed action-server port needs no file edits.
        # Conversations are kept in an SQL tracker store: a restart or a dead action server loses no turn.
        (self.run_dir / "endpoints.yml").write_text(
            f'action_endpoint:\n  url: "{self.settings.url("actions")}/webhook"\n'
            f'tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: "{self.settings.home / "rasa-tracker.db"}"\n')
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env_base = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            for svc in services:
                log = open(self.log_dir / f"{svc.name}.log", "ab")  # noqa: SIM115 (owned by the child)
                proc = subprocess.Popen(svc.command, cwd=svc.cwd, stdout=log, stderr=subprocess.STDOUT,
                                        env={**env_base, **(svc.env or {})}, start_new_session=True)
                self.procs[svc.name] = proc
                self.pidfile(svc.name).write_text(str(proc.pid))
            for svc in services:
                self._wait_healthy(svc)
                if on_ready:
                    on_ready(svc)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, svc: Service) -> None:
        url = f"http://{self.settings.host}:{svc.port(self.settings)}{svc.health_path}" if svc.probe is None else f"udp:{svc.port(self.settings)}"
        deadline = time.monotonic() + svc.startup_timeout_s
        proc = self.procs[svc.name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = _tail(self.log_dir / f"{svc.name}.log")
                raise ServiceFailed(f"{svc.name} exited with code {proc.returncode} while starting. Last log lines "
                                    f"({self.log_dir / (svc.name + '.log')}):\n{tail}")
            if svc.healthy(self.settings):
                return
            time.sleep(0.5)
        raise ServiceFailed(f"{svc.name} did not answer {url} within {svc.startup_timeout_s:.0f} s; "
                            f"see {self.log_dir / (svc.name + '.log')}.")

    def stop(self) -> list[str]:
        """Stop our processes (this run's, or those recorded in pid files)."""
        stopped = []
        pids: dict[str, int] = {name: p.pid for name, p in self.procs.items()}
        if self.run_dir.is_dir():
            for pf in self.run_dir.glob("*.pid"):
                with contextlib.suppress(ValueError):
                    pids.setdefault(pf.stem, int(pf.read_text().strip()))
        for name, pid in pids.items():
            try:
                os.killpg(pid, signal.SIGTERM)
                stopped.append(name)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 15
        for name, pid in pids.items():
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            self.pidfile(name).unlink(missing_ok=True)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()
        return stopped

    def status(self, services: list[Service]) -> list[tuple[str, int, bool, bool]]:
        rows = []
        for svc in services:
            pid_alive = False
            pf = self.pidfile(svc.name)
            if pf.is_file():
                try:
                    pid_alive = _alive(int(pf.read_text().strip()))
                except ValueError:
                    pid_alive = False
            rows.append((svc.name, svc.port(self.settings), pid_alive,
                         svc.healthy(self.settings) if svc.port(self.settings) else pid_alive))
        return rows


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
