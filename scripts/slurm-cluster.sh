#!/usr/bin/env bash
# A one-node Slurm cluster for the tests (tests/slurm.rs, issue 31): munged, slurmctld and
# slurmd from Debian's packages (slurm-wlm, munge; installed when missing, which needs root),
# configured in DIR on this host with its CPUs, no accounting database, on ports 16817 and 16818
# (not Slurm's own 6817 and 6818, so a machine's real Slurm keeps them).
#
#   bash scripts/slurm-cluster.sh start DIR   # writes DIR/slurm.conf, starts the daemons
#   SLURM_CONF=DIR/slurm.conf sbatch ...
#   bash scripts/slurm-cluster.sh stop DIR    # stops what start started
#
# `start` fails with the daemons' last log lines when they do not come up within 30 s.
set -euo pipefail
cmd="${1:?start or stop}"
dir="${2:?the cluster folder}"
conf="$dir/slurm.conf"
export SLURM_CONF="$conf"

fail() {
    echo "slurm-cluster: $*" >&2
    for f in "$dir"/log/*.log /var/log/munge/munged.log; do
        [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
    done
    exit 1
}

case "$cmd" in
start)
    if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
        [ "$(id -u)" = 0 ] || fail "slurm-wlm and munge are not installed, and installing them needs root"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q slurm-wlm munge >/dev/null ||
            { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; } ||
            fail "apt-get could not install slurm-wlm and munge"
    fi
    mkdir -p "$dir"/state "$dir"/spool "$dir"/log
    host=$(hostname -s)
    cat >"$conf" <<EOF
ClusterName=srhost-tests
SlurmctldHost=$host
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldPort=16817
SlurmdPort=16818
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=tests Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    # munged as its own user, with the socket folder and logs it insists on owning.
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        [ -f /etc/munge/munge.key ] || fail "no /etc/munge/munge.key (the munge package makes it)"
        mkdir -p /run/munge /var/log/munge /var/lib/munge
        chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
        runuser -u munge -- /usr/sbin/munged || fail "munged did not start"
        touch "$dir/munged-started"
        for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
        munge -n | unmunge >/dev/null 2>&1 || fail "munge does not answer"
    fi
    slurmctld || fail "slurmctld did not start"
    slurmd || fail "slurmd did not start"
    for _ in $(seq 60); do
        state=$(sinfo -h -o %T 2>/dev/null || true)
        [ "$state" = idle ] && { echo "slurm-cluster: one node ($host, $(nproc) CPUs) up; SLURM_CONF=$conf"; exit 0; }
        sleep 0.5
    done
    fail "the node is not idle after 30 s (sinfo: ${state:-no answer})"
    ;;
stop)
    for d in slurmd slurmctld; do
        [ -f "$dir/$d.pid" ] && kill "$(cat "$dir/$d.pid")" 2>/dev/null || true
    done
    [ -f "$dir/munged-started" ] && pkill -x munged || true
    ;;
*)
    echo "usage: slurm-cluster.sh start|stop DIR" >&2
    exit 2
    ;;
esac
