#!/usr/bin/env bash
# Bounded libFuzzer run of Ferry's fuzz targets (fuzz/fuzz_targets/*.rs).
#
#   bash scripts/fuzz-smoke.sh [TARGET...]      (default: every target in fuzz/)
#
# Environment:
#   FERRY_FUZZ_SECONDS    seconds per target (default 20)
#   FERRY_FUZZ_SANITIZER  address (default) or none
#
# Only a stable toolchain exists here. cargo-fuzz's default AddressSanitizer build passes
# `-Zsanitizer=address`, which stable rustc accepts only with RUSTC_BOOTSTRAP=1; that variable
# is set for the cargo-fuzz commands alone, never for the rest of the build. `--sanitizer none`
# needs nothing extra but misses memory errors in unsafe code (it still catches panics).
#
# Corpora (fuzz/corpus) and crash inputs (fuzz/artifacts) are gitignored. Exits non-zero when a
# target finds a crash, a leak or a timeout, and prints how to reproduce it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Pinned: newer cargo-fuzz releases may need a newer rustc than the one this project uses.
readonly CARGO_FUZZ_VERSION=0.13.2
readonly SECONDS_PER_TARGET=${FERRY_FUZZ_SECONDS:-20}
readonly SANITIZER=${FERRY_FUZZ_SANITIZER:-address}

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

log() {
    printf 'fuzz-smoke: %s\n' "$*"
}

ensure_cargo_fuzz() {
    if command -v cargo-fuzz >/dev/null 2>&1; then
        return 0
    fi
    log "cargo-fuzz missing: installing $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
}

# Runs cargo fuzz with the flags this toolchain needs.
cargo_fuzz() {
    local subcommand=$1
    shift
    if [[ $SANITIZER == none ]]; then
        cargo fuzz "$subcommand" --sanitizer none "$@"
    else
        RUSTC_BOOTSTRAP=1 cargo fuzz "$subcommand" --sanitizer "$SANITIZER" "$@"
    fi
}

list_targets() {
    cargo fuzz list
}

# Runs one target for SECONDS_PER_TARGET seconds. -timeout makes a hang a finding instead of
# eating the whole budget; -rss_limit_mb makes unbounded allocation a finding.
run_target() {
    local target=$1
    mkdir -p "fuzz/corpus/$target"
    cargo_fuzz run "$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -print_final_stats=1
}

main() {
    ensure_cargo_fuzz

    local -a targets
    if (($# > 0)); then
        targets=("$@")
    else
        mapfile -t targets < <(list_targets)
    fi
    if ((${#targets[@]} == 0)); then
        log "no fuzz targets found in fuzz/"
        return 1
    fi

    log "building the fuzz targets (sanitizer: $SANITIZER)"
    cargo_fuzz build

    local -a failed=()
    local target
    for target in "${targets[@]}"; do
        log "running $target for ${SECONDS_PER_TARGET}s"
        if run_target "$target"; then
            log "$target: ok"
        else
            log "$target: FAILED (inputs in fuzz/artifacts/$target/)"
            failed+=("$target")
        fi
    done

    if ((${#failed[@]} > 0)); then
        log "crashing targets: ${failed[*]}"
        local env_prefix=""
        [[ $SANITIZER == none ]] || env_prefix="RUSTC_BOOTSTRAP=1 "
        log "reproduce: ${env_prefix}cargo fuzz run --sanitizer $SANITIZER TARGET fuzz/artifacts/TARGET/crash-..."
        return 1
    fi
    log "all ${#targets[@]} targets ran ${SECONDS_PER_TARGET}s without a finding"
}

main "$@"
