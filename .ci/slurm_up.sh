#!/usr/bin/env bash
# Bring up a real single-node SLURM cluster (slurmctld + slurmd + munged) for tests.
#
# Usage:
#   bash .ci/slurm_up.sh [STATE_DIR]          # as root, no systemd needed
#   STATE_DIR defaults to $SEMMECH_SLURM_DIR, else a new `mktemp -d`.
#   The last line printed on stdout is `SEMMECH_SLURM_DIR=<dir>`; pass that dir to
#   .ci/slurm_down.sh to tear the cluster down again (always do, e.g. from a trap).
#
# Environment (all optional):
#   SEMMECH_SLURM_MEM_MB      RealMemory of the node in MB (default: min(16000, what slurmd -C sees))
#   SEMMECH_SLURM_CPUS        CPUs of the node (default: what slurmd -C detects)
#   SEMMECH_SLURM_NO_INSTALL  =1: fail instead of apt-get installing missing Debian packages
#   SEMMECH_SLURM_WAIT_S      seconds to wait for the node to become idle (default 30)
#   SEMMECH_SLURM_FAKE_GPUS   N>0: give the node N fake GPUs (gres/gpu backed by empty files), so
#                             jobs that request GPUs (--gpus/--gres) schedule; for testing requests
#
# Why it looks like this (measured, see shared/slurm/NOTES.md):
#   * Debian's slurm 22.05 + munge; apt starts no daemons here, so we start them ourselves.
#   * slurm.conf must be reachable at /etc/slurm/slurm.conf: the executor plugin's jobstep runs a
#     nested `srun` with SLURM_CONF stripped from its environment. We symlink it into STATE_DIR and
#     slurm_down.sh removes the symlink. An existing regular file there is never touched.
#   * No cgroups/systemd: proctrack/linuxproc, task/none, no accounting (status via squeue, so
#     MinJobAge=3600 keeps finished jobs visible to `squeue --states=all`).
#   * The daemons are started with -f on the real file, so they find gres.conf beside it.
#   * EnforcePartLimits=ALL: a job asking for more CPUs/memory/GPUs than the node has is rejected
#     by sbatch (Snakemake reports the rule as failed) instead of pending forever.
#   * Ports 6817/6818 are fixed: one cluster per machine at a time.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONF_LINK=/etc/slurm/slurm.conf

die() { echo "slurm_up: error: $*" >&2; exit 1; }
log() { echo "slurm_up: $*" >&2; }

[[ $(id -u) -eq 0 ]] || die "must run as root (the daemons run as root and /etc/slurm is written)"

STATE_DIR=${1:-${SEMMECH_SLURM_DIR:-}}
if [[ -z $STATE_DIR ]]; then
  STATE_DIR=$(mktemp -d /tmp/semmech-slurm.XXXXXX)
fi
STATE_DIR=$(realpath -m "$STATE_DIR")

# --- packages --------------------------------------------------------------------------------
need_install=0
for b in slurmctld slurmd srun sbatch squeue scontrol munged mungekey; do
  command -v "$b" >/dev/null 2>&1 || { PATH=$PATH:/usr/sbin:/sbin command -v "$b" >/dev/null 2>&1 || need_install=1; }
done
export PATH=$PATH:/usr/sbin:/sbin
if [[ $need_install -eq 1 ]]; then
  [[ ${SEMMECH_SLURM_NO_INSTALL:-0} == 1 ]] && die "SLURM/munge binaries missing and SEMMECH_SLURM_NO_INSTALL=1"
  log "installing slurmctld slurmd slurm-client munge from Debian"
  apt-get -o DPkg::Lock::Timeout=120 update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y -qq \
    --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# --- refuse to clobber a live or foreign cluster --------------------------------------------
if [[ -e $CONF_LINK || -L $CONF_LINK ]]; then
  [[ -L $CONF_LINK ]] || die "$CONF_LINK is a regular file (a real SLURM install?); refusing to replace it"
  other=$(readlink "$CONF_LINK")
  other_dir=$(dirname "$(dirname "$other")")
  if [[ -f $other_dir/run/slurmctld.pid ]] &&
     kill -0 "$(cat "$other_dir/run/slurmctld.pid")" 2>/dev/null; then
    die "a test cluster is already up ($CONF_LINK -> $other); run: bash $SCRIPT_DIR/slurm_down.sh $other_dir"
  fi
  log "removing stale symlink $CONF_LINK -> $other"
  rm -f "$CONF_LINK"
fi

mkdir -p "$STATE_DIR"

