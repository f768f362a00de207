#!/usr/bin/env bash
# The S3-compatible server Ferry's tests run against: s3s-fs (checks SigV4 signatures, supports
# conditional put). Tests start their own instance on 127.0.0.1; this script only installs it.
#
#   bash scripts/services/s3.sh ensure     install s3s-fs 0.14.1 into ~/.cargo/bin when missing
#   bash scripts/services/s3.sh status
#
# 0.14.1 is the newest release that builds with this project's toolchain (rustc 1.95).
set -euo pipefail

readonly VERSION=0.14.1
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

installed() {
    command -v s3s-fs >/dev/null 2>&1
}

case "${1:-}" in
ensure)
    if installed; then
        echo "== s3.sh: s3s-fs present ($(command -v s3s-fs))"
    else
        echo "== s3.sh: installing s3s-fs $VERSION (cargo install, a few minutes)"
        started=$(date +%s)
        cargo install s3s-fs --version "$VERSION" --features binary --locked
        echo "== s3.sh: installed in $(($(date +%s) - started)) s"
    fi
    ;;
status)
    if installed; then echo "s3s-fs: $(command -v s3s-fs)"; else echo "s3s-fs: missing"; exit 1; fi
    ;;
*)
    echo "usage: bash scripts/services/s3.sh ensure|status" >&2
    exit 2
    ;;
esac
