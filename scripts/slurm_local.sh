#!/usr/bin/env bash
# slurm_local.sh: bring a real one-node SLURM cluster up (or down) on this machine, for testing
# `launcher=slurm` end to end (submitit's SlurmExecutor -> sbatch -> srun -> python -m submitit.core._submit).
#
#   scripts/slurm_local.sh up       install slurm-wlm + munge if missing, write the config, start the daemons,
#                                   wait until the node is idle
#   scripts/slurm_local.sh down     cancel every job, stop the daemons that `up` started, delete their state
#   scripts/slurm_local.sh status   sinfo + squeue
#
# Requirements: root (it installs packages, writes /etc/slurm/slurm.conf and starts daemons), a Debian/Ubuntu
# machine whose apt can reach its package mirror (Debian 12's slurm-wlm 22.05 and munge 0.5), no systemd needed:
# munged, slurmctld and slurmd are started directly as daemons. Both `up` and `down` are idempotent.
#
# The cluster: one node named after `hostname -s`, with `nproc` CPUs and the memory `slurmd -C` reports, in one
# partition (`debug`, the default, no time limit). Memory is not a consumable resource (CR_CPU), so as many
# one-CPU jobs run at once as there are CPUs. No cgroups: proctrack/linuxproc and task/none, which work in a
# container. JobRequeue=1, and AuthInfo=cred_expire=10 so that a requeued job (`scontrol requeue`, which is how
# submitit requeues itself after SIGUSR2) runs again about 10 s later instead of Slurm's default 2 minutes.
# Jobs run as the user who submits them (root is allowed) with the submitter's environment; the commands live
# in /usr/bin, the daemons in /usr/sbin. Job ids start again at 1 after every `down`.
#
# No accounting daemon (AccountingStorageType=accounting_storage/none), so the real `sacct` only prints "Slurm
# accounting storage is disabled" and exits 1: submitit then logs "Bypassing sacct error", job.state stays
# "UNKNOWN", job.done() turns true only when the result pickle exists, and job.result() of a job that died
# without one (scancel, node failure) waits forever. `up` also writes $MAMOL_SLURM_DIR/bin/sacct, a stand-in
# that answers submitit's query from `scontrol show job` (PENDING, RUNNING, COMPLETED, CANCELLED, ... for 300 s,
# MinJobAge, after a job ends); put that folder first in PATH to use it.
#
# State, spool, pid files and logs live under $MAMOL_SLURM_DIR (default /var/lib/mamol-slurm); `down` deletes
# everything there except log/. The config is /etc/slurm/slurm.conf (the path Debian's commands read by
# default, so no SLURM_CONF is needed); `up` only overwrites a slurm.conf that it wrote itself.
set -euo pipefail

ROOT=${MAMOL_SLURM_DIR:-/var/lib/mamol-slurm}
PARTITION=${MAMOL_SLURM_PARTITION:-debug}
WAIT_S=${MAMOL_SLURM_WAIT_S:-60}
# a requeued job may start again only cred_expire (+1) seconds later; Slurm's default is 120 s
CRED_EXPIRE=${MAMOL_SLURM_CRED_EXPIRE:-10}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# written by mamol scripts/slurm_local.sh"
LOG=$ROOT/log
RUN=$ROOT/run
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

die() { echo "slurm_local.sh: $*" >&2; exit 1; }
say() { echo "slurm_local.sh: $*"; }

