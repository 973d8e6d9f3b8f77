#!/usr/bin/env bash
# The README's test command with the SLURM scale-out check alongside it (called by .ci/run after
# the install and the model preparation; benchmarks/bench_ci.py times it). Exit 0 when both pass.
# Run from anywhere, as root, with the venv built and the default model prepared.
set -euo pipefail
cd "$(dirname "$0")/.."

# Scale-out, in the background while the tests run (it mostly waits on SLURM status polls):
# the smoke config through the SLURM profile on a real one-node cluster; every non-local rule
# job must be its own SLURM job, results byte-identical to a local run of the smoke config, and
# a failing job must fail the run naming its log. Always under timeout, always torn down.
# The local run compared against is the test suite's own smoke reproduction (the smoke_run
# fixture copies its results to SEMMECH_SMOKE_REFERENCE), so it is not computed twice.
# The rules allowed to run on the submitting host are read from common.smk's `localrules:`
# block (one list, kept where the workflow declares it).
LOCAL=$(sed -n '/^localrules:/,/^$/{s/^ *\([a-z_]*\),$/\1/p}' workflow/rules/common.smk | tr '\n' ' ')
[[ -n $LOCAL ]] || { echo "ci: no localrules block found in workflow/rules/common.smk" >&2; exit 1; }
CI_TMP=$(mktemp -d /tmp/semmech-ci.XXXXXX)
export SEMMECH_SMOKE_REFERENCE=$CI_TMP/smoke-results
(
  rc=0
  timeout -k 20 1500 bash .ci/slurm_check.sh --configfile .test/config/config.yaml --gpu-rules none \
    --allow-local "$LOCAL" --fail-configfile tests/data/slurm_fail.yaml --fail-rule sample \
    --reference "$SEMMECH_SMOKE_REFERENCE" --reference-wait 1200 \
    --compare-exclude 'logs/**' --compare-exclude 'benchmarks/**' --timeout 1200 || rc=$?
  echo "$rc" >"$CI_TMP/slurm.rc"
) >"$CI_TMP/slurm.out" 2>&1 </dev/null &
SLURM_PID=$!
SECONDS=0

# The README's test command:
tests=0
.venv/bin/python -m pytest -q -p no:cacheprovider || tests=$?
echo "ci: tests finished after $SECONDS s (exit $tests); waiting for the SLURM check"
# A suite that never reached its smoke run must not leave the check waiting for it.
[[ -d $SEMMECH_SMOKE_REFERENCE ]] || touch "$SEMMECH_SMOKE_REFERENCE.failed"

wait "$SLURM_PID" || true
echo "ci: SLURM check finished after $SECONDS s"
cat "$CI_TMP/slurm.out"
slurm=$(cat "$CI_TMP/slurm.rc" 2>/dev/null || echo 1)
rm -rf "$CI_TMP"
echo "ci: tests exit $tests, SLURM check exit $slurm"
[[ $tests -eq 0 && $slurm -eq 0 ]]
