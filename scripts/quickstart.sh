#!/usr/bin/env bash
# Quick start: set up libvirt + QEMU, build ferry, and run it for real into a local repository:
#  1. a disk image: backup, dedup'd second backup, list, verify --read-data, restore, compare;
#  2. a live VM (no guest OS needed): define and start it with a sample disk, write into the
#     running disk, `ferry backup --domain` (overlay mode, then push mode), list, verify, restore,
#     and show that the VM is back on its own disk with no overlay left;
#  3. retention: forget all but the newest snapshot of each name, gc, verify again.
#
#   bash scripts/quickstart.sh [WORKDIR]      (default WORKDIR: ./ferry-demo; run as root)
#
# Environment: FERRY_DEMO_SIZE (default 1G) sets the sample image size.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
work=${1:-ferry-demo}
size=${FERRY_DEMO_SIZE:-1G}
domain=ferry-demo
uri=qemu:///system

step() { printf '\n==> %s\n' "$*"; }
virsh() { command virsh -c "$uri" "$@"; }

step "setting up libvirt + QEMU (installed only when missing)"
bash scripts/services/libvirt.sh ensure

step "building ferry (release)"
cargo build --release --locked -p ferry-cli
ferry=$root/target/release/ferry

mkdir -p "$work"
chmod 700 "$work"
cd "$work"
work=$PWD
export FERRY_STATE_DIR=$work/state
rm -rf repo restored.img restored-vm
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

step "ferry restore --repo repo latest --to restored.img"
"$ferry" restore --repo repo latest --to restored.img
cmp sample.img restored.img
echo "restored.img is byte-identical to sample.img"

step "starting a live VM '$domain' (no guest OS) on a 256 MiB sample disk"
virsh destroy "$domain" >/dev/null 2>&1 || true
virsh undefine "$domain" >/dev/null 2>&1 || true
rm -f vm-disk.raw
"$ferry" gen-image --size 256M --out vm-disk.raw --seed 7
xml=$(bash "$root/scripts/vm/domain.sh" "$domain" "$work" "$work/vm-disk.raw")
virsh define "$xml" >/dev/null
virsh start "$domain"
trap 'virsh destroy "$domain" >/dev/null 2>&1 || true; virsh undefine "$domain" >/dev/null 2>&1 || true' EXIT
write_live() { # byte offset length: written into the running VM's disk by QEMU itself
  virsh qemu-monitor-command "$domain" --hmp \
    "qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"write -P $1 $2 $3\"" >/dev/null
}
write_live 0xa1 0 1M

step "ferry backup --domain $domain --repo repo   (overlay mode; the guest writes during the copy)"
"$ferry" backup --domain "$domain" --repo repo \
  --hook "[ \"\$FERRY_HOOK_PHASE\" = frozen ] && virsh -c $uri qemu-monitor-command $domain --hmp 'qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"write -P 0xb2 4194304 1M\"' >/dev/null || true"

step "the VM is back on its own disk (no overlay):"
virsh domblklist "$domain"

step "ferry backup --domain $domain --repo repo --mode push"
"$ferry" backup --domain "$domain" --repo repo --mode push

step "ferry list --repo repo"
"$ferry" list --repo repo

step "ferry verify --repo repo --read-data"
"$ferry" verify --repo repo --read-data

step "restoring the overlay-mode VM snapshot into restored-vm/"
vm_snapshot=$("$ferry" list --repo repo --json | python3 -c '
import json, sys
snaps = [s for s in json.load(sys.stdin)["snapshots"] if s["name"] == "'"$domain"'"]
print(snaps[0]["snapshot"])')
"$ferry" restore --repo repo "$vm_snapshot" --to restored-vm
echo "the write made before the backup is in it (0xa1), the one made during the copy is not (0xb2 went to the live disk):"
printf 'restored at 0 MiB: %s   at 4 MiB: %s\n' \
  "$(od -An -tx1 -N1 restored-vm/vda | tr -d ' ')" "$(od -An -tx1 -j 4194304 -N1 restored-vm/vda | tr -d ' ')"
printf 'live disk at 4 MiB: %s\n' "$(od -An -tx1 -j 4194304 -N1 vm-disk.raw | tr -d ' ')"
ls -la "$work" | grep -c ferry-overlay | sed 's/^/overlay files left: /' || true

step "ferry forget --repo repo --keep-last 1   (the newest snapshot of each name stays)"
"$ferry" forget --repo repo --keep-last 1

step "ferry gc --repo repo   (deletes the chunks no snapshot uses any more)"
"$ferry" gc --repo repo
"$ferry" verify --repo repo --read-data

du -sh sample.img restored.img repo
