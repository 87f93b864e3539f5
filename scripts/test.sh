#!/usr/bin/env bash
# Runs the linters and the test suite; "no tests collected" is a failure, not a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check . || exit 1
.venv/bin/python -m pytest -q -ra --durations=25 "$@"
rc=$?
if [[ $rc -eq 5 ]]; then echo "pytest collected no tests: failing on purpose" >&2; exit 1; fi
exit $rc
