"""The scale profile (`callbot up --profile scale`): one machine running the topology a firm runs on several.

- **PostgreSQL** (Debian `postgresql`): the product's database and Rasa's SQL tracker store (database
  ``rasa_tracker``), so every Rasa instance sees every conversation. A cluster of our own under
  ``scale.postgres_dir`` unless ``database_url`` names one.
- **Redis** (Debian `redis-server`): Rasa's lock store, so two instances never handle one conversation's messages
  at once (a message waits for the lock instead).
- N **Rasa** instances, N **action servers** and N **web apps** on worker ports, behind **nginx** (Debian `nginx`)
  listening on the usual ports (``ports.rasa``, ``ports.actions``, ``ports.web``): clients and Rasa's action
  endpoint see one address, a dead worker's requests go to the others.
- SIP gateway workers behind Kamailio as ``voice.workers`` says (voice/gateway/dispatcher.py), and
  ``scale.dialers`` dialer workers sharing the campaigns through PostgreSQL's ``SKIP LOCKED`` claims.

Configuration files are rendered into ``home/run``; nothing is written outside ``home`` and ``scale.postgres_dir``.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from callbot.auth.service_token import service_token
from callbot.services import Service
from callbot.settings import PROJECT_ROOT, Settings
from knowledge_base.errors import CallbotError

NGINX_TEMPLATE = PROJECT_ROOT / "deploy" / "nginx.conf.tmpl"
TRACKER_DB = "rasa_tracker"
LOCK_DB = 1  # the Redis database of Rasa's locks
LEDGER_DB = 2  # the Redis database of processed turns (bot/channels/turn_ledger.py)


def pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        raise CallbotError("The scale profile needs PostgreSQL's server (Debian package `postgresql`, installed by "
                           "scripts/install.sh), or CALLBOT_DATABASE_URL naming a server you run.")
    return found[-1].parent


def _need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise CallbotError(f"The scale profile needs `{binary}` (Debian package `{package}`, installed by scripts/install.sh).")
    return path


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def own_postgres(settings: Settings) -> bool:
    """Whether the profile runs its own PostgreSQL (no database_url given)."""
    return not settings.database_url


def init_postgres(settings: Settings) -> Path:
    """The cluster's data directory, created with initdb on first use (owned by the postgres user when we are root)."""
    base = settings.scale.postgres_dir or settings.home / "pg"
    data = base / "data"
    if (data / "PG_VERSION").is_file():
        return data
    base.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(base)], capture_output=True)
        if probe.returncode != 0:
            raise CallbotError(f"The postgres user cannot write {base} (a parent directory is closed to it); set "
                               "CALLBOT_SCALE__POSTGRES_DIR to a directory it can reach, e.g. /var/lib/callbot-pg.")
    done = subprocess.run([*_as_postgres(), str(pg_bin() / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                           "-E", "UTF8", "--locale=C.UTF-8"], capture_output=True, text=True)
    if done.returncode != 0:
        raise CallbotError(f"initdb failed for {data}: {done.stderr.strip()[-400:]}")
    return data


def postgres_command(settings: Settings) -> list[str]:
    data = init_postgres(settings)
    return [*_as_postgres(), str(pg_bin() / "postgres"), "-D", str(data), "-p", str(settings.ports.postgres),
            "-k", str(data.parent), "-c", f"listen_addresses={settings.host}", "-c", "max_connections=300"]


def postgres_ready(settings: Settings) -> bool:
    import psycopg

    try:
        with psycopg.connect(host=settings.host, port=settings.ports.postgres, user="postgres", dbname="postgres",
                             connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def ensure_databases(settings: Settings) -> None:
    """The product's database and Rasa's tracker database exist on the profile's server (Rasa does not create its
    own: without it every instance falls back to an in-memory tracker store and conversations split between them)."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(settings.db_url)
    try:
        with psycopg.connect(host=url.host, port=url.port or 5432, user=url.username or "postgres", password=url.password or "",
                             dbname="postgres", autocommit=True, connect_timeout=5) as conn:
            for name in dict.fromkeys((url.database or "callbot", TRACKER_DB)):
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                    conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise CallbotError(f"Cannot prepare the databases on {url.host}:{url.port}: {str(exc).strip()[:300]}. The scale profile "
                           f"needs a user that may create databases ({url.database}, {TRACKER_DB}).") from None


def redis_ready(settings: Settings) -> bool:
    try:
        with socket.create_connection((settings.host, settings.ports.redis), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def render_endpoints(settings: Settings) -> Path:
    """Rasa's endpoints for every instance: actions through nginx, trackers in PostgreSQL, locks in Redis."""
    from sqlalchemy.engine import make_url

    run = settings.home / "run"
    run.mkdir(parents=True, exist_ok=True)
    url = make_url(settings.db_url)
    path = run / "endpoints-scale.yml"
    path.write_text(
        f'action_endpoint:\n  url: "{settings.url("actions")}/webhook"\n'
        f'tracker_store:\n  type: SQL\n  dialect: postgresql\n  url: "{url.host}"\n  port: {url.port or 5432}\n'
        f'  db: "{TRACKER_DB}"\n  username: "{url.username or "postgres"}"\n  password: "{url.password or ""}"\n'
        f'lock_store:\n  type: redis\n  url: "{settings.host}"\n  port: {settings.ports.redis}\n  db: {LOCK_DB}\n')
    return path


def render_nginx(settings: Settings) -> Path:
    run = settings.home / "run"
    (run / "nginx-tmp").mkdir(parents=True, exist_ok=True)
    (settings.home / "log").mkdir(parents=True, exist_ok=True)
    n = settings.scale

    def upstream(name: str, base: int, count: int) -> str:
        servers = "".join(f"    server {settings.host}:{base + i} max_fails=1 fail_timeout=5s;\n" for i in range(count))
        return f"  upstream {name} {{\n    least_conn;\n{servers}  }}\n"

    def server(name: str, port: int) -> str:
        return (f"  server {{\n    listen {settings.host}:{port};\n    location / {{\n      proxy_pass http://{name};\n"
                "      proxy_http_version 1.1;\n      proxy_set_header Upgrade $http_upgrade;\n"
                "      proxy_set_header Connection $connection_upgrade;\n      proxy_set_header Host $host;\n"
                "      proxy_next_upstream error timeout http_502 http_503;\n    }\n  }\n")

    blocks = (upstream("rasa", settings.ports.rasa_workers, n.rasa_workers) + server("rasa", settings.ports.rasa)
              + upstream("actions", settings.ports.actions_workers, n.action_workers) + server("actions", settings.ports.actions)
              + upstream("web", settings.ports.web_workers, n.web_workers) + server("web", settings.ports.web))
    text = NGINX_TEMPLATE.read_text()
    for key, value in {"user": getpass.getuser(), "run": run, "log": settings.home / "log", "servers": blocks}.items():
        text = text.replace(f"@@{key}@@", str(value))
    path = run / "nginx.conf"
    path.write_text(text)
    return path


def infrastructure_specs(settings: Settings) -> list[Service]:
    """Started and waited for first: the database and the lock store."""
    redis = _need("redis-server", "redis-server")
    specs = [Service("redis", "redis", [redis, "--port", str(settings.ports.redis), "--bind", settings.host, "--save", "",
                                        "--appendonly", "no", "--dir", str(settings.home / "run")],
                     "", 30.0, probe=lambda: redis_ready(settings))]
    if own_postgres(settings):
        specs.insert(0, Service("postgres", "postgres", postgres_command(settings), "", 60.0, probe=lambda: postgres_ready(settings)))
    return specs


def worker_specs(settings: Settings) -> list[Service]:
    """Rasa, action servers and web apps on their worker ports, nginx in front, then gateways and dialers."""
    from callbot.services import gateway_specs

    py, rasa = sys.executable, settings.rasa_venv / "bin" / "rasa"
    nginx = _need("nginx", "nginx")
    endpoints = render_endpoints(settings)
    n = settings.scale
    rasa_env = {"RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "3", "CALLBOT_NLU_URL": settings.url("web"),
                "CALLBOT_SERVICE_TOKEN": service_token(settings),
                "CALLBOT_NLU_TIMEOUT": str(settings.nlu.timeout_s),
                "CALLBOT_TURN_LEDGER_URL": f"redis://{settings.host}:{settings.ports.redis}/{LEDGER_DB}"}
    specs = [Service(f"web-{i + 1}", "web_workers", [py, "-m", "callbot.webapp"], "/health", settings.service_start_timeout_s,
                     offset=i, env={"CALLBOT_PORTS__WEB": str(settings.ports.web_workers + i)}) for i in range(n.web_workers)]
    specs += [Service(f"actions-{i + 1}", "actions_workers",
                      [py, "-m", "rasa_sdk", "--actions", "actions", "--port", str(settings.ports.actions_workers + i)],
                      "/health", settings.service_start_timeout_s, offset=i) for i in range(n.action_workers)]
    specs += [Service(f"rasa-{i + 1}", "rasa_workers",
                      [str(rasa), "run", "--enable-api", "--cors", "*", "--port", str(settings.ports.rasa_workers + i),
                       "--model", str(settings.bot_dir / "models"), "--endpoints", str(endpoints),
                       "--credentials", str(settings.bot_dir / "credentials.yml")],
                      "/", max(300.0, settings.service_start_timeout_s), offset=i, env=rasa_env) for i in range(n.rasa_workers)]
    specs.append(Service("nginx", "web", [nginx, "-c", str(render_nginx(settings))], "/health", 30.0))
    if settings.voice.enabled:
        specs += gateway_specs(settings)
    if settings.campaigns.dialer:
        driver = "gateway" if settings.voice.enabled else "text"
        specs += [Service(f"dialer-{i + 1}", "", [py, "-m", "campaigns.dialer", "--driver", driver, "--worker",
                                                  f"{socket.gethostname()}-dialer-{i + 1}"], "", 30.0, probe=lambda: True)
                  for i in range(n.dialers)]
    return specs
