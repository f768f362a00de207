#!/usr/bin/env bash
# Writes the libvirt domain XML of a test VM that needs no guest OS, for Ferry's integration tests.
#
#   bash scripts/vm/domain.sh [OPTIONS] NAME DIR DISK [DISK...]
#
# Writes DIR/NAME.xml and prints its path. Define and start it with
#   virsh -c qemu:///system define DIR/NAME.xml && virsh -c qemu:///system start NAME
# (or `virsh create` for a transient domain).
#
# The VM: 64 MiB, 1 vCPU (model qemu64, never -cpu host), <features><acpi/></features> (libvirt 9.0
# otherwise passes -no-acpi, which QEMU 10 rejects), no network, no USB, no balloon, no graphics.
# SeaBIOS finds nothing to boot and idles, so the disks are never touched by a guest: only what a
# test writes (e.g. through the monitor's `qemu-io`) changes them.
#
# Disks: each DISK is a path to a raw or qcow2 image or a block device (a `type='block'` disk),
# optionally followed by ",format=raw|qcow2"
# (default: what `qemu-img info` detects). They become virtio disks vda, vdb, ... in that order;
# libvirt names them virtio-disk0, virtio-disk1, ... so the QEMU device of the Nth disk (from 0) is
# /machine/peripheral/virtio-diskN/virtio-backend. Disks use cache='none' io='native' (O_DIRECT)
# when every image can be opened with O_DIRECT, else cache='writeback' io='threads' (e.g. tmpfs).
#
# Options:
#   --floppy PATH     add a writable raw floppy drive (fda, bus fdc) holding PATH
#   --cdrom           add an empty CD-ROM drive (sda, bus sata)
#   --agent           add the QEMU guest agent channel (org.qemu.guest_agent.0). No agent ever
#                     answers (no guest OS); without the channel libvirt reports the agent missing.
#   --console         add a pty serial port and console
#   --type T          kvm | qemu | auto (default auto: kvm when
#                     `virsh domcapabilities --virttype kvm` succeeds, else qemu = TCG)
#   --cache MODE      none (io=native) | writeback | directsync (io=native) | auto (default)
#   --memory MIB      guest memory in MiB (default 64)
#   --uri URI         libvirt connection for the kvm probe (default qemu:///system)
#   -h, --help        this text
set -euo pipefail

PROG="domain.sh"
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit "${1:-2}"
}

xml_escape() {
    local s=$1
    s=${s//&/&amp;}
    s=${s//</&lt;}
    s=${s//>/&gt;}
    s=${s//\'/&apos;}
    s=${s//\"/&quot;}
    printf '%s' "$s"
}

AGENT=0 CONSOLE=0 CDROM=0 FLOPPY= TYPE=auto CACHE=auto MEMORY=64 URI=qemu:///system
POSITIONAL=()
while (($#)); do
    case $1 in
        --agent) AGENT=1 ;;
        --cdrom) CDROM=1 ;;
        --floppy) FLOPPY=${2:?--floppy needs a path}; shift ;;
        --console) CONSOLE=1 ;;
        --type) TYPE=${2:?--type needs a value}; shift ;;
        --cache) CACHE=${2:?--cache needs a value}; shift ;;
        --memory) MEMORY=${2:?--memory needs a value}; shift ;;
        --uri) URI=${2:?--uri needs a value}; shift ;;
        -h | --help) usage 0 ;;
        --) shift; POSITIONAL+=("$@"); break ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) POSITIONAL+=("$1") ;;
    esac
    shift
