#!/usr/bin/env bash
# libvirt + QEMU for Ferry's integration tests, on Debian 12 without systemd, as root.
#
#   bash scripts/services/libvirt.sh ensure   install when missing, configure, start the daemons,
#                                             wait until `virsh -c qemu:///system version` answers
#   bash scripts/services/libvirt.sh status   what is installed and running (exit 0 when ready, 3 if not)
#   bash scripts/services/libvirt.sh stop     stop libvirtd and virtlogd (running QEMU processes stay)
#
# `ensure` is idempotent: when everything is installed, configured and answering it only checks
# (well under a second). It prints one timing line per step it had to do.
#
# Why a private apt sources list: the machine ships qemu-utils 10 from <codename>-backports, and
# qemu-utils 10 `Breaks: qemu-system-common (<< 8.0)`, so installing qemu-system-x86 7.2 from the
# release REMOVES qemu-utils. The configured sources hold neither backports nor any pin, so the
# script builds a sources list of its own at run time from the configured Debian URIs (release,
# -updates, -backports, and the security URI with -security), points apt at it with
# Dir::Etc::sourcelist / sourceparts / Dir::State::lists, and asks for the QEMU system packages from
# backports by name. libvirt itself comes from the release (9.0), with libvirt-daemon-system-sysv
# (not -systemd, which would pull in systemd). `--no-remove` makes apt refuse any plan that removes a
# package, and the qemu-img version is checked afterwards. Fresh install ~25-33 s (21 MB download).
#
# Configuration: qemu.conf gets user = "root" and group = "root" (no udev, so /dev/kvm is root-only);
# libvirtd is restarted when that changes. The daemons are started with `virtlogd -d` and
# `libvirtd -d` (pid files /run/virtlogd.pid, /run/libvirtd.pid; stale ones are removed); libvirtd
# logs warnings to /var/log/libvirt/libvirtd.log. First start ~8.5 s (QEMU capability probe), later
# starts ~0.3 s.
#
# Environment:
#   FERRY_LIBVIRT_STATE   private apt state (sources list, package lists); default /var/lib/ferry/apt
#   FERRY_LIBVIRT_WAIT    seconds to wait for libvirtd to answer; default 90
set -euo pipefail

PROG="libvirt.sh"
STATE_DIR=${FERRY_LIBVIRT_STATE:-/var/lib/ferry/apt}
WAIT_SECONDS=${FERRY_LIBVIRT_WAIT:-90}
URI="qemu:///system"
QEMU_CONF=/etc/libvirt/qemu.conf
LIBVIRTD_PID=/run/libvirtd.pid
VIRTLOGD_PID=/run/virtlogd.pid
LIBVIRTD_LOG=/var/log/libvirt/libvirtd.log
LOCK_FILE=/run/ferry-libvirt.lock

