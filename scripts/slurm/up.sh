#!/usr/bin/env bash
# Install (if needed) and start a single-node SLURM cluster on loopback, for tests and CI.
#
# Usage: scripts/slurm/up.sh [STATE_DIR]      (default: ${TMPDIR:-/tmp}/tilewise-slurm)
#        scripts/slurm/up.sh --install-only    (only install the Debian packages when missing)
#
# Everything the cluster writes lives in STATE_DIR: the munge key, socket and log, slurm.conf,
# the controller state, the slurmd spool, pid files, logs and the job-completion file. The daemons
# started here (munged, slurmctld, slurmd) are recorded by their pid files in STATE_DIR, so
# scripts/slurm/down.sh STATE_DIR stops those and nothing else.
#
# Idempotent: when the daemons of STATE_DIR are already running, it only checks the cluster.
# The last line on stdout is always `export SLURM_CONF=STATE_DIR/slurm.conf`; everything else
# goes to stderr.
#
# Environment:
#   TILEWISE_SLURM_PORT   slurmctld port for a new cluster (default 16817; slurmd gets PORT+1).
#                         When taken, the next free pair (PORT+2, PORT+3), ... is used.
#
# Exit status: 0 ready; 3 cannot be done here (not root, no apt-get, not Linux) with a one-line
# reason on stderr; anything else is a failure (the logs' tails are printed).
#
# The settings follow facts measured on the CI machine (Debian 12, SLURM 22.05), written up in
# ../shared/notes/slurm-ci.md: proctrack/linuxproc (cgroup reports jobs COMPLETED without running
# them), cons_tres + CR_Core, RealMemory below `slurmd -C`, batch_sched_delay=0, no slurmdbd.
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C

INSTALL_ONLY=""
if [[ "${1:-}" == --install-only ]]; then  # `make test` installs the packages up front (GNU parallel tests need it too)
    INSTALL_ONLY=1
    shift
fi
STATE_DIR="${1:-${TMPDIR:-/tmp}/tilewise-slurm}"
NODE_NAME="twnode"
PARTITION="debug"

log() { printf 'slurm-up: %s\n' "$*" >&2; }
cannot() { printf 'slurm-up: %s\n' "$*" >&2; exit 3; }
die() {
    printf 'slurm-up: ERROR: %s\n' "$*" >&2
    local f
    for f in "${STATE_DIR:-}/munge/munged.log" "${STATE_DIR:-}/log/slurmctld.log" "${STATE_DIR:-}/log/slurmd.log"; do
        if [[ -s "$f" ]]; then
            printf -- '--- last lines of %s ---\n' "$f" >&2
            tail -n 15 "$f" >&2 || true
        fi
    done
    exit 1
}

[[ "$(uname -s)" == Linux ]] || cannot "a SLURM test cluster needs Linux (this is $(uname -s))"

# STATE_DIR as an absolute path without a trailing slash; it is matched against daemons' command lines.
mkdir -p "$STATE_DIR" 2>/dev/null || cannot "cannot create state directory $STATE_DIR"
STATE_DIR="$(cd "$STATE_DIR" && pwd -P)"
CONF="$STATE_DIR/slurm.conf"
MUNGE_DIR="$STATE_DIR/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket.2"
MUNGE_PID="$MUNGE_DIR/munged.pid"
CTLD_PID="$STATE_DIR/run/slurmctld.pid"
SLURMD_PID="$STATE_DIR/run/slurmd.pid"