# pid from a pid file if that process is alive
live_pid() {
    local f=$1 pid
    [[ -s $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    ((${#missing[@]})) || return 0
    say "installing slurm-wlm munge (missing: ${missing[*]}) ..."
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends slurm-wlm munge >"$LOG/apt.log" 2>&1; then
        apt-get update -qq >>"$LOG/apt.log" 2>&1 || true
        apt-get install -y -qq --no-install-recommends slurm-wlm munge >>"$LOG/apt.log" 2>&1 \
            || die "apt-get install slurm-wlm munge failed, see $LOG/apt.log"
    fi
}

start_munge() {
    if munge_works; then
        [[ -n $(live_pid "$RUN/munged.pid" || true) ]] || say "munged: using the one already running"
        return 0
    fi
    local key=/etc/munge/munge.key
    if [[ ! -s $key ]]; then
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then mungekey --create --keyfile="$key" --force
        else dd if=/dev/urandom of="$key" bs=1 count=1024 status=none; fi
    fi
    chown munge:munge /etc/munge "$key"; chmod 0700 /etc/munge; chmod 0400 "$key"
    mkdir -p /run/munge /var/lib/munge /var/log/munge "$RUN/munge"
    chown munge:munge /run/munge /var/lib/munge /var/log/munge "$RUN/munge"
    chmod 0755 /run/munge
    touch "$LOG/munged.log"; chown munge:munge "$LOG/munged.log"; chmod 0640 "$LOG/munged.log"
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- munged --pid-file="$RUN/munge/munged.pid" --log-file="$LOG/munged.log" \
        || die "munged did not start, see $LOG/munged.log"
    ln -sf munge/munged.pid "$RUN/munged.pid"
    for _ in $(seq 50); do munge_works && return 0; sleep 0.1; done
    die "munge does not answer, see $LOG/munged.log"
}

write_conf() {
    if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; move it away first"
    fi
    local node cpus mem
    node=$(hostname -s 2>/dev/null || true); node=${node:-localhost}
    cpus=$(nproc)
    mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
    [[ -n $mem ]] || mem=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
    mkdir -p "$CONF_DIR" "$ROOT/ctld" "$ROOT/spool"
    local tmp=$CONF.tmp.$$
    cat >"$tmp" <<EOF
$MARK, regenerated by every \`up\`: a one-node cluster for tests.
ClusterName=mamol
SlurmctldHost=$node(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
# step credentials live 10 s (default 120), which is also how long a requeued job waits before it may run again
AuthInfo=cred_expire=$CRED_EXPIRE
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$ROOT/ctld
SlurmdSpoolDir=$ROOT/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups and no systemd in a container
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# no slurmdbd: sacct does not work, squeue/scontrol do
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
# look at pending jobs (requeued ones whose BeginTime has passed) every 2 s, not every 30/60 s
SchedulerParameters=bf_interval=2,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
# finished jobs stay visible to squeue / scontrol show job for 5 minutes
MinJobAge=300
KillWait=10
InactiveLimit=0
SlurmctldTimeout=60
SlurmdTimeout=60
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    mv "$tmp" "$CONF"
    chmod 0644 "$CONF"
    # slurmd 22.05 autodetects the cgroup plugin (it loads cgroup/v1 here and uses it for nothing, since
    # proctrack/linuxproc and task/none); CgroupPlugin=disabled only exists from 23.x, so no cgroup.conf
    if [[ -e $CONF_DIR/cgroup.conf ]] && grep -qF "$MARK" "$CONF_DIR/cgroup.conf"; then rm -f "$CONF_DIR/cgroup.conf"; fi
}

# Optional stand-in for sacct (no slurmdbd here, so the real one only says "Slurm accounting storage is
# disabled" and exits 1, and submitit's job.state stays "UNKNOWN"). It answers the one query submitit makes,
# `sacct -o JobID,State,NodeList --parsable2 -j ID [-j ID ...]`, from `scontrol show job`, which knows a job
# until MinJobAge (300 s) after it ends. Used only by whoever puts $ROOT/bin first in PATH.
write_sacct_shim() {
    mkdir -p "$ROOT/bin"
    cat >"$ROOT/bin/sacct" <<'SHIM'
#!/usr/bin/env bash
# sacct stand-in written by mamol scripts/slurm_local.sh: JobID|State|NodeList from `scontrol show job`
set -uo pipefail
ids=()
while (($#)); do
    case $1 in
        -j | --jobs) shift; IFS=, read -ra more <<<"${1:-}"; ids+=("${more[@]}") ;;
        -j* ) IFS=, read -ra more <<<"${1#-j}"; ids+=("${more[@]}") ;;
        --jobs=*) IFS=, read -ra more <<<"${1#--jobs=}"; ids+=("${more[@]}") ;;
    esac
    shift
done
echo "JobID|State|NodeList"
for id in "${ids[@]}"; do scontrol show job -o "$id" 2>/dev/null; done | awk '
    /^JobId=/ {
        delete f
        for (i = 1; i <= NF; i++) { k = $i; sub(/=.*/, "", k); v = $i; sub(/^[^=]*=/, "", v); f[k] = v }
        id = f["JobId"]
        if ("ArrayJobId" in f) {
            t = f["ArrayTaskId"]
            id = f["ArrayJobId"] "_" (t ~ /[-,%]/ ? "[" t "]" : t)
        }
        print id "|" f["JobState"] "|" f["NodeList"]
    }'
SHIM
    chmod 0755 "$ROOT/bin/sacct"
}

node_state() { sinfo -h -N -o '%t' 2>/dev/null | head -1; }

cmd_up() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    local t0=$SECONDS
    mkdir -p "$ROOT" "$LOG" "$RUN"
    install_packages
    start_munge
    write_sacct_shim
    local ctld d
    ctld=$(live_pid "$RUN/slurmctld.pid" || true)
    d=$(live_pid "$RUN/slurmd.pid" || true)
    if [[ -z $ctld || -z $d ]]; then
        [[ -n $ctld ]] || write_conf   # a running slurmctld keeps its config
        if [[ -z $ctld ]]; then
            slurmctld -i >>"$LOG/slurmctld.out" 2>&1 || die "slurmctld did not start, see $LOG/slurmctld.log"
        fi
        if [[ -z $d ]]; then
            slurmd >>"$LOG/slurmd.out" 2>&1 || die "slurmd did not start, see $LOG/slurmd.log"
        fi
    fi
    local state=""
    for _ in $(seq $((WAIT_S * 2))); do
        state=$(node_state)
        [[ $state == idle || $state == mix || $state == alloc ]] && break
        if [[ $state == down* || $state == drain* ]]; then
            scontrol update nodename="$(sinfo -h -N -o '%N' | head -1)" state=resume >/dev/null 2>&1 || true
        fi
        sleep 0.5
    done
    [[ $state == idle || $state == mix || $state == alloc ]] \
        || die "node not idle after ${WAIT_S}s (state '${state:-none}'), see $LOG/slurmctld.log and $LOG/slurmd.log"
    say "SLURM is up: node $(sinfo -h -N -o '%N' | head -1) ($(sinfo -h -N -o '%c CPUs, %m MB')), partition '$PARTITION', state $state, logs in $LOG ($((SECONDS - t0)) s)"
}

stop_pid() {  # name pidfile
    local name=$1 pid
    pid=$(live_pid "$2" || true)
    if [[ -z $pid ]]; then echo "$name not running"; return 0; fi
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; sleep 0.2; fi
    echo "$name stopped (pid $pid)"
}

cmd_down() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    local msgs=()
    if [[ -n $(live_pid "$RUN/slurmctld.pid" || true) ]] && command -v scancel >/dev/null; then
        scancel --full --quiet --user=root 2>/dev/null || true
        local all
        all=$(squeue -h -o '%i' 2>/dev/null || true)
        [[ -z $all ]] || scancel --full --quiet $all 2>/dev/null || true
        for _ in $(seq 50); do [[ -z $(squeue -h -t R,CG -o '%i' 2>/dev/null) ]] && break; sleep 0.2; done
        msgs+=("jobs cancelled")
    fi
    msgs+=("$(stop_pid slurmd "$RUN/slurmd.pid")")
    msgs+=("$(stop_pid slurmctld "$RUN/slurmctld.pid")")
    if [[ -e $RUN/munged.pid ]]; then
        msgs+=("$(stop_pid munged "$RUN/munged.pid")")
    elif munge_works; then
        msgs+=("munged not started by up, left running")
    else
        msgs+=("munged not running")
    fi
    if [[ -d $ROOT ]]; then
        find "$ROOT" -mindepth 1 -maxdepth 1 ! -name log -exec rm -rf {} +
    fi
    local joined
    joined=$(printf '%s; ' "${msgs[@]}")
    say "SLURM is down: ${joined}state under $ROOT removed (logs kept in $LOG)"
}

cmd_status() {
    command -v sinfo >/dev/null || die "slurm is not installed (run: $0 up)"
    if ! sinfo 2>/dev/null; then echo "SLURM is not up (no slurmctld answers)"; return 1; fi
    squeue
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
