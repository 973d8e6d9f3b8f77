#!/usr/bin/env bash
# End-to-end check that a Snakemake workflow runs on a real SLURM cluster, one SLURM job per rule
# job, with results byte-identical to a local run; and that a failing rule makes the SLURM run
# exit non-zero (no hang) naming the failing job's log.
#
# Usage (from the workflow's root, e.g. the repo root, as root; snakemake on PATH or in ./.venv):
#   bash .ci/slurm_check.sh --configfile .test/config/config.yaml \
#        [--fail-configfile tests/data/slurm_fail.yaml [--fail-rule sample]] [--allow-local 'all'] \
#        [--gpu-rules 'sample attribute steer steer_generate' | --gpu-rules none] \
#        [--compare-exclude 'logs/**' ...] [--results-dir results] [--reference DIR [--reference-wait S]] \
#        [--fresh resources ...] [--profile profiles/slurm-ci] [--timeout 240] [--fail-timeout 180] \
#        [--poll SECONDS] [--serial] [--keep] \
#        [-- extra snakemake args, passed to every run]
#
# Steps:
#   1. bring a one-node cluster up (.ci/slurm_up.sh, under timeout -k); torn down by an EXIT trap.
#   2. run `snakemake --profile <profile> --configfile X` under `timeout -k 10 <timeout>` in a fresh
#      scratch copy of the workflow dir (top-level entries symlinked, except .git/.snakemake/the
#      results dir), so the caller's results/ is never touched. Give --fresh NAME for every other
#      top-level dir the workflow WRITES to (e.g. --fresh resources if a rule builds
#      resources/models/...): it starts empty in each scratch copy instead of being shared, else
#      the parallel runs would race on it and write into the caller's tree.
#   3. verify every non-local job of the DAG (count from a dry run) was submitted as its own SLURM
#      job: a distinct job id, a plugin log .snakemake/slurm_logs/rule_<rule>/[<wildcards>/]<id>.log
#      that shows the inner snakemake running that rule, and `scontrol show job` reporting that
#      id COMPLETED with the plugin's comment rule_<rule>[_wildcards_...]. Only the rules named in
#      --allow-local (space/comma list, default 'all') may run on the submitting host (localrules).
#      With --gpu-rules LIST, also check from `scontrol show job` that exactly the jobs of the
#      listed rules asked SLURM for a GPU (--gpus or --gres gpu), and no other job did ('none':
#      no job may). A non-empty LIST gives the test node fake GPUs (SEMMECH_SLURM_FAKE_GPUS,
#      default 2) so such jobs schedule; the config must then request GPUs while computing on CPU.
#   4. compare <results-dir> byte for byte with a local `snakemake --cores all` run of the same
#      config (or with --reference DIR, the results dir of such a run), ignoring --compare-exclude
#      globs. With --reference-wait S, DIR may still be in the making (e.g. by a test suite running
#      alongside): the comparison waits up to S s for DIR to appear, and gives up at once if
#      DIR.failed appears instead. DIR must appear complete (written elsewhere, then renamed).
#      Globs are fnmatch patterns on the path relative to <results-dir>, where `*` also matches
#      `/`; a pattern also matches below any directory level, so 'logs/**' ignores
#      results/smoke/logs/... too. Default when none is given: 'logs/**' 'benchmarks/**'.
#      Giving any --compare-exclude replaces the default.
#   5. (--fail-configfile) run the failing config through SLURM under `timeout -k 10 <fail-timeout>`;
#      assert it exits non-zero but not by the timeout, prints "Error in rule <fail-rule>" and names
#      a plugin log rule_<fail-rule>/.../<id>.log that exists.
#   --poll N overrides the profile's slurm-init-seconds-before-status-checks for the SLURM runs (the
#   plugin polls after N s, then N+10, N+20, ... until a job finishes; tune to the jobs' length).
#   The three snakemake runs go in parallel (they mostly wait on status polling); --serial runs
#   them one after another. --keep keeps the scratch dir (printed) for debugging.
#
# Exit status: 0 when every check passed, 1 when a check failed, 2 on bad usage.
# Environment: SEMMECH_SLURM_UP_TIMEOUT (default 180 s: includes an apt install if needed).
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit "${1:-2}"; }
die() { echo "slurm_check: error: $*" >&2; exit 2; }
log() { echo "slurm_check: $*" >&2; }

