#!/usr/bin/env bash
# Create .venv (if missing) and install the optima package with its test extra.
# Needs Python >= 3.10 (tested: 3.11) and Java (pycocoevalcap's tokenizer and METEOR).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 required"'
  "$PYTHON" -m venv .venv
fi
# Skip the (slow) resolver when this exact pyproject.toml is already installed.
stamp=.venv/.optima-installed
if [[ ! -f $stamp ]] || ! cmp -s pyproject.toml "$stamp"; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  cp pyproject.toml "$stamp"
fi
command -v java >/dev/null || echo "warning: java not found: caption metrics (PTB tokenizer, METEOR) need Java 11+" >&2
