#!/usr/bin/env bash
# Run the test suite (unit tests + the end-to-end smoke run). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
