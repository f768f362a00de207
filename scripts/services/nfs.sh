#!/usr/bin/env bash
# The NFS server Ferry's tests run against: nfs-ganesha 4 (VFS backend) on 127.0.0.1, NFSv3 over
# TCP, with rpcbind so clients find the MOUNT service. The machine's kernel has no NFS server (or
# client), and Ferry needs neither: it speaks NFSv3 from user space.
#
#   bash scripts/services/nfs.sh ensure    install when missing, start rpcbind and ganesha when
#                                          not running, wait until the NFS service is registered
#   bash scripts/services/nfs.sh status    exit 0 when ready, 3 when not
#   bash scripts/services/nfs.sh stop      stop ganesha (rpcbind stays)
#   bash scripts/services/nfs.sh url       print the repository URL prefix of the test export
#
# Exports (directories under $FERRY_NFS_ROOT, default /var/lib/ferry/nfs-test):
#   export/    read-write, root not squashed:  nfs://127.0.0.1/<root>/export/...
#   readonly/  read-only                       (tests of a refused write)
#   squashed/  every user mapped to nobody; squashed/private/ is root's, 0700 (tests of
#              credentials the server does not accept for a directory)
# Each test works in a fresh random subdirectory of export/, so parallel test processes share one
# server. `ensure` is idempotent and takes a lock, so tests may call it themselves.
#
# Ports: NFS 2049, MOUNT 20048 (both registered with rpcbind on 111). Fresh install ~15-25 s;
# ganesha starts in well under a second (Graceless = true).
set -euo pipefail

PROG="nfs.sh"
ROOT=${FERRY_NFS_ROOT:-/var/lib/ferry/nfs-test}
CONF=$ROOT/ganesha.conf
PIDFILE=$ROOT/ganesha.pid
LOGFILE=$ROOT/ganesha.log
LOCK_FILE=/run/ferry-nfs.lock
PACKAGES=(nfs-ganesha nfs-ganesha-vfs rpcbind)

