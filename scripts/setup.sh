#!/usr/bin/env bash
# Create .venv (if missing) and install the optima package with its test extra.
# Needs Python >= 3.10 (tested: 3.11) and Java (pycocoevalcap's tokenizer and METEOR).
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 installs the pinned torch/torchvision from that index
# first: the CUDA build an older NVIDIA driver supports (PyPI's is CUDA 13.0: driver R580 or newer).
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
  # torch's CUDA build and its libraries take about 6 GB, plus room to unpack: warn before pip fails with ENOSPC
  free_kb=$(df -Pk .venv | awk 'NR == 2 {print $4}')
  if [[ ${free_kb:-0} -lt 7000000 ]] && ! compgen -G ".venv/lib/python3*/site-packages/torch" >/dev/null; then
    echo "warning: $((free_kb / 1024)) MB free on the disk of .venv; installing torch needs about 7 GB" >&2
  fi
  .venv/bin/python -m pip install --quiet --upgrade pip
  if [[ -n ${TORCH_INDEX_URL:-} ]]; then  # the pins of pyproject.toml, from another CUDA build's index
    mapfile -t pins < <(grep -oE '"torch(vision)?==[^"]+"' pyproject.toml | tr -d '"')
    .venv/bin/python -m pip install --quiet "${pins[@]}" --index-url "$TORCH_INDEX_URL"
  fi
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  cp pyproject.toml "$stamp"
fi
command -v java >/dev/null || echo "warning: java not found: caption metrics (PTB tokenizer, METEOR) need Java 11+" >&2
