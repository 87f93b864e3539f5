"""Shared fixtures: a migrated SQLite store per test, the demo document, a real PostgreSQL server."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from knowledge_base.db import Store
from knowledge_base.demo import write_demo_file
from knowledge_base.service import KnowledgeBase

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# The REST channel's last-resort line (bot/channels/rest_with_sender.py), sent when no action produced a message:
# it must never pass for "the actions worked".
SAFE_REPLY = "抱歉，系统暂时无法处理您的请求，需要为您转接人工客服吗？"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'kb.db'}", busy_timeout_s=0.5)
    s.migrate()
    yield s
    s.dispose()


@pytest.fixture
def kb(store: Store) -> KnowledgeBase:
    return KnowledgeBase(store)


@pytest.fixture(scope="session")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_file(tmp_path_factory.mktemp("demo") / "demo.yaml")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_HANDED_OUT: set[int] = set()


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port nothing listens on, chosen *below* the kernel's ephemeral range and never handed out twice.

    Why not bind to port 0: the kernel then picks from the ephemeral range, the same pool it draws outgoing
    connections' source ports from; in the minute a service takes to start, a client socket can take the
    port (CI once failed with "Address already in use" on the action server that way)."""
    low, _ = _ephemeral_range()
    top = max(low - 1, 20_001)
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
    for _ in range(1000):
        port = rng.randint(max(1024, top - 12_000), top)
        # free for both protocols: the SIP gateway takes UDP and TCP ports from the same settings
        if port not in _HANDED_OUT and _bindable(port, kind) and _bindable(port, other):
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"no free port below {low}: too many services left running?")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Start a throw-away PostgreSQL 15 server (as the postgres user) and yield its URL."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail("PostgreSQL server binaries are missing: run `make install` (installs the Debian package postgresql).")
    data = Path(tempfile.mkdtemp(prefix="callbot-pg-"))
    port = free_port()
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        shutil.chown(data, "postgres", "postgres")
    pgdata = data / "data"
    subprocess.run([*as_pg, str(PG_BIN / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(pgdata), "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
                    "-l", str(data / "log"), "-w", "start"], check=True, capture_output=True)
    try:
        subprocess.run([*as_pg, str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "callbot"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/callbot"
    finally:
        # -w: pg_ctl returns once the server has stopped, so the directory can go right away.
        subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def store_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Makes further independent SQLite stores within one test."""
    made: list[Store] = []

    def make() -> Store:
        s = Store(f"sqlite:///{tmp_path / f'kb{len(made)}.db'}")
        s.migrate()
        made.append(s)
        return s

    yield make
    for s in made:
        s.dispose()


@pytest.fixture(scope="session")
def e5_model_dir() -> Path:
    """The real e5-small checkpoint, built once into the user's model cache (idempotent, offline), with the
    released ALBERT-sim installed beside it, as `callbot model base` does."""
    from callbot.settings import get_settings
    from nlu.model_cache import ensure_base_model
    from nlu.release import install_release

    path, _built = ensure_base_model(get_settings().models_dir)
    install_release(get_settings().models_dir)
    return path


@pytest.fixture(scope="session")
def complaint_model(e5_model_dir: Path) -> Path:
    """The product's complaint model installed into the user's cache, as `make prepare` does
    (`callbot complaint train`: e5-small token states; skipped when current; a few minutes on a fresh machine)."""
    import sys

    from callbot.settings import get_settings
    from nlu.complaints.service import installed_dir

    result = subprocess.run([str(Path(sys.executable).parent / "callbot"), "complaint", "train"], cwd=ROOT,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return installed_dir(get_settings().cache_dir)


# Every web app a test starts gets an admin account; http() calls it as that admin's API client (Bearer token)
# unless the test passes anonymous=True or its own Authorization header. tests/test_auth.py checks the refusals.
STAFF_USER, STAFF_PASSWORD = "test-admin", "test-admin passphrase"
from tests.registry import STAFF_TOKENS  # noqa: E402  (web app base URL → API token; see tests/registry.py)


def create_staff(env: dict[str, str], username: str = STAFF_USER, role: str = "admin", password: str = STAFF_PASSWORD) -> None:
    """A staff account in the product's database, made the way an operator makes one (`callbot user create`)."""
    import sys

    callbot = str(Path(sys.executable).parent / "callbot")
    result = subprocess.run([callbot, "user", "create", "-u", username, "--role", role, "--password-stdin"], cwd=ROOT, env=env,
                            input=password + "\n", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 or "exists already" in result.stderr, result.stderr


def staff_token(env: dict[str, str], username: str = STAFF_USER, role: str = "admin") -> str:
    """An API token for ``username`` (created with ``role`` if missing), from `callbot user token`."""
    import json
    import sys

    create_staff(env, username, role)
    callbot = str(Path(sys.executable).parent / "callbot")
    result = subprocess.run([callbot, "user", "token", username, "--label", "tests"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["token"]


def as_staff(url: str) -> dict[str, str]:
    """The Authorization header of the admin token registered for the web app serving ``url``."""
    base = next((b for b in STAFF_TOKENS if url.startswith(b)), None)
    return {"Authorization": "Bearer " + STAFF_TOKENS[base]} if base else {}


def http(method: str, url: str, body: Any = None, timeout: float = 30, headers: dict[str, str] | None = None,
         anonymous: bool = False) -> tuple[int, Any]:
    import json
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    auth = {} if anonymous or "Authorization" in (headers or {}) else as_staff(url)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **auth, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@contextlib.contextmanager
def running_webapp(env: dict[str, str]) -> Iterator[str]:
    """The web app alone (`python -m callbot.webapp`) with ``env``, on the port in CALLBOT_PORTS__WEB; its URL.
    Fails the test, with the end of the app's log, if it exits or does not answer /health within 6 minutes (its first
    start encodes the demo KB's ~7,600 distinct questions with e5-small into an empty vector cache: about 1.5 min on
    two quiet cores, more when the machine is busy); stopped afterwards."""
    import signal
    import sys
    import tempfile

    log = tempfile.NamedTemporaryFile(prefix="callbot-webapp-", suffix=".log", delete=False)  # noqa: SIM115
    web = subprocess.Popen([sys.executable, "-m", "callbot.webapp"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    url = f"http://127.0.0.1:{env['CALLBOT_PORTS__WEB']}"

    def log_tail() -> str:
        return Path(log.name).read_text(encoding="utf-8", errors="replace")[-3000:]

    try:
        deadline = time.monotonic() + 360
        while time.monotonic() < deadline and web.poll() is None:
            try:
                if http("GET", url + "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            state = f"exited with {web.returncode}" if web.poll() is not None else "did not answer /health within 6 minutes"
            pytest.fail(f"web app {state}; its log ends:\n{log_tail()}")
        STAFF_TOKENS[url] = staff_token(env)
        yield url
    finally:
        STAFF_TOKENS.pop(url, None)
        if web.poll() is None:
            os.killpg(web.pid, signal.SIGTERM)
            web.wait(timeout=30)
        log.close()
        Path(log.name).unlink(missing_ok=True)


# What `callbot model verify` / `tune-lexical` write beside a model: a fresh clone's e5-small has none of them.
E5_RECORDS = ("thresholds.json", "quality.json")


def link_fresh_e5(models_dir: Path, e5_model_dir: Path) -> Path:
    """e5-small as `callbot model base` builds it on a fresh machine, in ``models_dir``: the cached weights, linked,
    without the calibration records a developer's verify or tune-lexical runs leave in the cache (a tuned lexical
    head weight and its thresholds change what short replies match, and CI shares this machine's cache), and
    nothing a test writes there reaches the user's cache."""
    folder = models_dir / e5_model_dir.name
    folder.mkdir(parents=True)
    for item in e5_model_dir.iterdir():
        if item.name not in E5_RECORDS:
            (folder / item.name).symlink_to(item)
    return folder


def demo_webapp_env(tmp_path_factory: pytest.TempPathFactory, e5_model_dir: Path, name: str) -> dict[str, str]:
    """The environment of a web app alone on the demo knowledge base (SQLite in its own home, e5-small), loaded."""
    import sys

    tmp = tmp_path_factory.mktemp(name)
    link_fresh_e5(tmp / "cache" / "models", e5_model_dir)
    env = {**os.environ, "CALLBOT_CACHE_DIR": str(tmp / "cache"), "CALLBOT_HOME": str(tmp / "home"),
           "CALLBOT_NLU__MODEL": "e5-small", "CALLBOT_NLU__USE_SCENARIO_MODELS": "false", "CALLBOT_PORTS__WEB": str(free_port())}
    done = subprocess.run([str(Path(sys.executable).parent / "callbot"), "kb", "demo"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return env


def running_product(tmp_path_factory: pytest.TempPathFactory, extra_env: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """Load the demo KB, train Rasa if stale, start web + actions + Rasa on free ports; stop them after.
    ``extra_env`` adds settings (CALLBOT_DATABASE_URL for a product on PostgreSQL)."""
    import sys

    from callbot.settings import get_settings
    from nlu.model_cache import e5_dir

    callbot = str(Path(sys.executable).parent / "callbot")
    home = tmp_path_factory.mktemp("home")
    ports = {"web": free_port(), "rasa": free_port(), "actions": free_port()}
    env = {**os.environ, "CALLBOT_HOME": str(home), **{f"CALLBOT_PORTS__{k.upper()}": str(v) for k, v in ports.items()},
           # Pin the encoder: what a developer has trained into the cache must not change test outcomes. A fresh clone
           # serves the released ALBERT-sim (`auto`, models/albert-sim-release); CALLBOT_TEST_NLU_MODEL=albert-sim-release
           # (or auto, or another model name) runs the same tests against it once `callbot model base` has installed it.
           "CALLBOT_NLU__MODEL": os.environ.get("CALLBOT_TEST_NLU_MODEL")
           or str(link_fresh_e5(tmp_path_factory.mktemp("models"), e5_dir(get_settings().models_dir))),
           "CALLBOT_NLU__USE_SCENARIO_MODELS": "false",
           # The SIP gateway (Whisper + a TTS worker) only where a test calls it: tests/test_gateway.py.
           "CALLBOT_VOICE__ENABLED": "false",
           # Campaign tests run their own dialers (tests/test_campaign_dialing.py, test_gateway.py).
           "CALLBOT_CAMPAIGNS__DIALER": "false", **(extra_env or {})}
    for step in (["kb", "demo"], ["bot", "train"]):
        result = subprocess.run([callbot, *step], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
    up = subprocess.run([callbot, "up", "--detach"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stderr + up.stdout
    assert f"http://127.0.0.1:{ports['web']}/chat" in up.stdout
    web = f"http://127.0.0.1:{ports['web']}"
    STAFF_TOKENS[web] = staff_token(env)
    try:
        yield {"env": env, "home": home, "web": web, "rasa": f"http://127.0.0.1:{ports['rasa']}", "db": home / "callbot.db"}
    finally:
        STAFF_TOKENS.pop(web, None)
        down = subprocess.run([callbot, "down"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0


@pytest.fixture(scope="session")
def dialogue_product(tmp_path_factory: pytest.TempPathFactory, e5_model_dir: Path) -> Iterator[dict[str, Any]]:
    """One running product (web + NLU, actions, Rasa) shared by the conversation tests that do not stop services."""
    yield from running_product(tmp_path_factory)
