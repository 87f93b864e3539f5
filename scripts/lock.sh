#!/usr/bin/env bash
# Regenerate the lock files from the working environments (run after changing dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pip freeze --exclude-editable | grep -v '^#' | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/' > requirements/app.lock
.venv-rasa/bin/pip freeze --exclude-editable | grep -v '^#' > requirements/rasa.lock
wc -l requirements/*.lock
