#!/usr/bin/env bash
# Stop the single-node SLURM test cluster that scripts/slurm/up.sh started in STATE_DIR.
#
# Usage: scripts/slurm/down.sh [STATE_DIR]    (default: ${TMPDIR:-/tmp}/tilewise-slurm)
#
# Cancels every job of that cluster and waits (about 20 s at most) for the queue to empty, so no
# slurmstepd or job process is left behind; then stops slurmd, slurmctld and munged, found by the
# pid files in STATE_DIR and only when their command line names STATE_DIR (SIGTERM, then SIGKILL
# after 5 s). Nothing else is touched; STATE_DIR itself (logs, job-completion file) stays.
# Exit status 0 when none of those daemons runs any more.
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C

STATE_DIR="${1:-${TMPDIR:-/tmp}/tilewise-slurm}"
log() { printf 'slurm-down: %s\n' "$*" >&2; }

if [[ ! -d "$STATE_DIR" ]]; then
    log "no state directory $STATE_DIR: nothing to stop"
    exit 0
fi
STATE_DIR="$(cd "$STATE_DIR" && pwd -P)"
CONF="$STATE_DIR/slurm.conf"
MUNGE_PID="$STATE_DIR/munge/munged.pid"
CTLD_PID="$STATE_DIR/run/slurmctld.pid"
SLURMD_PID="$STATE_DIR/run/slurmd.pid"
export SLURM_CONF="$CONF"

# pid_of PIDFILE NAME: print the pid when it is a running NAME whose command line names STATE_DIR.
pid_of() {
    local pidfile="$1" name="$2" pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    [[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$STATE_DIR/" || return 1
    echo "$pid"
}

# Jobs still pending, running or completing (finished jobs stay listed for MinJobAge when asked by id,
# so name the active states).
ACTIVE=PD,CF,R,CG,S,RQ,RS,RH,SO,SI,ST
active_jobs() { timeout 15 squeue -h -t "$ACTIVE" -o '%F' 2>/dev/null | sort -u; }

if pid_of "$CTLD_PID" slurmctld >/dev/null && [[ -s "$CONF" ]]; then
    jobs="$(active_jobs || true)"
    if [[ -n "$jobs" ]]; then
        log "cancelling jobs: $(echo $jobs)"
        # shellcheck disable=SC2086
        timeout 15 scancel $jobs 2>/dev/null || true
        for ((i = 0; i < 200; i++)); do
            [[ -z "$(active_jobs || true)" ]] && break
            sleep 0.1
        done
        if [[ -n "$(active_jobs || true)" ]]; then
            log "jobs still active after 20s: $(echo $(active_jobs || true)); killing their processes"
            # The job steps on this node, as slurmd's spool directory (from SLURM_CONF) lists them.
            if pid_of "$SLURMD_PID" slurmd >/dev/null; then
                pids="$(timeout 10 scontrol listpids 2>/dev/null | awk 'NR > 1 && $1 ~ /^[0-9]+$/ {print $1}' || true)"
                # shellcheck disable=SC2086
                [[ -z "$pids" ]] || kill -KILL $pids 2>/dev/null || true
            fi
        fi
    fi
fi

# running PID: the process exists and is not a zombie (an unreaped zombie has already stopped).
running() { [[ -r "/proc/$1/stat" ]] && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }

# stop PIDFILE NAME: SIGTERM, wait up to 5 s, then SIGKILL.
stop() {
    local pidfile="$1" name="$2" pid i
    pid="$(pid_of "$pidfile" "$name")" || { rm -f "$pidfile"; return 0; }
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        running "$pid" || break
        sleep 0.1
    done
    if running "$pid"; then
        log "$name (pid $pid) ignored SIGTERM; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 20; i++)); do
            running "$pid" || break
            sleep 0.1
        done
    fi
    if running "$pid"; then
        log "$name (pid $pid) still running"
        return 1
    fi
    rm -f "$pidfile"
}

left=""
stop "$SLURMD_PID" slurmd || left+=" slurmd"
stop "$CTLD_PID" slurmctld || left+=" slurmctld"
stop "$MUNGE_PID" munged || left+=" munged"
if [[ -n "$left" ]]; then
    log "still running:$left"
    exit 1
fi
log "stopped (state kept in $STATE_DIR)"