# A UNIX socket path holds at most 107 bytes; munged also makes "<socket>.lock".
if (( ${#MUNGE_SOCKET} + 5 > 107 )); then
    die "state directory path too long for a UNIX socket ($MUNGE_SOCKET): use a shorter STATE_DIR"
fi

# munged refuses a socket below a directory that not everyone may search (pytest's 0700 basetemp).
# STATE_DIR itself is made 0755 below (mkdtemp makes 0700).
d="$(dirname "$STATE_DIR")"
while [[ "$d" != / && -n "$d" ]]; do
    if [[ -e "$d" ]] && (( ( 8#$(stat -c '%a' "$d") & 1 ) == 0 )); then
        die "munged needs every directory above its socket searchable by all, but $d is mode $(stat -c '%a' "$d"): use a state directory elsewhere (e.g. under /tmp)"
    fi
    d="$(dirname "$d")"
done

# --- pid files -> live daemons of this STATE_DIR ---------------------------------------------
# alive PIDFILE NAME: the pid in PIDFILE is a running NAME whose command line names STATE_DIR.
alive() {
    local pidfile="$1" name="$2" pid comm
    [[ -s "$pidfile" ]] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    [[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
    [[ "$comm" == "$name" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$STATE_DIR/" || return 1
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.1 s until it succeeds.
wait_for() {
    local secs="$1" what="$2" i
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    die "timed out after ${secs}s waiting for $what"
}

# --- install ----------------------------------------------------------------------------------
missing_tools() {
    local t out=()
    for t in sbatch squeue scontrol scancel sinfo slurmctld slurmd munged parallel; do
        command -v "$t" >/dev/null 2>&1 || out+=("$t")
    done
    printf '%s\n' "${out[@]}"
}

install_packages() {
    local pkgs=(slurmctld slurmd slurm-client munge parallel) added_policy=""
    command -v apt-get >/dev/null 2>&1 || cannot "SLURM is not installed and there is no apt-get to install it (need: ${pkgs[*]})"
    export DEBIAN_FRONTEND=noninteractive
    # One install at a time (several pytest-xdist workers may start clusters together); the one
    # that waited finds the tools there.
    local lockdir=/run/lock
    [[ -d "$lockdir" && -w "$lockdir" ]] || lockdir=/tmp
    exec 9>"$lockdir/tilewise-slurm-install.lock"
    flock -w 900 9 || die "another install still holds $lockdir/tilewise-slurm-install.lock"
    if [[ -z "$(missing_tools)" ]]; then
        exec 9>&-
        return 0
    fi
    # Keep the packages from starting system-wide services: this script starts its own daemons.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        added_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    local ok="" apt_opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300)
    # Only refresh the package lists when they lack the packages or the install fails on them.
    if [[ -n "$(apt-cache policy slurmctld 2>/dev/null | grep -E 'Candidate: [0-9]')" ]]; then
        log "installing ${pkgs[*]}"
        apt-get install "${apt_opts[@]}" "${pkgs[@]}" >&2 && ok=1
    fi
    if [[ -z "$ok" ]]; then
        log "apt-get update, then installing ${pkgs[*]}"
        apt-get update -q -o DPkg::Lock::Timeout=300 >&2 && apt-get install "${apt_opts[@]}" "${pkgs[@]}" >&2 && ok=1
    fi
    if [[ -n "$added_policy" ]]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
    exec 9>&-
    [[ -n "$ok" ]] || die "apt-get install ${pkgs[*]} failed"
}

if [[ -n "$INSTALL_ONLY" ]]; then
    missing="$(missing_tools)"
    if [[ -n "$missing" ]]; then
        [[ "$(id -u)" == 0 ]] || cannot "SLURM/munge/parallel not installed ($(echo $missing)) and installing needs root"
        install_packages
    fi
    exit 0
fi

running_already=""
if alive "$MUNGE_PID" munged && alive "$CTLD_PID" slurmctld && alive "$SLURMD_PID" slurmd && [[ -s "$CONF" ]]; then
    running_already=1
fi

if [[ -z "$running_already" ]]; then
    missing="$(missing_tools)"
    if [[ -n "$missing" ]]; then
        [[ "$(id -u)" == 0 ]] || cannot "SLURM/munge/parallel not installed ($(echo $missing)) and installing needs root"
        install_packages
        missing="$(missing_tools)"
        [[ -z "$missing" ]] || die "still missing after install: $(echo $missing)"
    fi
    [[ "$(id -u)" == 0 ]] || cannot "starting the SLURM test cluster needs root (SlurmUser=root)"
fi

export SLURM_CONF="$CONF"

# --- slurm.conf -------------------------------------------------------------------------------
port_taken() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

write_conf() {
    local cpus mem port i
    # `slurmd -C` prints e.g. "NodeName=x CPUs=2 ... RealMemory=7937".
    local hw
    hw="$(slurmd -C 2>/dev/null | head -n 1)" || true
    cpus="$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")"
    mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
    [[ -n "$cpus" ]] || cpus="$(nproc)"
    [[ -n "$mem" ]] || mem="$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)"
    (( cpus >= 4 )) || cpus=4          # more array elements at once on 2 cores (config_overrides)
    mem=$(( mem * 80 / 100 ))          # at or above the real value the node goes INVAL
    (( mem >= 1 )) || mem=1

    port="${TILEWISE_SLURM_PORT:-16817}"
    for ((i = 0; i < 50; i++)); do
        if ! port_taken "$port" && ! port_taken $((port + 1)); then break; fi
        port=$((port + 2))
    done
    (( i < 50 )) || die "no free port pair from ${TILEWISE_SLURM_PORT:-16817} on"

    cat >"$CONF.tmp" <<EOF
# Written by scripts/slurm/up.sh: a single-node test cluster on loopback; all state in this directory.
ClusterName=tilewise
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
MinJobAge=600
KillWait=5
OverTimeLimit=0
InactiveLimit=0
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE_DIR/jobcomp.txt
MailProg=/bin/true
NodeName=$NODE_NAME NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE_NAME Default=YES MaxTime=INFINITE State=UP
EOF
    mv -f "$CONF.tmp" "$CONF"
}

# --- start ------------------------------------------------------------------------------------
if [[ -z "$running_already" ]]; then
    t0=$SECONDS
    chmod 0755 "$STATE_DIR"
    mkdir -p "$MUNGE_DIR" "$STATE_DIR/ctld" "$STATE_DIR/slurmd" "$STATE_DIR/run" "$STATE_DIR/log"
    chmod 0755 "$MUNGE_DIR"

    if ! alive "$MUNGE_PID" munged; then
        if [[ ! -s "$MUNGE_DIR/munge.key" ]]; then
            (umask 077 && dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none)
        fi
        chmod 0600 "$MUNGE_DIR/munge.key"
        rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" "$MUNGE_PID"
        munged --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" --pid-file="$MUNGE_PID" \
            --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" --num-threads=2 >&2 \
            || die "munged did not start"
        wait_for 10 "munged's socket" test -S "$MUNGE_SOCKET"
        log "munged running (pid $(cat "$MUNGE_PID"))"
    fi

    # A new slurm.conf only when no slurm daemon of STATE_DIR runs (they would keep the old ports).
    if ! alive "$CTLD_PID" slurmctld && ! alive "$SLURMD_PID" slurmd || [[ ! -s "$CONF" ]]; then
        write_conf
    fi

    if ! alive "$CTLD_PID" slurmctld; then
        rm -f "$CTLD_PID"
        slurmctld -f "$CONF" >&2 || die "slurmctld did not start"
        wait_for 20 "slurmctld to answer" scontrol ping
        log "slurmctld running (pid $(cat "$CTLD_PID" 2>/dev/null || echo '?'))"
    fi

    if ! alive "$SLURMD_PID" slurmd; then
        rm -f "$SLURMD_PID"
        slurmd -f "$CONF" -N "$NODE_NAME" >&2 || die "slurmd did not start"
        # slurmd returns before its pid file exists.
        wait_for 20 "slurmd's pid file" alive "$SLURMD_PID" slurmd
        log "slurmd running (pid $(cat "$SLURMD_PID"))"
    fi
    log "daemons started in $((SECONDS - t0))s"
else
    log "already running from $STATE_DIR"
fi

# --- check ------------------------------------------------------------------------------------
for name in munged:"$MUNGE_PID" slurmctld:"$CTLD_PID" slurmd:"$SLURMD_PID"; do
    alive "${name#*:}" "${name%%:*}" || die "${name%%:*} is not running"
done
wait_for 20 "slurmctld to answer" scontrol ping

node_ready() {
    local state
    state="$(sinfo -h -n "$NODE_NAME" -o '%T' 2>/dev/null | head -n 1)"
    # idle, mixed or allocated are all usable; drained/down/unknown/invalid are not.
    [[ "$state" =~ ^(idle|mixed|allocated|completing)$ ]]
}
if ! node_ready; then
    for ((i = 0; i < 300; i++)); do node_ready && break; sleep 0.1; done
    node_ready || die "node $NODE_NAME is not usable: $(scontrol show node "$NODE_NAME" 2>&1 | grep -E 'State=|Reason=' | tr -s ' ' | tr '\n' ' ')"
fi

# A tiny job proves munge, controller, slurmd and slurmstepd work together. (sbatch --wait polls
# with growing sleeps, so poll squeue ourselves.) Only the job's active states count: with
# MinJobAge=600 a finished job stays listed for a while when asked for by id.
if [[ -z "$running_already" ]]; then
    t1=$SECONDS
    mkdir -p "$STATE_DIR/smoke"
    out="$STATE_DIR/smoke/smoke-%j.out"
    job="$(sbatch --parsable -p "$PARTITION" -J tw-smoke -t 1 -o "$out" --chdir="$STATE_DIR/smoke" \
        --wrap 'echo "smoke ok on $(hostname) job $SLURM_JOB_ID"' 2>&1)" || die "sbatch failed: $job"
    job="${job%%;*}"
    job_active() { [[ -n "$(squeue -h -j "$job" -t PD,CF,R,CG,S,RQ,RS,RH,SO,SI,ST 2>/dev/null)" ]]; }
    for ((i = 0; i < 600; i++)); do job_active || break; sleep 0.1; done
    job_active && die "smoke job $job still queued or running after 60s"
    state="$(scontrol show job "$job" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -n 1)" || true
    [[ "$state" == JobState=COMPLETED ]] || die "smoke job $job ended with ${state:-no state}"
    grep -q '^smoke ok' "${out//%j/$job}" 2>/dev/null || die "smoke job $job wrote no output to ${out//%j/$job}"
    log "smoke job $job ran in $((SECONDS - t1))s"
fi

echo "export SLURM_CONF=$CONF"