done
((${#POSITIONAL[@]} >= 3)) || usage
NAME=${POSITIONAL[0]}
DIR=${POSITIONAL[1]}
DISKS=("${POSITIONAL[@]:2}")
((${#DISKS[@]} <= 26)) || die "at most 26 disks (vda..vdz)"
[[ $NAME =~ ^[A-Za-z0-9._+-]+$ ]] || die "NAME may hold only letters, digits and . _ + -"
[[ $MEMORY =~ ^[0-9]+$ ]] || die "--memory takes a number of MiB"
[[ -d $DIR ]] || die "no directory $DIR"
[[ -z $FLOPPY || -f $FLOPPY ]] || die "no floppy image $FLOPPY"

case $TYPE in
    kvm | qemu) ;;
    auto)
        if virsh -c "$URI" domcapabilities --virttype kvm >/dev/null 2>&1; then TYPE=kvm; else TYPE=qemu; fi
        ;;
    *) die "--type takes kvm, qemu or auto" ;;
esac

# Resolve paths and formats; check O_DIRECT.
paths=() formats=() direct_ok=1
for spec in "${DISKS[@]}"; do
    path=${spec%%,format=*}
    format=""
    [[ $spec == *,format=* ]] && format=${spec#*,format=}
    [[ -f $path || -b $path ]] || die "no disk image $path"
    path=$(realpath -- "$path")
    if [[ -z $format ]]; then
        # -U: the image may be in use by a running VM. Top-level "file format:" line only.
        format=$(qemu-img info -U -- "$path" 2>/dev/null | sed -n 's/^file format: //p' | sed -n 1p)
        [[ -n $format ]] || die "cannot tell the format of $path (qemu-img info failed); add ,format=raw|qcow2"
    fi
    [[ $format == raw || $format == qcow2 ]] || die "$path: format $format (only raw and qcow2)"
    dd if="$path" of=/dev/null bs=4096 count=1 iflag=direct status=none 2>/dev/null || direct_ok=0
    paths+=("$path")
    formats+=("$format")
done

case $CACHE in
    auto) if ((direct_ok)); then CACHE=none; else CACHE=writeback; fi ;;
    none | directsync)
        ((direct_ok)) || die "an image does not support O_DIRECT; use --cache writeback" ;;
    writeback) ;;
    *) die "--cache takes none, directsync, writeback or auto" ;;
esac
IO=threads
[[ $CACHE == none || $CACHE == directsync ]] && IO=native

letters=abcdefghijklmnopqrstuvwxyz
xml="$DIR/$NAME.xml"
{
    printf "<domain type='%s'>\n" "$TYPE"
    printf '  <name>%s</name>\n' "$(xml_escape "$NAME")"
    printf "  <memory unit='MiB'>%s</memory>\n" "$MEMORY"
    printf '  <vcpu>1</vcpu>\n'
    printf "  <os>\n    <type arch='x86_64'>hvm</type>\n    <boot dev='hd'/>\n  </os>\n"
    printf '  <features>\n    <acpi/>\n  </features>\n'
    printf "  <cpu mode='custom' match='exact' check='none'>\n    <model fallback='forbid'>qemu64</model>\n  </cpu>\n"
    printf "  <clock offset='utc'/>\n"
    printf '  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n'
    printf '  <devices>\n'
    for i in "${!paths[@]}"; do
        if [[ -b ${paths[$i]} ]]; then
            printf "    <disk type='block' device='disk'>\n"
            source="dev"
        else
            printf "    <disk type='file' device='disk'>\n"
            source="file"
        fi
        printf "      <driver name='qemu' type='%s' cache='%s' io='%s'/>\n" "${formats[$i]}" "$CACHE" "$IO"
        printf "      <source %s='%s'/>\n" "$source" "$(xml_escape "${paths[$i]}")"
        printf "      <target dev='vd%s' bus='virtio'/>\n" "${letters:$i:1}"
        printf '    </disk>\n'
    done
    if [[ -n $FLOPPY ]]; then
        printf "    <disk type='file' device='floppy'>\n"
        printf "      <driver name='qemu' type='raw'/>\n"
        printf "      <source file='%s'/>\n" "$(xml_escape "$(realpath -- "$FLOPPY")")"
        printf "      <target dev='fda' bus='fdc'/>\n"
        printf '    </disk>\n'
    fi
    if ((CDROM)); then
        printf "    <disk type='file' device='cdrom'>\n      <driver name='qemu' type='raw'/>\n"
        printf "      <target dev='sda' bus='sata'/>\n      <readonly/>\n    </disk>\n"
    fi
    printf "    <controller type='usb' model='none'/>\n"
    if ((CONSOLE)); then
        printf "    <serial type='pty'>\n      <target port='0'/>\n    </serial>\n"
        printf "    <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>\n"
    fi
    if ((AGENT)); then
        printf "    <channel type='unix'>\n      <target type='virtio' name='org.qemu.guest_agent.0'/>\n    </channel>\n"
    fi
    printf "    <memballoon model='none'/>\n"
    printf '  </devices>\n'
    printf '</domain>\n'
} >"$xml.tmp"
mv "$xml.tmp" "$xml"
printf '%s\n' "$xml"
