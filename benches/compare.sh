#!/usr/bin/env bash
# Ferry against the copies people make today, on this machine, with the page cache cold and warm.
#
#   bash benches/compare.sh [--size SIZE] [--dir DIR] [--ferry PATH] [--runs N] [--zstd-level N]
#
# The image is `ferry gen-image --seed 1` (about 40% holes and zeros, 30% compressible, 30%
# random), made once per size under DIR and reused. Each run times one tool writing one full
# copy of it into DIR; outputs are deleted after each run (untimed). `ferry restore` writes the
# image back from a repository holding one backup of it (cold cache only). Cold runs drop the
# page cache first (root only). Needs: ferry (built here unless --ferry), cp, qemu-img; zstd and
# restic are compared when installed.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
readonly RESTIC_DUMMY_PASSWORD=ferry-compare-dummy
readonly ALL_TOOLS=(ferry restore cp qemu zstd restic)
readonly CACHE_STATES=(cold warm)

SIZE_ARG=4G
WORK_DIR=/var/tmp/ferry-compare
FERRY=""
RUNS=1
ZSTD_LEVEL=""

SIZE_BYTES=0
IMG=""
CAN_DROP_CACHES=0
TOOLS=()
NOTES=()
declare -A TIMES=()   # "tool|cache" -> seconds of each run, space separated
declare -A OUT_KIB=() # "tool|cache" -> disk space of the last run's output, KiB

usage() {
    cat <<'EOF'
usage: bash benches/compare.sh [options]
  --size SIZE        image size: bytes or K/M/G/T (binary), e.g. 256M, 1G (default 4G)
  --dir DIR          work directory for the image and outputs (default /var/tmp/ferry-compare)
  --ferry PATH       ferry binary (default: cargo build --release -p ferry-cli)
  --runs N           runs per tool and cache state (default 1; the median is reported)
  --zstd-level N     passed to `ferry backup --zstd-level` (default: ferry's own)
EOF
}

die() {
    printf 'compare.sh: %s\n' "$*" >&2
    exit 1
}

log() {
    printf '>> %s\n' "$*" >&2
}

note() {
    NOTES+=("$*")
    printf 'note: %s\n' "$*" >&2
}

have() {
    command -v "$1" >/dev/null 2>&1
}

now() {
    date +%s.%N
}

# calc EXPR [VAR=VALUE...]: floating point arithmetic with awk.
calc() {
    local expr=$1
    shift
    local -a vars=()
    local kv
    for kv in "$@"; do
        vars+=(-v "$kv")
    done
    awk "${vars[@]}" "BEGIN { print $expr }"
}

# Same rules as ferry's own --size parser: digits, then an optional binary unit.
parse_size() {
    local s=${1^^}
    [[ $s =~ ^([0-9]+)(B|K|KB|KI|KIB|M|MB|MI|MIB|G|GB|GI|GIB|T|TB|TI|TIB)?$ ]] ||
        die "bad size '$1' (examples: 268435456, 512M, 1G)"
    local digits=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]:-B}
    local shift_by
    case ${unit:0:1} in
        B) shift_by=0 ;;
        K) shift_by=10 ;;
        M) shift_by=20 ;;
        G) shift_by=30 ;;
        T) shift_by=40 ;;
    esac
    ((10#$digits > 0)) || die "size must be positive"
    echo $((10#$digits << shift_by))
}

parse_args() {
    while (($# > 0)); do
        case $1 in
            --size) SIZE_ARG=${2:?--size needs a value}; shift 2 ;;
            --size=*) SIZE_ARG=${1#*=}; shift ;;
            --dir) WORK_DIR=${2:?--dir needs a value}; shift 2 ;;
            --dir=*) WORK_DIR=${1#*=}; shift ;;
            --ferry) FERRY=${2:?--ferry needs a value}; shift 2 ;;
            --ferry=*) FERRY=${1#*=}; shift ;;
            --runs) RUNS=${2:?--runs needs a value}; shift 2 ;;
            --runs=*) RUNS=${1#*=}; shift ;;
            --zstd-level) ZSTD_LEVEL=${2:?--zstd-level needs a value}; shift 2 ;;
            --zstd-level=*) ZSTD_LEVEL=${1#*=}; shift ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument: $1" ;;
        esac
    done
    SIZE_BYTES=$(parse_size "$SIZE_ARG")
    [[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
    [[ -z $ZSTD_LEVEL || $ZSTD_LEVEL =~ ^-?[0-9]+$ ]] || die "--zstd-level must be an integer"
    mkdir -p "$WORK_DIR"
    WORK_DIR=$(cd "$WORK_DIR" && pwd)
    IMG="$WORK_DIR/mixed-$SIZE_BYTES-seed1.img"
    rm -f "$WORK_DIR"/ferry-cold-*.json "$WORK_DIR"/ferry-warm-*.json
}

# --- setup -------------------------------------------------------------------------------------

ensure_ferry() {
    if [[ -z $FERRY ]]; then
        log "building ferry (cargo build --release -p ferry-cli)"
        (cd "$REPO_ROOT" && cargo build --release -p ferry-cli)
        FERRY="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/ferry"
    fi
    [[ -x $FERRY ]] || die "no ferry binary at $FERRY"
}

select_tools() {
    local tool
    for tool in "${ALL_TOOLS[@]}"; do
        case $tool in
            ferry | restore | cp) TOOLS+=("$tool") ;;
            *)
                if have "$(tool_command "$tool")"; then
                    TOOLS+=("$tool")
                else
                    note "$(tool_command "$tool") is not installed: skipped"
                fi
                ;;
        esac
    done
}

