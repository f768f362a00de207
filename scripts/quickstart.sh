#!/usr/bin/env bash
# Quick start: build ferry, make a sample disk image, back it up into a local repository,
# list, verify and restore it, and check the restored image is byte-identical.
#
#   bash scripts/quickstart.sh [WORKDIR]      (default WORKDIR: ./ferry-demo)
#
# Environment: FERRY_DEMO_SIZE (default 1G) sets the sample image size.
set -euo pipefail

cd "$(dirname "$0")/.."
work=${1:-ferry-demo}
size=${FERRY_DEMO_SIZE:-1G}

step() { printf '\n==> %s\n' "$*"; }

step "building ferry (release)"
cargo build --release --locked -p ferry-cli
ferry=$PWD/target/release/ferry

mkdir -p "$work"
chmod 700 "$work"
cd "$work"
rm -rf repo restored.img
if [ ! -f sample.img ]; then
  step "generating a $size sample image (holes, zeros, text-like and random data)"
  "$ferry" gen-image --size "$size" --out sample.img
fi

step "ferry init --repo repo"
"$ferry" init --repo repo

step "ferry backup --image sample.img --repo repo"
"$ferry" backup --image sample.img --repo repo

step "second backup of the unchanged image (deduplicated: no chunk is written)"
"$ferry" backup --image sample.img --repo repo

step "ferry list --repo repo"
"$ferry" list --repo repo

step "ferry verify --repo repo --read-data"
"$ferry" verify --repo repo --read-data

step "ferry restore --repo repo latest --to restored.img"
"$ferry" restore --repo repo latest --to restored.img

step "comparing the restored image with the original"
cmp sample.img restored.img
echo "restored.img is byte-identical to sample.img"
du -h --apparent-size sample.img | sed 's/^/virtual size: /'
du -sh sample.img restored.img repo
