#!/usr/bin/env bash
# The Debian packages the test suite drives besides Python: headless Chromium (the report and
# the cluster browser are opened in it), latexmk with a minimal TeX Live (the paper) and
# pdftotext from poppler-utils (the paper's text is checked). `envs/install.sh --tests` runs this,
# so the README's test command and CI (.ci/run) install them the same way.
#
# As root on a Debian/Ubuntu machine it installs whatever is missing (nothing when all are
# present); otherwise it prints the one command that does and exits 0, so that the venv can
# still be built (only the tests that need these programs depend on them).
#   --print   print the package names, one per line, and exit
set -euo pipefail
PACKAGES=(chromium latexmk texlive-latex-base texlive-latex-recommended poppler-utils)

if [[ ${1:-} == --print ]]; then
  printf '%s\n' "${PACKAGES[@]}"
  exit 0
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "system packages for the tests: all present (${PACKAGES[*]})"
  exit 0
fi

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "system packages for the tests: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi

cat >&2 <<EOF
system packages for the tests: missing ${missing[*]}.
Without them the Chromium and paper tests are skipped. Install them as root with:
  apt-get install -y --no-install-recommends ${PACKAGES[*]}
EOF