check_cache_dropping() {
    if [[ -w /proc/sys/vm/drop_caches ]] && sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
        CAN_DROP_CACHES=1
    else
        note "cannot drop the page cache (needs root): 'cold' runs below are NOT cold"
    fi
}

check_free_space() {
    local need=$((SIZE_BYTES + (64 << 20)))
    [[ -f $IMG ]] || need=$((need + SIZE_BYTES))
    local avail
    avail=$(df --output=avail -B1 "$WORK_DIR" | tail -n 1 | tr -d ' ')
    ((avail >= need)) ||
        die "$WORK_DIR has $((avail >> 20)) MiB free; this run needs about $((need >> 20)) MiB"
}

ensure_image() {
    if [[ -f $IMG ]] && [[ $(stat -c %s "$IMG") == "$SIZE_BYTES" ]]; then
        log "reusing $IMG (delete it to generate it again)"
        return 0
    fi
    rm -f "$IMG" "$IMG.partial"
    log "generating $IMG"
    # Under another name until complete, so an interrupted run never leaves a reusable image.
    "$FERRY" gen-image --size "$SIZE_BYTES" --out "$IMG.partial" --seed 1 >&2
    sync
    mv "$IMG.partial" "$IMG"
}

print_environment() {
    local cpu mem fs alloc_kib
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    fs=$(stat -f -c %T "$WORK_DIR")
    alloc_kib=$(du -sk "$IMG" | cut -f 1)
    echo "# Ferry comparison, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $(nproc) cores ($cpu), $mem, kernel $(uname -r)"
    echo "work dir: $WORK_DIR ($fs)"
    echo "image: $IMG, $((SIZE_BYTES >> 20)) MiB virtual, $((alloc_kib >> 10)) MiB allocated (ferry gen-image --seed 1)"
    echo "ferry: $FERRY ($("$FERRY" --version)), zstd level ${ZSTD_LEVEL:-default}"
    have qemu-img && echo "qemu-img: $(qemu-img --version | head -n 1)"
    have zstd && echo "zstd: $(zstd --version)"
    have restic && echo "restic: $(restic version)"
    echo "runs per tool and cache state: $RUNS (median reported)"
    echo "every timed command ends with sync: ferry fsyncs what it writes, so the others are timed until their output is on disk too"
    echo
}

# --- the tools: <tool>_prepare RUN (untimed), <tool>_run RUN LOG (timed), <tool>_output RUN,
# <tool>_cleanup RUN (untimed) -------------------------------------------------------------------

ferry_repo() { echo "$WORK_DIR/repo-$1"; }
ferry_prepare() {
    rm -rf "$(ferry_repo "$1")"
    "$FERRY" init --repo "$(ferry_repo "$1")" >/dev/null
}
ferry_run() {
    local -a level=()
    [[ -z $ZSTD_LEVEL ]] || level=(--zstd-level "$ZSTD_LEVEL")
    "$FERRY" backup --image "$IMG" --repo "$(ferry_repo "$1")" --json "${level[@]}" \
        >"$WORK_DIR/ferry-$1.json" 2>"$2" && sync
}
ferry_output() { ferry_repo "$1"; }
ferry_cleanup() { rm -rf "$(ferry_repo "$1")"; }

