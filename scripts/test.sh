#!/usr/bin/env bash
# Ferry's test command: `bash scripts/test.sh` from anywhere in a clone. CI runs exactly this
# (through .ci/run), as root, on a fresh Debian 12 machine.
#
# Phases: tools, services (libvirtd + QEMU, nfs-ganesha, s3s-fs), fmt, clippy, build, test, fuzz.
# Each prints a timing line; the first failure stops the run and names its phase.
#
# Environment:
#   FERRY_SKIP_FUZZ=1     skip the fuzz smoke run (quick local loops; CI always fuzzes)
#   FERRY_FUZZ_SECONDS    seconds per fuzz target (default 20, see scripts/fuzz-smoke.sh)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CARGO_TERM_COLOR=never
export CARGO_TERM_PROGRESS_WHEN=never
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

USE_NEXTEST=0
TEST_OUTPUT=target/test-output.log
TESTS_PASSED=0
TESTS_FAILED=0
TESTS_SKIPPED=0
CURRENT_PHASE=setup
RUN_STARTED=$(date +%s.%N)

log() {
    printf '== test.sh: %s\n' "$*"
}

seconds_since() {
    awk -v start="$1" -v now="$(date +%s.%N)" 'BEGIN { printf "%.1f", now - start }'
}

# Runs one phase; set -e still applies inside it, so its first failing command ends the run.
phase() {
    local name=$1
    shift
    CURRENT_PHASE=$name
    log "phase $name"
    local started
    started=$(date +%s.%N)
    "$@"
    log "timing: $name $(seconds_since "$started") s"
}

on_exit() {
    local rc=$?
    if ((rc != 0)); then
        log "FAILED in phase $CURRENT_PHASE (exit $rc) after $(seconds_since "$RUN_STARTED") s"
    fi
}
trap on_exit EXIT

have() {
    command -v "$1" >/dev/null 2>&1
}

# Tools the phases need. What is missing and installable is installed here, only when missing.
ensure_tools() {
    local tool
    for tool in cargo rustc; do
        have "$tool" || { log "$tool is not installed"; return 1; }
    done
    cargo fmt --version >/dev/null 2>&1 || { log "rustfmt is not installed"; return 1; }
    cargo clippy --version >/dev/null 2>&1 || { log "clippy is not installed"; return 1; }
    if cargo nextest --version >/dev/null 2>&1; then
        USE_NEXTEST=1
    else
        log "cargo-nextest not found: tests run with cargo test"
    fi
    rustc --version
    cargo --version
    if ((USE_NEXTEST)); then
        cargo nextest --version | sed -n 1p
    fi
}

run_fmt() {
    cargo fmt --all -- --check --color never
    cargo fmt --manifest-path fuzz/Cargo.toml -- --check --color never
}

run_clippy() {
    cargo clippy --workspace --all-targets -- -D warnings
}

run_checks() {
    phase fmt run_fmt
    phase clippy run_clippy
}

# Builds every test binary once, so the test phase measures tests only.
build() {
    if ((USE_NEXTEST)); then
        cargo nextest run --workspace --no-run
    else
        cargo test --workspace --no-run
    fi
}

# Runs the tests and keeps their output, from which count_tests reads the totals.
run_tests() {
    mkdir -p target
    if ((USE_NEXTEST)); then
        cargo nextest run --workspace --no-fail-fast 2>&1 | tee "$TEST_OUTPUT"
    else
        cargo test --workspace --no-fail-fast 2>&1 | tee "$TEST_OUTPUT"
    fi
    count_tests
}

# Sets TESTS_PASSED, TESTS_FAILED and TESTS_SKIPPED from nextest's summary line or from the sum
# of cargo test's "test result" lines.
count_tests() {
    local counts
    if ((USE_NEXTEST)); then
        counts=$(awk '/^ *Summary / {
                for (i = 1; i < NF; i++) {
                    w = $(i + 1); sub(/,$/, "", w)
                    if (w == "passed") p = $i; if (w == "failed") f = $i; if (w == "skipped") s = $i
                }
            } END { print p + 0, f + 0, s + 0 }' "$TEST_OUTPUT")
    else
        counts=$(awk '/^test result: / {
                for (i = 1; i < NF; i++) {
                    w = $(i + 1); sub(/[;,]$/, "", w)
                    if (w == "passed") p += $i; if (w == "failed") f += $i; if (w == "ignored") s += $i
                }
            } END { print p + 0, f + 0, s + 0 }' "$TEST_OUTPUT")
    fi
    read -r TESTS_PASSED TESTS_FAILED TESTS_SKIPPED <<<"$counts"
}

# Servers the tests use, installed when missing and started when not running: libvirtd + QEMU
# (live VM tests), s3s-fs (S3 tests start their own instance on 127.0.0.1) and nfs-ganesha with
# rpcbind (NFS tests share one server on 127.0.0.1).
ensure_services() {
    bash scripts/services/libvirt.sh ensure
    bash scripts/services/nfs.sh ensure
    bash scripts/services/s3.sh ensure
}

run_fuzz_smoke() {
    if [[ ${FERRY_SKIP_FUZZ:-0} == 1 ]]; then
        log "fuzz smoke skipped (FERRY_SKIP_FUZZ=1)"
        return 0
    fi
    bash scripts/fuzz-smoke.sh
}

main() {
    phase tools ensure_tools
    phase services ensure_services
    run_checks
    phase build build
    phase test run_tests
    phase fuzz run_fuzz_smoke
    CURRENT_PHASE=finished
    log "all phases passed in $(seconds_since "$RUN_STARTED") s"
    # The plain closing line CI reads.
    printf 'tests: %d passed, %d failed, %d skipped\n' "$TESTS_PASSED" "$TESTS_FAILED" "$TESTS_SKIPPED"
}

main "$@"