log() { printf '== %s: %s\n' "$PROG" "$*" >&2; }
die() { printf '== %s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v s="$1" -v n="$(now)" 'BEGIN { printf "%.2f", n - s }'; }

missing_packages() {
    local name missing=()
    for name in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${db:Status-Status}' "$name" 2>/dev/null | grep -qx installed || missing+=("$name")
    done
    ((${#missing[@]} == 0)) || { printf '%s\n' "${missing[@]}"; return 1; }
}

install_packages() {
    local t
    t=$(now)
    # The release's own packages: the configured sources serve them.
    apt-get -qq -o DPkg::Lock::Timeout=300 update >&2
    DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends \
        --no-remove install "${PACKAGES[@]}" >&2
    log "timing: install $(since "$t") s"
}

registered() {
    rpcinfo -p 127.0.0.1 2>/dev/null | grep -Eq '100003 +3 +tcp +2049'
}

ganesha_pid() {
    local pid
    [[ -f $PIDFILE ]] || return 1
    pid=$(tr -dc '0-9' <"$PIDFILE")
    [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == ganesha.nfsd ]] || return 1
    printf '%s\n' "$pid"
}

# The ganesha configuration this script runs with.
render_config() {
    cat <<EOF
# Written by scripts/services/nfs.sh; Ferry's test NFS server.
NFS_CORE_PARAM {
    Bind_addr = 127.0.0.1;
    NFS_Port = 2049;
    MNT_Port = 20048;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
    Protocols = 3, 4;
}
NFSV4 {
    Graceless = true;
    RecoveryBackend = fs;
    RecoveryRoot = $ROOT/recovery;
    Only_Numeric_Owners = true;
}
NFS_KRB5 { Active_krb5 = false; }
EXPORT {
    Export_Id = 1; Path = $ROOT/export; Pseudo = /ferry-test;
    Access_Type = RW; Squash = No_Root_Squash; SecType = sys;
    Protocols = 3, 4; Transports = TCP; FSAL { Name = VFS; }
}
EXPORT {
    Export_Id = 2; Path = $ROOT/readonly; Pseudo = /ferry-test-ro;
    Access_Type = RO; Squash = No_Root_Squash; SecType = sys;
    Protocols = 3, 4; Transports = TCP; FSAL { Name = VFS; }
}
EXPORT {
    Export_Id = 3; Path = $ROOT/squashed; Pseudo = /ferry-test-squashed;
    Access_Type = RW; Squash = All_Squash; Anonymous_Uid = 65534; Anonymous_Gid = 65534;
    SecType = sys; Protocols = 3, 4; Transports = TCP; FSAL { Name = VFS; }
}
EOF
}

config_current() {
    [[ -f $CONF ]] && [[ "$(render_config)" == "$(cat "$CONF")" ]]
}

write_config() {
    install -d -m 0700 "$ROOT" "$ROOT/recovery"
    install -d -m 0755 "$ROOT/export" "$ROOT/readonly" "$ROOT/squashed"
    install -d -m 0700 "$ROOT/squashed/private"
    render_config >"$CONF.new"
    mv "$CONF.new" "$CONF"
}

start_rpcbind() {
    if rpcinfo -p 127.0.0.1 >/dev/null 2>&1; then
        return 0
    fi
    # `rpcbind -h 127.0.0.1` crashes on bookworm; -f keeps it in the foreground of its subshell.
    (setsid rpcbind -f -w </dev/null >/dev/null 2>&1 9>&- &)
    local i
    for ((i = 0; i < 100; i++)); do
        rpcinfo -p 127.0.0.1 >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "rpcbind did not answer on 127.0.0.1:111 within 10 s"
}

start_ganesha() {
    rm -f "$PIDFILE"
    (setsid ganesha.nfsd -F -f "$CONF" -L "$LOGFILE" -p "$PIDFILE" -N NIV_EVENT </dev/null >/dev/null 2>&1 9>&- &)
    local i
    for ((i = 0; i < 300; i++)); do
        registered && return 0
        sleep 0.1
    done
    tail -n 20 "$LOGFILE" >&2 || true
    die "ganesha did not register NFSv3 with rpcbind within 30 s (log: $LOGFILE)"
}

cmd_ensure() {
    local t0
    t0=$(now)
    ((EUID == 0)) || die "must run as root"
    if missing_packages >/dev/null && ganesha_pid >/dev/null && registered && config_current; then
        log "ready (already running); timing: ensure $(since "$t0") s"
        return 0
    fi
    install -d -m 0700 "$(dirname "$ROOT")"
    exec 9>"$LOCK_FILE"
    flock -w 600 9 || die "another '$PROG ensure' holds $LOCK_FILE"
    if ! missing_packages >/dev/null; then
        log "installing: $(missing_packages | tr '\n' ' ')"
        install_packages
        missing_packages >/dev/null || die "still missing after install: $(missing_packages | tr '\n' ' ')"
    fi
    if ganesha_pid >/dev/null && registered && config_current; then
        log "ready (started by another ensure); timing: ensure $(since "$t0") s"
        return 0
    fi
    if ganesha_pid >/dev/null; then
        log "ganesha runs with another configuration or is not registered: restarting it"
        cmd_stop
    fi
    write_config
    start_rpcbind
    start_ganesha
    log "ready: NFSv3 on 127.0.0.1:2049, exports under $ROOT; timing: ensure $(since "$t0") s"
}

cmd_stop() {
    local pid i
    pid=$(ganesha_pid) || { log "ganesha is not running"; return 0; }
    kill "$pid"
    for ((i = 0; i < 100; i++)); do
        [[ -d /proc/$pid ]] || { rm -f "$PIDFILE"; return 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
}

cmd_status() {
    local ready=1 pid
    if missing_packages >/dev/null; then echo "packages: installed"; else echo "packages: missing $(missing_packages | tr '\n' ' ')"; ready=0; fi
    if pid=$(ganesha_pid); then echo "ganesha: running (pid $pid)"; else echo "ganesha: stopped"; ready=0; fi
    if registered; then echo "rpcbind: NFSv3 registered on 2049"; else echo "rpcbind: NFSv3 not registered"; ready=0; fi
    ((ready)) && { echo "ready"; return 0; }
    echo "not ready"
    return 3
}

case ${1:-} in
    ensure) cmd_ensure ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    url) printf 'nfs://127.0.0.1%s/export\n' "$ROOT" ;;
    *) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