# ferry restore: the image from a repository holding one backup of it (made once, untimed), to
# a new sparse file. Cold only: its input is the repository, not the image.
restore_repo() { echo "$WORK_DIR/restore-repo"; }
restore_prepare() {
    rm -f "$WORK_DIR/restored.img"
    [[ -d $(restore_repo) ]] && return 0
    "$FERRY" init --repo "$(restore_repo)" >/dev/null
    "$FERRY" backup --image "$IMG" --repo "$(restore_repo)" >/dev/null
}
restore_run() {
    "$FERRY" restore --repo "$(restore_repo)" latest --to "$WORK_DIR/restored.img" >"$2" 2>&1 && sync
}
restore_output() { echo "$WORK_DIR/restored.img"; }
restore_cleanup() { rm -f "$WORK_DIR/restored.img"; }

cp_prepare() { rm -f "$WORK_DIR/cp.img"; }
cp_run() { cp "$IMG" "$WORK_DIR/cp.img" >"$2" 2>&1 && sync; }
cp_output() { echo "$WORK_DIR/cp.img"; }
cp_cleanup() { rm -f "$WORK_DIR/cp.img"; }

qemu_prepare() { rm -f "$WORK_DIR/convert.img"; }
qemu_run() { qemu-img convert -f raw -O raw "$IMG" "$WORK_DIR/convert.img" >"$2" 2>&1 && sync; }
qemu_output() { echo "$WORK_DIR/convert.img"; }
qemu_cleanup() { rm -f "$WORK_DIR/convert.img"; }

zstd_prepare() { rm -f "$WORK_DIR/img.zst"; }
zstd_run() { zstd -q -T0 -3 -f "$IMG" -o "$WORK_DIR/img.zst" >"$2" 2>&1 && sync; }
zstd_output() { echo "$WORK_DIR/img.zst"; }
zstd_cleanup() { rm -f "$WORK_DIR/img.zst"; }

restic_repo() { echo "$WORK_DIR/restic-$1"; }
restic_env() {
    RESTIC_PASSWORD=$RESTIC_DUMMY_PASSWORD RESTIC_CACHE_DIR="$WORK_DIR/restic-cache-$1" "${@:2}"
}
restic_prepare() {
    restic_cleanup "$1"
    restic_env "$1" restic -r "$(restic_repo "$1")" init >/dev/null
}
restic_run() { restic_env "$1" restic -r "$(restic_repo "$1")" backup "$IMG" >"$2" 2>&1 && sync; }
restic_output() { restic_repo "$1"; }
restic_cleanup() { rm -rf "$(restic_repo "$1")" "$WORK_DIR/restic-cache-$1"; }

# The command a tool id stands for.
tool_command() {
    case $1 in
        qemu) echo qemu-img ;;
        *) echo "$1" ;;
    esac
}

tool_label() {
    case $1 in
        ferry) echo "ferry backup${ZSTD_LEVEL:+ (zstd $ZSTD_LEVEL)}" ;;
        restore) echo "ferry restore" ;;
        cp) echo "cp" ;;
        qemu) echo "qemu-img convert -O raw" ;;
        zstd) echo "zstd -T0 -3" ;;
        restic) echo "restic backup (first)" ;;
    esac
}

# --- measuring ---------------------------------------------------------------------------------

set_cache_state() {
    sync
    case $1 in
        cold) ((CAN_DROP_CACHES)) && echo 3 >/proc/sys/vm/drop_caches ;;
        warm) cat "$IMG" >/dev/null ;;
    esac
    return 0
}

