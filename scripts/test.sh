#!/usr/bin/env bash
# Run the test suite: unit tests and one end-to-end run of config/smoke.yaml, on every core (at most 4
# pytest-xdist workers), without the `very_slow` tests (a full `dvc repro`, `dvc exp run`).
#   bash scripts/test.sh                  the fast set (the README's test command)
#   bash scripts/test.sh -m very_slow     only the very slow tests (.ci/run runs them after the fast set)
#   bash scripts/test.sh -m ''            everything
#   bash scripts/test.sh -n 0 tests/test_loop.py   one process, one file
# Extra args go to pytest and win over the defaults here (e.g. a later -m or -n).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
# loadgroup: tests marked xdist_group(name) share a worker (and its module fixtures)
exec .venv/bin/python -m pytest -q -n auto --maxprocesses 4 --dist loadgroup -m "not very_slow" "$@"