CONFIGFILE="" FAIL_CONFIGFILE="" FAIL_RULE="" RESULTS_DIR=results REFERENCE="" REFERENCE_WAIT=0 ALLOW_LOCAL=all
PROFILE="$REPO_DIR/profiles/slurm-ci" TIMEOUT=240 FAIL_TIMEOUT=180 SERIAL=0 KEEP=0
EXCLUDES=() EXTRA=() FRESH=() GPU_RULES="" CHECK_GPU=0 POLL=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --configfile) CONFIGFILE=$2; shift 2 ;;
    --fail-configfile) FAIL_CONFIGFILE=$2; shift 2 ;;
    --fail-rule) FAIL_RULE=$2; shift 2 ;;
    --allow-local) ALLOW_LOCAL=$2; shift 2 ;;
    --gpu-rules) GPU_RULES=$2; CHECK_GPU=1; shift 2 ;;
    --compare-exclude) EXCLUDES+=("$2"); shift 2 ;;
    --results-dir) RESULTS_DIR=$2; shift 2 ;;
    --fresh) FRESH+=("${2%%/*}"); shift 2 ;;
    --reference) REFERENCE=$2; shift 2 ;;
    --reference-wait) REFERENCE_WAIT=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --fail-timeout) FAIL_TIMEOUT=$2; shift 2 ;;
    --poll) POLL=("--slurm-init-seconds-before-status-checks" "$2"); shift 2 ;;
    --serial) SERIAL=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ -n $CONFIGFILE ]] || die "--configfile is required"