# measure TOOL CACHE RUN: one timed run; records seconds and the output's disk space.
measure() {
    local tool=$1 cache=$2 run=$3
    local run_log="$WORK_DIR/log-$tool-$cache-$run.txt"
    "${tool}_prepare" "$run"
    set_cache_state "$cache"
    local started finished
    started=$(now)
    if ! "${tool}_run" "$run" "$run_log"; then
        tail -n 20 "$run_log" >&2 || true
        die "$tool failed ($cache, run $run); log: $run_log"
    fi
    finished=$(now)
    local secs
    secs=$(awk -v a="$started" -v b="$finished" 'BEGIN { printf "%.3f", b - a }')
    TIMES["$tool|$cache"]+="$secs "
    OUT_KIB["$tool|$cache"]=$(du -sk "$("${tool}_output" "$run")" | cut -f 1)
    if [[ $tool == ferry ]]; then
        cp "$WORK_DIR/ferry-$run.json" "$WORK_DIR/ferry-$cache-$run.json"
    fi
    "${tool}_cleanup" "$run"
    rm -f "$run_log"
    log "$(printf '%-8s %-5s run %d: %.2f s' "$tool" "$cache" "$run" "$secs")"
}

median() {
    tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

median_of() {
    median "${TIMES["$1|$2"]}"
}

run_all() {
    local cache run tool
    for cache in "${CACHE_STATES[@]}"; do
        for ((run = 1; run <= RUNS; run++)); do
            for tool in "${TOOLS[@]}"; do
                [[ $tool == restore && $cache == warm ]] && continue
                measure "$tool" "$cache" "$run"
            done
        done
    done
}

# --- report ------------------------------------------------------------------------------------

print_table() {
    local mib
    mib=$(calc 's / 1048576' s="$SIZE_BYTES")
    printf '%-28s %-5s %9s %9s %7s %10s  %s\n' tool cache seconds 'MiB/s' 'vs cp' 'out MiB' runs
    local cache tool secs cp_secs
    for cache in "${CACHE_STATES[@]}"; do
        cp_secs=$(median_of cp "$cache")
        for tool in "${TOOLS[@]}"; do
            [[ -n ${TIMES["$tool|$cache"]:-} ]] || continue
            secs=$(median_of "$tool" "$cache")
            printf '%-28s %-5s %9.2f %9.1f %7.2f %10.1f  %s\n' \
                "$(tool_label "$tool")" "$cache" "$secs" \
                "$(calc 'm / s' m="$mib" s="$secs")" \
                "$(calc 's / c' s="$secs" c="$cp_secs")" \
                "$(calc 'k / 1024' k="${OUT_KIB["$tool|$cache"]}")" \
                "${TIMES["$tool|$cache"]% }"
        done
    done
    echo "(seconds: median wall time; MiB/s: image virtual size / seconds; vs cp: seconds / cp's seconds in the same cache state; out MiB: disk space of the output)"
}

print_ratios() {
    local ferry_cold cp_cold
    ferry_cold=$(median_of ferry cold)
    cp_cold=$(median_of cp cold)
    echo
    printf 'ferry/cp cold = %.2f\n' "$(calc 'f / c' f="$ferry_cold" c="$cp_cold")"
    printf 'ferry restore/cp cold = %.2f\n' \
        "$(calc 'r / c' r="$(median_of restore cold)" c="$cp_cold")"
    if [[ -n ${TIMES["restic|cold"]:-} ]]; then
        printf 'restic/ferry cold = %.2f\n' "$(calc 'r / f' r="$(median_of restic cold)" f="$ferry_cold")"
    fi
    echo "(time ratios: below 1 means the first tool is faster)"
}

print_ferry_json() {
    echo
    echo "ferry backup --json (cold, run 1):"
    cat "$WORK_DIR/ferry-cold-1.json"
}

print_notes() {
    local n
    ((${#NOTES[@]} > 0)) || return 0
    echo
    for n in "${NOTES[@]}"; do
        echo "note: $n"
    done
}

cleanup_outputs() {
    local run
    for ((run = 1; run <= RUNS; run++)); do
        rm -rf "$(ferry_repo "$run")" "$(restic_repo "$run")" "$WORK_DIR/restic-cache-$run" \
            "$WORK_DIR/ferry-$run.json"
    done
    rm -rf "$(restore_repo)"
    rm -f "$WORK_DIR/cp.img" "$WORK_DIR/convert.img" "$WORK_DIR/img.zst" "$WORK_DIR/restored.img"
}

main() {
    parse_args "$@"
    trap cleanup_outputs EXIT
    ensure_ferry
    select_tools
    check_cache_dropping
    check_free_space
    ensure_image
    note "ferry reads with O_DIRECT, so a warm page cache does not speed up its reads"
    print_environment
    run_all
    print_table
    print_ratios
    print_ferry_json
    print_notes
}

main "$@"