# On any failure below: dump daemon logs and tear down what we started.
on_fail() {
  rc=$?
  log "bring-up failed (rc=$rc); daemon logs follow"
  for f in "$STATE_DIR"/log/*.log; do [[ -f $f ]] && { echo "== $f" >&2; tail -n 30 "$f" >&2; }; done
  SEMMECH_SLURM_KEEP_STATE=1 bash "$SCRIPT_DIR/slurm_down.sh" "$STATE_DIR" >&2 || true
  exit "$rc"
}
trap on_fail ERR

HOST=$(hostname -s)
# CPUs and RealMemory may not exceed what slurmd detects, or the node is drained as INVALID.
# (Not `nproc`: it honours OMP_NUM_THREADS, which CI may set to 1.)
node_line=$(slurmd -C 2>/dev/null | head -n1)
detected_cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node_line")
[[ -n $detected_cpus ]] || detected_cpus=$(nproc --all)
NCPU=${SEMMECH_SLURM_CPUS:-$detected_cpus}
detected_mb=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
[[ -n $detected_mb ]] || detected_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))
MEM_MB=${SEMMECH_SLURM_MEM_MB:-16000}
(( MEM_MB <= detected_mb )) || MEM_MB=$detected_mb

FAKE_GPUS=${SEMMECH_SLURM_FAKE_GPUS:-0}
[[ $FAKE_GPUS =~ ^[0-9]+$ ]] || die "SEMMECH_SLURM_FAKE_GPUS must be a non-negative integer"
GRES_TYPES="" NODE_GRES=""
if [[ $FAKE_GPUS -gt 0 ]]; then
  GRES_TYPES="GresTypes=gpu"
  NODE_GRES=" Gres=gpu:${FAKE_GPUS}"
fi

# Layout. munged insists on: key dir not accessible by others, socket dir 0755 and not writable by
# group/other, and every parent not world-writable (mktemp dirs are 0700, so open them to 0755).
chmod 0755 "$STATE_DIR"
mkdir -p "$STATE_DIR"/{etc,log,run,state,spool,munge-key,munge-run,munge-lib}
chmod 0755 "$STATE_DIR"/{etc,log,run,state,spool,munge-run}
chmod 0700 "$STATE_DIR"/munge-key "$STATE_DIR"/munge-lib
MUNGE_KEY=$STATE_DIR/munge-key/munge.key
MUNGE_SOCK=$STATE_DIR/munge-run/munge.socket

# --- munge -------------------------------------------------------------------------------------
if [[ ! -f $MUNGE_KEY ]]; then
  mungekey --create --keyfile="$MUNGE_KEY" >/dev/null
fi
chmod 0400 "$MUNGE_KEY"
munged --force --socket="$MUNGE_SOCK" --key-file="$MUNGE_KEY" \
  --pid-file="$STATE_DIR/run/munged.pid" --log-file="$STATE_DIR/log/munged.log" \
  --seed-file="$STATE_DIR/munge-lib/munged.seed"
for _ in $(seq 50); do [[ -S $MUNGE_SOCK ]] && break; sleep 0.1; done
[[ -S $MUNGE_SOCK ]] || { log "munged did not create its socket"; false; }

# --- slurm.conf --------------------------------------------------------------------------------
cat >"$STATE_DIR/etc/slurm.conf" <<EOF
# Generated by .ci/slurm_up.sh for a throw-away single-node test cluster.
ClusterName=semmechci
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${MUNGE_SOCK}
StateSaveLocation=${STATE_DIR}/state
SlurmdSpoolDir=${STATE_DIR}/spool
SlurmctldPidFile=${STATE_DIR}/run/slurmctld.pid
SlurmdPidFile=${STATE_DIR}/run/slurmd.pid
SlurmctldLogFile=${STATE_DIR}/log/slurmctld.log
SlurmdLogFile=${STATE_DIR}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
ReturnToService=2
# Keep finished jobs visible to 'squeue --states=all' for an hour: the executor plugin's squeue
# status query needs MinJobAge >= 3 x slurm-init-seconds-before-status-checks.
MinJobAge=3600
# Reject at submission (instead of pending forever) a job that asks for more than the node has.
EnforcePartLimits=ALL
SlurmctldTimeout=30
SlurmdTimeout=30
${GRES_TYPES}
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${NCPU} RealMemory=${MEM_MB}${NODE_GRES} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
if [[ $FAKE_GPUS -gt 0 ]]; then
  # Fake GPUs backed by empty files (slurmd counts a gpu GRES without File as 0 and drains the
  # node): jobs that ask for GPUs schedule, so a workflow's GPU requests can be tested without GPUs.
  # slurmd reads gres.conf next to the slurm.conf it was started with (-f), not via the symlink.
  mkdir -p "$STATE_DIR/dev"
  for ((i = 0; i < FAKE_GPUS; i++)); do : >"$STATE_DIR/dev/nvidia$i"; done
  {
    echo "AutoDetect=off"
    echo "NodeName=${HOST} Name=gpu File=${STATE_DIR}/dev/nvidia[0-$((FAKE_GPUS - 1))]"
  } >"$STATE_DIR/etc/gres.conf"
fi
mkdir -p "$(dirname "$CONF_LINK")"
ln -s "$STATE_DIR/etc/slurm.conf" "$CONF_LINK"

# --- daemons -----------------------------------------------------------------------------------
slurmctld -c -f "$STATE_DIR/etc/slurm.conf"
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.2; done
scontrol ping | grep -q 'is UP' || { log "slurmctld did not come up"; false; }
slurmd -N "$HOST" -f "$STATE_DIR/etc/slurm.conf"

wait_s=${SEMMECH_SLURM_WAIT_S:-30}
state=""
for _ in $(seq $((wait_s * 5))); do
  state=$(sinfo -h -o %T 2>/dev/null | head -n1 || true)
  [[ $state == idle ]] && break
  sleep 0.2
done
[[ $state == idle ]] || { log "node state is '$state', not idle, after ${wait_s}s"; false; }

# Smoke test: one real job step through slurmd/slurmstepd.
out=$(timeout -k 5 30 srun -t 1 -n 1 hostname)
[[ $out == "$HOST"* ]] || { log "srun smoke test printed '$out'"; false; }

trap - ERR
log "cluster up: node $HOST CPUs=$NCPU RealMemory=${MEM_MB}MB, state in $STATE_DIR"
echo "SEMMECH_SLURM_DIR=$STATE_DIR"