[[ -f $CONFIGFILE ]] || die "configfile '$CONFIGFILE' not found (relative to $(pwd))"
[[ -z $FAIL_CONFIGFILE || -f $FAIL_CONFIGFILE ]] || die "fail configfile '$FAIL_CONFIGFILE' not found"
[[ $REFERENCE_WAIT =~ ^[0-9]+$ ]] || die "--reference-wait takes whole seconds"
[[ $REFERENCE_WAIT -eq 0 || -n $REFERENCE ]] || die "--reference-wait needs --reference"
[[ -z $REFERENCE || $REFERENCE_WAIT -gt 0 || -d $REFERENCE ]] || die "reference dir '$REFERENCE' not found"
[[ -d $PROFILE ]] || die "profile dir '$PROFILE' not found"
[[ $RESULTS_DIR != /* && $RESULTS_DIR != *..* ]] || die "--results-dir must be relative to the workflow dir"
[[ ${#EXCLUDES[@]} -gt 0 ]] || EXCLUDES=('logs/**' 'benchmarks/**')
[[ $(id -u) -eq 0 ]] || die "must run as root (the test cluster's daemons run as root)"

WORKDIR=$(pwd)
PROFILE=$(cd "$PROFILE" && pwd)
[[ -n $REFERENCE && $REFERENCE != /* ]] && REFERENCE=$(pwd)/$REFERENCE
# Jobs inherit this environment (sbatch --export=ALL), so put the workflow's venv first on PATH.
if [[ -x $WORKDIR/.venv/bin/snakemake && ${VIRTUAL_ENV:-} != "$WORKDIR/.venv" ]]; then
  export VIRTUAL_ENV=$WORKDIR/.venv PATH=$WORKDIR/.venv/bin:$PATH
fi
command -v snakemake >/dev/null || die "snakemake not on PATH (activate the venv)"
PY=$(dirname "$(command -v snakemake)")/python
[[ -x $PY ]] || PY=python3

SCRATCH=$(mktemp -d /tmp/semmech-slurmcheck.XXXXXX)
CLUSTER=$SCRATCH/cluster
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
  rc=$?
  set +e
  if [[ $rc -ne 0 && -d $CLUSTER/log ]]; then
    for f in "$CLUSTER"/log/slurmctld.log "$CLUSTER"/log/slurmd.log; do
      [[ -f $f ]] && { echo "== tail $f" >&2; tail -n 20 "$f" >&2; }
    done
  fi
  bash "$SCRIPT_DIR/slurm_down.sh" "$CLUSTER" || rc=1
  if [[ $KEEP -eq 1 ]]; then log "scratch kept: $SCRATCH"; else rm -rf "$SCRATCH"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$SECONDS
# --- 1. cluster ----------------------------------------------------------------------------------
[[ $GPU_RULES == none ]] && GPU_RULES=""
if [[ -n ${GPU_RULES// /} ]]; then export SEMMECH_SLURM_FAKE_GPUS=${SEMMECH_SLURM_FAKE_GPUS:-2}; fi
timeout -k 10 "${SEMMECH_SLURM_UP_TIMEOUT:-180}" bash "$SCRIPT_DIR/slurm_up.sh" "$CLUSTER" >/dev/null \
  || { log "FAIL: could not bring the SLURM test cluster up"; exit 1; }
log "cluster up after $((SECONDS - t0)) s"

# Scratch copy of the workflow dir: symlink every top-level entry except VCS/snakemake state and
# the results dir, so relative paths in configs resolve and outputs land in the scratch dir.
FRESH+=("${RESULTS_DIR%%/*}")
make_farm() {
  local dest=$1 entry name f skip
  mkdir -p "$dest"
  shopt -s dotglob nullglob
  for entry in "$WORKDIR"/*; do
    name=$(basename "$entry")
    skip=0
    for f in .git .snakemake "${FRESH[@]}"; do [[ $name == "$f" ]] && skip=1; done
    [[ $skip -eq 1 ]] || ln -s "$entry" "$dest/$name"
  done
  shopt -u dotglob nullglob
}

# run_sm NAME LIMIT ARGS...: snakemake in its farm under timeout; output to $SCRATCH/NAME.out,
# exit status to $SCRATCH/NAME.rc.
# shellcheck disable=SC2317  # called through launch
run_sm() {
  local name=$1 limit=$2; shift 2
  local start=$SECONDS rc=0
  (cd "$SCRATCH/$name" && CI=${CI:-true} timeout -k 10 "$limit" snakemake "$@" "${EXTRA[@]}" \
     </dev/null >"$SCRATCH/$name.out" 2>&1) || rc=$?
  echo "$rc" >"$SCRATCH/$name.rc"
  log "$name: exit $rc after $((SECONDS - start)) s"
}

make_farm "$SCRATCH/slurm"
# Dry run first: the DAG's job count, to hold the SLURM run against.
(cd "$SCRATCH/slurm" && snakemake -n --quiet rules --configfile "$CONFIGFILE" "${EXTRA[@]}" \
   </dev/null >"$SCRATCH/dryrun.out" 2>&1) || { cat "$SCRATCH/dryrun.out" >&2; log "FAIL: dry run failed"; exit 1; }
rm -rf "$SCRATCH/slurm/.snakemake"

pids=()
launch() { if [[ $SERIAL -eq 1 ]]; then "$@"; else "$@" & pids+=($!); fi; }
launch run_sm slurm "$TIMEOUT" --profile "$PROFILE" "${POLL[@]}" --configfile "$CONFIGFILE"
if [[ -z $REFERENCE ]]; then
  make_farm "$SCRATCH/local"
  launch run_sm local "$TIMEOUT" --cores all --configfile "$CONFIGFILE"
fi
if [[ -n $FAIL_CONFIGFILE ]]; then
  make_farm "$SCRATCH/fail"
  launch run_sm fail "$FAIL_TIMEOUT" --profile "$PROFILE" "${POLL[@]}" --configfile "$FAIL_CONFIGFILE"
fi
for p in "${pids[@]}"; do wait "$p" || true; done
# Finished jobs stay in slurmctld for MinJobAge (slurm_up.sh), with their state, comment and GPU request.
scontrol -o show job >"$SCRATCH/jobs.out" 2>&1 || true
if [[ -n $REFERENCE && ! -d $REFERENCE ]]; then
  log "waiting up to $REFERENCE_WAIT s for the reference results $REFERENCE"
  waited=0
  while [[ ! -d $REFERENCE && ! -e $REFERENCE.failed && $waited -lt $REFERENCE_WAIT ]]; do
    sleep 2; waited=$((waited + 2))
  done
  [[ -d $REFERENCE ]] || { log "FAIL: reference results $REFERENCE never appeared"; exit 1; }
fi

# --- 3.-5. checks ----------------------------------------------------------------------------------
status=0
"$PY" - "$SCRATCH" "$RESULTS_DIR" "${REFERENCE:-$SCRATCH/local/$RESULTS_DIR}" "$FAIL_CONFIGFILE" \
  "$FAIL_RULE" "$ALLOW_LOCAL" "$CHECK_GPU" "$GPU_RULES" "${EXCLUDES[@]}" <<'PYEOF' || status=$?
"""Checks on the outputs of the three snakemake runs; prints one line per failed check."""
import fnmatch
import os
import re
import sys
from pathlib import Path

(scratch, results_dir, reference, fail_cfg, fail_rule, allow_local, check_gpu, gpu_rules,
 *excludes) = sys.argv[1:]
allow_local = set(allow_local.replace(",", " ").split())
check_gpu = check_gpu == "1"
gpu_rules = set(gpu_rules.replace(",", " ").split())
scratch = Path(scratch)
errors: list[str] = []


def read(name: str) -> str:
    p = scratch / name
    return p.read_text(errors="replace") if p.exists() else ""


def tail(text: str, n: int = 40) -> str:
    return "\n".join(text.splitlines()[-n:])


# ---- the SLURM run ---------------------------------------------------------------------------
slurm_out = read("slurm.out")
slurm_rc = int(read("slurm.rc") or 1)
if slurm_rc != 0:
    errors.append(f"SLURM run exited {slurm_rc}" + (" (timeout)" if slurm_rc in (124, 137) else ""))
    print(f"--- tail of the SLURM run's output:\n{tail(slurm_out)}", file=sys.stderr)

expected = None
m = re.search(r"^total\s+(\d+)\s*$", read("dryrun.out"), re.M)
if m:
    expected = int(m.group(1))
else:
    errors.append("could not read the job count from the dry run")

header = re.compile(r"^(local)?(rule|checkpoint) (\S+):$")
jobs = {}  # snakemake jobid -> (rule, wildcards, local)
cur = None
for line in slurm_out.splitlines():
    h = header.match(line)
    if h:
        cur = {"rule": h.group(3), "local": bool(h.group(1)), "wildcards": "", "kind": h.group(2)}
        continue
    if cur is not None:
        if not line.startswith("    "):
            cur = None
            continue
        s = line.strip()
        if s.startswith("wildcards: "):
            cur["wildcards"] = s[len("wildcards: "):]
        elif s.startswith("jobid: "):
            jobs[int(s[len("jobid: "):])] = cur
submitted = {}
for m in re.finditer(r"^Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.$",
                     slurm_out, re.M):
    submitted[int(m.group(1))] = (m.group(2), Path(m.group(3)))
slurm_jobs = {}  # SLURM job id -> fields of `scontrol -o show job`
for line in read("jobs.out").splitlines():
    fields = dict(re.findall(r"(?:^|\s)(JobId|JobState|Comment|TresPerJob|TresPerNode)=(\S*)", line))
    if "JobId" in fields:
        slurm_jobs[fields["JobId"]] = fields

has_checkpoints = any(v["rule"] and "checkpoint" in v.get("kind", "") for v in jobs.values())
if expected is not None and slurm_rc == 0 and (
    len(jobs) < expected if has_checkpoints else len(jobs) != expected
):
    errors.append(f"SLURM run executed {len(jobs)} jobs, the dry run planned {expected}")
remote = {j: v for j, v in jobs.items() if not v["local"]}
if slurm_rc == 0 and not remote:
    errors.append("no job was submitted to SLURM (all local?)")
ids_seen = set()
for jid, info in sorted(remote.items()):
    what = f"job {jid} (rule {info['rule']}{', ' + info['wildcards'] if info['wildcards'] else ''})"
    if jid not in submitted:
        errors.append(f"{what}: no 'submitted with SLURM jobid' line")
        continue
    sid, logf = submitted[jid]
    if sid in ids_seen:
        errors.append(f"{what}: SLURM jobid {sid} reused by another job")
    ids_seen.add(sid)
    if f"/rule_{info['rule']}/" not in str(logf) or logf.name != f"{sid}.log":
        errors.append(f"{what}: unexpected SLURM log path {logf}")
    if not logf.is_file():
        errors.append(f"{what}: SLURM log {logf} missing (slurm-keep-successful-logs off?)")
    elif f"rule {info['rule']}:" not in logf.read_text(errors="replace"):
        errors.append(f"{what}: SLURM log {logf} does not show rule {info['rule']} running")
    sj = slurm_jobs.get(sid, {})
    state, comment = sj.get("JobState", ""), sj.get("Comment", "")
    if state != "COMPLETED":
        errors.append(f"{what}: state of SLURM job {sid} is '{state or 'missing'}'")
    if not comment.startswith(f"rule_{info['rule']}"):
        errors.append(f"{what}: SLURM job {sid} comment '{comment}' names another rule")
    gpu_req = [t for t in (sj.get("TresPerJob", ""), sj.get("TresPerNode", "")) if "gpu" in t]
    if check_gpu and bool(gpu_req) != (info["rule"] in gpu_rules):
        errors.append(f"{what}: SLURM job {sid} GPU request {gpu_req or 'none'}, expected "
                      f"{'a GPU' if info['rule'] in gpu_rules else 'none'}")
    print(f"slurm_check:   {what} -> SLURM job {sid} {state}"
          f"{' ' + ','.join(gpu_req) if gpu_req else ''}", file=sys.stderr)
local_rules = sorted({v["rule"] for v in jobs.values() if v["local"]})
for r in local_rules:
    if r not in allow_local:
        errors.append(f"rule {r} ran locally, not as a SLURM job (allowed local: {sorted(allow_local)})")
print(f"slurm_check: {len(remote)} SLURM jobs, {len(jobs) - len(remote)} local jobs "
      f"({', '.join(local_rules) or '-'}), dry run planned {expected}", file=sys.stderr)

# ---- comparison with the local run -----------------------------------------------------------
def excluded(rel: str) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel, "*/" + p) for p in excludes)


def tree(root: Path) -> dict[str, Path]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            rel = p.relative_to(root).as_posix()
            if not excluded(rel):
                out[rel] = p
    return out


local_rc = read("local.rc")
if local_rc and int(local_rc) != 0:
    errors.append(f"local reference run exited {local_rc}")
    print(f"--- tail of the local run's output:\n{tail(read('local.out'))}", file=sys.stderr)
got_root, ref_root = scratch / "slurm" / results_dir, Path(reference)
if slurm_rc == 0 and (not local_rc or int(local_rc) == 0):
    got, ref = tree(got_root), tree(ref_root)
    if not ref:
        errors.append(f"reference {ref_root} holds no files to compare")
    for rel in sorted(set(ref) - set(got)):
        errors.append(f"compare: {rel} only in the local run")
    for rel in sorted(set(got) - set(ref)):
        errors.append(f"compare: {rel} only in the SLURM run")
    differ = [r for r in sorted(set(got) & set(ref)) if got[r].read_bytes() != ref[r].read_bytes()]
    for rel in differ:
        errors.append(f"compare: {rel} differs between the SLURM and the local run")
    print(f"slurm_check: compared {len(set(got) & set(ref))} files, {len(differ)} differ "
          f"(excluded: {' '.join(excludes)})", file=sys.stderr)

# ---- the failing run ---------------------------------------------------------------------------
if fail_cfg:
    fail_out = read("fail.out")
    fail_rc = int(read("fail.rc") or 0)
    if fail_rc == 0:
        errors.append("failing config: snakemake exited 0")
    elif fail_rc in (124, 137):
        errors.append(f"failing config: snakemake hung (killed by timeout, exit {fail_rc})")
    err_rules = re.findall(r"^Error in rule (\S+):$", fail_out, re.M)
    if not err_rules:
        errors.append("failing config: no 'Error in rule' in the output")
    elif fail_rule and fail_rule not in err_rules:
        errors.append(f"failing config: expected rule {fail_rule} to fail, got {err_rules}")
    # The 'log:' line of each 'Error in rule X:' block must name the plugin's SLURM log of X.
    logs = []
    for block in re.finditer(r"^Error in rule (\S+):\n((?:    .*\n?)*)", fail_out, re.M):
        rule, body = block.group(1), block.group(2)
        if fail_rule and rule != fail_rule:
            continue
        for line in body.splitlines():
            if line.strip().startswith("log: "):
                logs += re.findall(rf"(/\S*/slurm_logs/rule_{re.escape(rule)}/\S*?\d+\.log)", line)
    if not logs:
        errors.append("failing config: no 'Error in rule' block names the failing job's SLURM log")
    elif not all(Path(p).is_file() and Path(p).stat().st_size > 0 for p in logs):
        errors.append(f"failing config: named SLURM log missing or empty: {logs}")
    if errors and fail_rc != 0:
        print(f"--- tail of the failing run's output:\n{tail(fail_out)}", file=sys.stderr)
    print(f"slurm_check: failing config exited {fail_rc}; failed rule(s) {err_rules}; "
          f"logs {logs}", file=sys.stderr)

for e in errors:
    print(f"slurm_check: FAIL: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PYEOF
left=$(squeue -h -t PD,R,CG,S -o %i 2>/dev/null | tr '\n' ' ')
[[ -z ${left// /} ]] || log "note: jobs still queued/running after the runs: $left (cancelled at teardown)"
if [[ $status -eq 0 ]]; then
  log "PASS in $((SECONDS - t0)) s"
else
  log "FAILED after $((SECONDS - t0)) s"
fi
exit "$status"