log() { printf '== %s: %s\n' "$PROG" "$*" >&2; }
die() { printf '== %s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v s="$1" -v n="$(now)" 'BEGIN { printf "%.2f", n - s }'; }

codename() {
    local c=""
    if [[ -r /etc/os-release ]]; then
        c=$(sed -n 's/^VERSION_CODENAME=["'\'']\{0,1\}\([a-z0-9]*\).*/\1/p' /etc/os-release)
    fi
    printf '%s' "${c:-bookworm}"
}

# Packages `ensure` installs. The QEMU system packages come from backports so that they match the
# preinstalled qemu-utils 10 (see the header).
packages() {
    local bpo
    bpo="$(codename)-backports"
    # libvirt-daemon-system-sysv satisfies libvirt-daemon-system's init dependency without pulling
    # in systemd (the -systemd alternative brings 8 systemd packages to a machine that has no
    # systemd running).
    printf '%s\n' libvirt-daemon-system libvirt-daemon-system-sysv libvirt-clients libvirt-dev pkg-config \
        "qemu-system-x86/$bpo" "qemu-system-common/$bpo" "qemu-system-data/$bpo" "seabios/$bpo"
    # A machine without qemu-utils gets the same QEMU generation for qemu-img.
    if ! dpkg-query -W -f='${db:Status-Status}' qemu-utils 2>/dev/null | grep -qx installed; then
        printf '%s\n' "qemu-utils/$bpo"
    fi
}

# ---------------------------------------------------------------------------------------------
# Checks (cheap: used by the fast path of `ensure` and by `status`)

# Prints what is missing; exit status 0 when nothing is.
missing_packages() {
    local names=(libvirt-daemon-system libvirt-clients libvirt-dev pkg-config qemu-system-x86
        qemu-system-common qemu-system-data seabios qemu-utils)
    local missing=() out name status version
    out=$(dpkg-query -W -f='${Package} ${db:Status-Status} ${Version}\n' "${names[@]}" 2>/dev/null || true)
    for name in "${names[@]}"; do
        read -r status version < <(awk -v n="$name" '$1 == n { print $2, $3 }' <<<"$out") || true
        if [[ ${status:-} != installed ]]; then
            missing+=("$name")
        elif [[ $name == qemu-system-x86 ]] && dpkg --compare-versions "$version" lt 1:8; then
            missing+=("$name(>=8, have $version)")
        fi
        status="" version=""
    done
    if ((${#missing[@]})); then
        printf '%s\n' "${missing[@]}"
        return 1
    fi
    return 0
}

conf_ok() {
    [[ -r $QEMU_CONF ]] && awk '
        /^[ \t]*(user|group)[ \t]*=/ {
            k = $0; sub(/[ \t]*=.*/, "", k); gsub(/[ \t]/, "", k)
            v = $0; sub(/^[^=]*=[ \t]*/, "", v); sub(/[ \t]*(#.*)?$/, "", v)
            if (v == "\"root\"") ok[k] = 1; else bad = 1
        }
        END { exit !(ok["user"] && ok["group"] && !bad) }' "$QEMU_CONF"
}

# Prints the pid when the daemon NAME (pid file FILE) is alive; removes a stale pid file.
daemon_pid() {
    local name=$1 file=$2 pid comm
    [[ -f $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file" 2>/dev/null || true)
    if [[ -n $pid ]] && [[ -r /proc/$pid/comm ]]; then
        comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
        if [[ $comm == "$name" ]]; then
            printf '%s\n' "$pid"
            return 0
        fi
    fi
    log "removing stale pid file $file (pid '${pid}' is not $name)"
    rm -f "$file"
    return 1
}

virsh_answers() {
    command -v virsh >/dev/null 2>&1 || return 1
    timeout 10 virsh -c "$URI" version >/dev/null 2>&1
}

kvm_usable() {
    [[ -c /dev/kvm ]] && [[ -r /dev/kvm && -w /dev/kvm ]]
}

# ---------------------------------------------------------------------------------------------
# Install

# Reads the configured apt sources (deb822 *.sources and one-line *.list / sources.list) and prints
# "main URI SIGNED_BY COMPONENTS" and "security URI SIGNED_BY COMPONENTS" for the first Debian
# entries that serve CODENAME. SIGNED_BY is a keyring path or "-".
configured_uris() {
    local code=$1 files=()
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] && files+=("$f")
    done
    ((${#files[@]})) || return 0
    awk -v code="$code" '
        function emit(types, uris, suites, comps, signed,   n, i, u, s, kind, serves, nu) {
            if (types !~ /(^|[ \t])deb([ \t]|$)/) return
            if (signed == "" || signed !~ /^\//) signed = "-"
            if (comps == "") comps = "main"
            serves = 0; kind = "main"
            n = split(suites, s, /[ \t]+/)
            for (i = 1; i <= n; i++) {
                if (s[i] == code || index(s[i], code "-") == 1) serves = 1
                if (s[i] ~ /-security$/ || s[i] ~ /\/updates$/) kind = "security"
            }
            if (!serves) return
            nu = split(uris, u, /[ \t]+/)
            for (i = 1; i <= nu; i++) {
                if (u[i] == "") continue
                if (!(kind in seen)) { seen[kind] = 1; print kind, u[i], signed, comps }
            }
        }
        function flush() {
            if (enabled != "no" && uris != "") emit(types, uris, suites, comps, signed)
            types = uris = suites = comps = signed = enabled = ""; key = ""
        }
        FNR == 1 { flush(); deb822 = (FILENAME ~ /\.sources$/) }
        deb822 {
            if ($0 ~ /^[ \t]*#/) next
            if ($0 ~ /^[ \t]*$/) { flush(); next }
            if ($0 ~ /^[ \t]/) next               # continuation line (inline key etc.)
            key = tolower($0); sub(/:.*/, "", key)
            val = $0; sub(/^[^:]*:[ \t]*/, "", val); sub(/[ \t]+$/, "", val)
            if (key == "types") types = val
            else if (key == "uris") uris = val
            else if (key == "suites") suites = val
            else if (key == "components") comps = val
            else if (key == "signed-by") signed = val
            else if (key == "enabled") enabled = tolower(val)
            next
        }
        !deb822 {
            line = $0; sub(/#.*/, "", line)
            if (line !~ /^[ \t]*deb[ \t]/) next
            opts = ""; sgn = ""
            if (match(line, /\[[^]]*\]/)) {
                opts = substr(line, RSTART + 1, RLENGTH - 2)
                line = substr(line, 1, RSTART - 1) " " substr(line, RSTART + RLENGTH)
                if (match(opts, /signed-by=[^ \t]+/)) sgn = substr(opts, RSTART + 10, RLENGTH - 10)
            }
            n = split(line, w, /[ \t]+/)
            k = 0; delete f
            for (i = 1; i <= n; i++) if (w[i] != "") f[++k] = w[i]
            cs = ""
            for (i = 4; i <= k; i++) cs = cs (cs == "" ? "" : " ") f[i]
            emit("deb", f[2], f[3], cs, sgn)
        }
        END { flush() }
    ' "${files[@]}"
}

write_private_sources() {
    local code=$1 list=$2 kind uri signed comps opt found_main=0 found_sec=0 suite
    : >"$list.new"
    while read -r kind uri signed comps; do
        opt=""
        [[ $signed != "-" ]] && opt="[signed-by=$signed] "
        if [[ $kind == main ]]; then
            found_main=1
            for suite in "$code" "$code-updates" "$code-backports"; do
                printf 'deb %s%s %s %s\n' "$opt" "$uri" "$suite" "$comps" >>"$list.new"
            done
        else
            found_sec=1
            printf 'deb %s%s %s %s\n' "$opt" "$uri" "$code-security" "$comps" >>"$list.new"
        fi
    done < <(configured_uris "$code")
    ((found_main)) || die "no Debian URI serving '$code' in /etc/apt/sources.list{,.d}"
    ((found_sec)) || log "note: no security URI configured; going on without $code-security"
    mv "$list.new" "$list"
}

install_packages() {
    local code list lists t apt_opts before after
    code=$(codename)
    list="$STATE_DIR/sources.list"
    lists="$STATE_DIR/lists"
    mkdir -p "$lists/partial"
    write_private_sources "$code" "$list"
    log "private apt sources ($list):"
    sed 's/^/    /' "$list" >&2
    apt_opts=(-o "Dir::Etc::sourcelist=$list" -o "Dir::Etc::sourceparts=-" -o "Dir::State::lists=$lists"
        -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Get::Allow-Downgrades=false"
        -o "Dpkg::Options::=--force-confdef" -o "Dpkg::Options::=--force-confold"
        -o "DPkg::Lock::Timeout=300")
    before=$(qemu-img --version 2>/dev/null | sed -n 1p || true)

    t=$(now)
    apt-get "${apt_opts[@]}" -qq update >&2
    log "timing: apt-get update (private lists) $(since "$t") s"

    t=$(now)
    local pkgs
    mapfile -t pkgs < <(packages)
    log "installing: ${pkgs[*]}"
    # --no-remove: abort instead of removing anything (qemu-utils 10 must stay).
    DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" -y -q --no-install-recommends --no-remove \
        install "${pkgs[@]}" >&2
    log "timing: apt-get install $(since "$t") s"

    after=$(qemu-img --version 2>/dev/null | sed -n 1p || true)
    [[ -n $after ]] || die "qemu-img is gone after the install (was: ${before:-none})"
    local major
    major=$(sed -n 's/^qemu-img version \([0-9]*\)\..*/\1/p' <<<"$after")
    if [[ -z $major ]] || ((major < 8)); then
        die "qemu-img is now '$after' (was: ${before:-none})"
    fi
    log "qemu-img after install: $after"
}

# ---------------------------------------------------------------------------------------------
# Configure and start

# Sets user = "root" and group = "root" in qemu.conf (no udev here: /dev/kvm is root:root 0600).
# Rewrites an existing active setting, appends one otherwise; never appends twice.
# Exit status 0 when the file changed.
configure_qemu_conf() {
    [[ -f $QEMU_CONF ]] || die "$QEMU_CONF is missing (is libvirt-daemon-driver-qemu installed?)"
    conf_ok && return 1
    local key tmp
    tmp=$(mktemp "$QEMU_CONF.XXXXXX")
    cp -p "$QEMU_CONF" "$tmp"
    for key in user group; do
        if grep -Eq "^[[:space:]]*${key}[[:space:]]*=" "$tmp"; then
            sed -Ei "s/^[[:space:]]*${key}[[:space:]]*=.*/${key} = \"root\"/" "$tmp"
        else
            printf '%s = "root"   # set by Ferry scripts/services/libvirt.sh\n' "$key" >>"$tmp"
        fi
    done
    mv "$tmp" "$QEMU_CONF"
    log "configured $QEMU_CONF: user = \"root\", group = \"root\""
    return 0
}

start_virtlogd() {
    daemon_pid virtlogd "$VIRTLOGD_PID" >/dev/null && return 0
    virtlogd -d 9>&-  # the ensure lock (fd 9) must not outlive this script
    local i
    for ((i = 0; i < 50; i++)); do
        daemon_pid virtlogd "$VIRTLOGD_PID" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "virtlogd did not start (no live pid in $VIRTLOGD_PID)"
}

start_libvirtd() {
    daemon_pid libvirtd "$LIBVIRTD_PID" >/dev/null && return 0
    mkdir -p "$(dirname "$LIBVIRTD_LOG")"
    # Without systemd/journald the daemon logs nowhere useful unless told.
    LIBVIRT_LOG_OUTPUTS="3:file:$LIBVIRTD_LOG" libvirtd -d 9>&-
}

wait_for_virsh() {
    local t i
    t=$(now)
    for ((i = 0; i < WAIT_SECONDS * 5; i++)); do
        if virsh_answers; then
            log "timing: libvirtd answered after $(since "$t") s"
            return 0
        fi
        if ! daemon_pid libvirtd "$LIBVIRTD_PID" >/dev/null 2>&1 && ((i > 25)); then
            tail -n 20 "$LIBVIRTD_LOG" >&2 2>/dev/null || true
            die "libvirtd died while starting (log: $LIBVIRTD_LOG)"
        fi
        sleep 0.2
    done
    tail -n 20 "$LIBVIRTD_LOG" >&2 2>/dev/null || true
    die "virsh -c $URI version did not answer within $WAIT_SECONDS s"
}

stop_daemon() {
    local name=$1 file=$2 pid i
    pid=$(daemon_pid "$name" "$file" 2>/dev/null) || { log "$name is not running"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
    done
    if [[ -d /proc/$pid ]]; then
        log "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$file"
    log "stopped $name (pid $pid)"
}

# ---------------------------------------------------------------------------------------------
# Subcommands

cmd_ensure() {
    local t0 t
    t0=$(now)
    ((EUID == 0)) || die "must run as root"

    # Fast path: nothing to do.
    if missing_packages >/dev/null && conf_ok &&
        daemon_pid virtlogd "$VIRTLOGD_PID" >/dev/null 2>&1 &&
        daemon_pid libvirtd "$LIBVIRTD_PID" >/dev/null 2>&1 && virsh_answers; then
        log "ready (already running; kvm $(kvm_usable && echo usable || echo unusable)); timing: ensure $(since "$t0") s"
        return 0
    fi

    # One `ensure` at a time (parallel test processes, a second terminal).
    exec 9>"$LOCK_FILE"
    flock -w 600 9 || die "another '$PROG ensure' holds $LOCK_FILE"

    local missing
    if ! missing=$(missing_packages); then
        log "missing: $(tr '\n' ' ' <<<"$missing")"
        t=$(now)
        install_packages
        log "timing: install $(since "$t") s"
        missing_packages >/dev/null || die "still missing after install: $(missing_packages | tr '\n' ' ')"
    fi

    local restart=0
    if configure_qemu_conf; then restart=1; fi

    if ((restart)) && daemon_pid libvirtd "$LIBVIRTD_PID" >/dev/null 2>&1; then
        log "qemu.conf changed: restarting libvirtd"
        stop_daemon libvirtd "$LIBVIRTD_PID"
    fi

    t=$(now)
    start_virtlogd
    start_libvirtd
    wait_for_virsh
    log "timing: start $(since "$t") s"

    kvm_usable || log "note: /dev/kvm is not usable here: domains must use type='qemu' (TCG)"
    log "ready: libvirt $(virsh -c "$URI" version 2>/dev/null | sed -n 's/^Using library: libvirt //p'), $(virsh -c "$URI" version 2>/dev/null | sed -n 's/^Running hypervisor: //p')"
    log "timing: ensure $(since "$t0") s"
}

cmd_stop() {
    ((EUID == 0)) || die "must run as root"
    # QEMU processes outlive the daemons, but their stdout/stderr pipe into virtlogd: once it is
    # gone they log nothing more (e.g. the output of the monitor's qemu-io) until restarted.
    local running
    running=$(pgrep -c -f "^[^ ]*qemu-system-" 2>/dev/null || true)
    if [[ ${running:-0} != 0 ]]; then
        log "note: $running QEMU process(es) still running; they keep running but lose their log"
    fi
    stop_daemon libvirtd "$LIBVIRTD_PID"
    stop_daemon virtlogd "$VIRTLOGD_PID"
}

cmd_status() {
    local ready=1 missing pid
    if missing=$(missing_packages); then
        echo "packages: installed"
    else
        echo "packages: missing $(tr '\n' ' ' <<<"$missing")"
        ready=0
    fi
    dpkg-query -W -f='  ${Package} ${Version}\n' libvirt-daemon qemu-system-x86 qemu-utils 2>/dev/null || true
    if conf_ok; then echo "qemu.conf: user/group root"; else echo "qemu.conf: not configured"; ready=0; fi
    if pid=$(daemon_pid virtlogd "$VIRTLOGD_PID" 2>/dev/null); then echo "virtlogd: running (pid $pid)"; else echo "virtlogd: stopped"; ready=0; fi
    if pid=$(daemon_pid libvirtd "$LIBVIRTD_PID" 2>/dev/null); then echo "libvirtd: running (pid $pid)"; else echo "libvirtd: stopped"; ready=0; fi
    if virsh_answers; then
        echo "virsh: answers ($(virsh -c "$URI" version 2>/dev/null | sed -n 's/^Running hypervisor: //p'))"
    else
        echo "virsh: no answer"
        ready=0
    fi
    if kvm_usable; then echo "kvm: /dev/kvm usable"; else echo "kvm: unusable (TCG only)"; fi
    ((ready)) && { echo "ready"; return 0; }
    echo "not ready"
    return 3
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit 2
}

case ${1:-} in
    ensure) cmd_ensure ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    -h | --help | help) usage ;;
    *) usage ;;
esac
