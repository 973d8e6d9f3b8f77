#!/usr/bin/env bash
# Tear down a test cluster started by .ci/slurm_up.sh. Idempotent: safe to call twice, on a
# half-started cluster, or with nothing running; meant to be called from a trap.
#
# Usage:
#   bash .ci/slurm_down.sh [STATE_DIR]
#   STATE_DIR defaults to $SEMMECH_SLURM_DIR, else to the directory /etc/slurm/slurm.conf links into.
#
# Environment (optional):
#   SEMMECH_SLURM_KEEP_STATE=1   keep STATE_DIR (daemon logs) instead of deleting it
#
# What it does, in order: cancel every job still known to slurmctld (so no slurmstepd or job
# process outlives the cluster), stop slurmd, slurmctld, munged by the PIDs in their pid files
# (TERM, then KILL after a grace period), kill any slurmstepd of this cluster that outlived them
# (cwd or open files under STATE_DIR) with its job processes, ALWAYS remove the /etc/slurm/slurm.conf symlink (never a regular file), and
# delete STATE_DIR. Exits 0 unless a daemon could not be killed.
set -uo pipefail

CONF_LINK=/etc/slurm/slurm.conf
log() { echo "slurm_down: $*" >&2; }
export PATH=$PATH:/usr/sbin:/sbin

STATE_DIR=${1:-${SEMMECH_SLURM_DIR:-}}
if [[ -z $STATE_DIR && -L $CONF_LINK ]]; then
  STATE_DIR=$(dirname "$(dirname "$(readlink "$CONF_LINK")")")
fi

# pid_alive PID NAME: the pid runs the expected program (guards against pid reuse) and is not a
# zombie (daemons re-parent to init, which may reap them late).
pid_alive() {
  local pid=$1 name=$2 stat
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name"* ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# stop_pid PID NAME: TERM, wait up to 10 s, then KILL.
stop_pid() {
  local pid=$1 name=$2
  pid_alive "$pid" "$name" || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 50); do pid_alive "$pid" "$name" || return 0; sleep 0.2; done
  log "$name ($pid) ignored TERM; sending KILL"
  kill -KILL "$pid" 2>/dev/null
  for _ in $(seq 25); do pid_alive "$pid" "$name" || return 0; sleep 0.2; done
  log "could not stop $name ($pid)"
  return 1
}

stop_from_pidfile() {
  local file=$1 name=$2
  [[ -f $file ]] || return 0
  stop_pid "$(cat "$file" 2>/dev/null)" "$name"
}

# descendants PID: all transitive children of PID, one per line (from /proc, no procps needed).
descendants() {
  local root=$1 p stat fields
  for p in /proc/[0-9]*; do
    stat=$(cat "$p/stat" 2>/dev/null) || continue
    read -ra fields <<<"${stat##*) }"
    echo "${p#/proc/} ${fields[1]}"
  done | awk -v root="$root" '{ parent[$1] = $2 }
    END { n = 1; q[1] = root
          for (i = 1; i <= n; i++) for (c in parent) if (parent[c] == q[i]) { q[++n] = c; print c } }'
}

rc=0
if [[ -n $STATE_DIR && -d $STATE_DIR ]]; then
  ctld_pid=$(cat "$STATE_DIR/run/slurmctld.pid" 2>/dev/null || true)
  if [[ -L $CONF_LINK ]] && pid_alive "$ctld_pid" slurmctld; then
    jobs=$(timeout -k 2 10 squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [[ -n ${jobs// /} ]]; then
      log "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      timeout -k 2 10 scancel $jobs 2>/dev/null || true
      for _ in $(seq 75); do
        [[ -z $(timeout -k 2 5 squeue -h -t R,CG,PD,S -o %i 2>/dev/null) ]] && break
        sleep 0.2
      done
    fi
  fi
  stop_from_pidfile "$STATE_DIR/run/slurmd.pid" slurmd || rc=1
  stop_from_pidfile "$STATE_DIR/run/slurmctld.pid" slurmctld || rc=1
  # A slurmstepd that outlived slurmctld/slurmd (e.g. after a crash) keeps running its job. Ours
  # have their cwd or an open file (slurmd.log) under STATE_DIR. They ignore TERM: stop the job
  # processes below them first, then KILL the stepd.
  for proc in /proc/[0-9]*; do
    pid=${proc#/proc/}
    [[ $(cat "$proc/comm" 2>/dev/null) == slurmstepd ]] || continue
    pid_alive "$pid" slurmstepd || continue
    ours=0
    for link in "$proc/cwd" "$proc"/fd/*; do
      [[ $(readlink "$link" 2>/dev/null) == "$STATE_DIR"/* ]] && { ours=1; break; }
    done
    [[ $ours -eq 1 ]] || continue
    kids=$(descendants "$pid" | tr "\n" " ")
    log "stopping stray slurmstepd $pid and its job processes: ${kids:-none}"
    for k in $kids; do kill -TERM "$k" 2>/dev/null; done
    sleep 1
    for k in $kids; do kill -KILL "$k" 2>/dev/null; done
    kill -KILL "$pid" 2>/dev/null
    for _ in $(seq 25); do pid_alive "$pid" slurmstepd || break; sleep 0.2; done
    pid_alive "$pid" slurmstepd && { log "could not stop slurmstepd $pid"; rc=1; }
  done
  stop_from_pidfile "$STATE_DIR/run/munged.pid" munged || rc=1
fi

if [[ -L $CONF_LINK ]]; then
  rm -f "$CONF_LINK"
elif [[ -e $CONF_LINK ]]; then
  log "$CONF_LINK is a regular file, not ours; left alone"
fi

# Only delete a directory that slurm_up.sh laid out (guards against a wrong argument).
if [[ -n $STATE_DIR && -d $STATE_DIR && ${SEMMECH_SLURM_KEEP_STATE:-0} != 1 && $rc -eq 0 ]]; then
  if [[ $STATE_DIR != / && -d $STATE_DIR/munge-key && -d $STATE_DIR/run ]]; then
    rm -rf "$STATE_DIR"
  else
    log "$STATE_DIR does not look like a slurm_up.sh state dir; not deleting it"
  fi
fi
log "cluster down${STATE_DIR:+ ($STATE_DIR)}"
exit $rc
