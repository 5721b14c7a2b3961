#!/usr/bin/env bash
# Build (or reuse from the cache) the Hypercore real-distribution test guest: Debian 12
# (bookworm) made with debootstrap from the Debian mirror in the host's apt sources, with
# systemd, Debian's qemu-guest-agent (started by its own udev rule), Debian's kernel
# (linux-image-amd64; 9p/virtiofs are modules, and the share is NOT in fstab: Hypercore
# mounts it), an X session (xvfb.service on :0, hcuser logged in on tty1 with a session
# process whose environment has DISPLAY=:0), xclip, xsel, wl-clipboard, python3,
# xdg-user-dirs and spice-vdagent (started in that session: it acts with a SPICE display
# only).
# Packages come from Debian's archive only. Needs root (debootstrap, chroot, mkfs).
#
# Usage: scripts/build-real-guest.sh [--force|--check] [--help]
#
#   --force   rebuild even if the cache is valid
#   --check   build nothing: exit 0 (and print the directory) if the cache is up to date,
#             1 if a build is needed (which needs root; the check does not)
#
# Environment:
#   HYPERCORE_REAL_GUEST_CACHE    cache root (default: $HOME/.cache/hypercore/real-guest)
#   HYPERCORE_REAL_GUEST_MIRROR   Debian mirror (default: the host's apt source for
#                                 bookworm, e.g. http://deb.debian.org/debian)
#   HYPERCORE_REAL_GUEST_SECURITY_MIRROR
#                                 security mirror (default: the host's apt source for
#                                 bookworm-security; "-" for none)
#
# Output: progress on stderr; the LAST line of stdout is the absolute path of the guest
# directory, so callers can do
#     dir=$(scripts/build-real-guest.sh | tail -n1)
#
# Cache layout:
#   $CACHE/bookworm/disk.qcow2    the root file system (ext4 on the whole disk, /dev/vda),
#                                 qcow2, 2 GiB virtual, sparse. NEVER boot it directly:
#                                 each VM gets an overlay,
#                                   qemu-img create -f qcow2 -b $CACHE/bookworm/disk.qcow2 \
#                                       -F qcow2 overlay.qcow2
#                                 and `hypercore create-vm NAME RAM CPUS overlay.qcow2 ...`
#   $CACHE/bookworm/vmlinuz       Debian's kernel (the one installed in the image)
#   $CACHE/bookworm/initrd.img    its initramfs-tools initrd (virtio_pci, virtio_blk, ext4)
#   $CACHE/bookworm/cmdline       the kernel command line (-append)
#   $CACHE/bookworm/build-id      stamp: key= (hash of this script, the files in
#                                 scripts/real-guest/, the suite and the mirrors), plus
#                                 package versions, sizes and build time
#   $CACHE/latest -> bookworm
# A build happens in $CACHE/.work.* and $CACHE/.build.* and is renamed into place at the
# end, so an interrupted build never leaves a half-made guest directory. Concurrent runs
# are serialised with flock on $CACHE/.lock. Mounts made for the build (debootstrap's
# /proc, the chroot's /proc /sys /dev/pts /run) live in private mount namespaces
# (unshare -m), so they vanish with the build, however it ends.
set -euo pipefail
umask 022
export LC_ALL=C
export PATH="$PATH:/usr/sbin:/sbin"

SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
SCRIPT_DIR=$(dirname "$SCRIPT_PATH")
GUEST_SRC="$SCRIPT_DIR/real-guest"
ROOTFS_SRC="$GUEST_SRC/rootfs"
CONFIGURE="$GUEST_SRC/configure.sh"

SUITE=bookworm
DISK_SIZE=2G
# Same speed-ups as the busybox test guest (see build-test-guest.sh), plus the root disk.
CMDLINE="root=/dev/vda rw console=ttyS0 quiet panic=-1 cryptomgr.notests init_on_alloc=0 mitigations=off tsc=reliable no_timer_check"

log() { printf '[build-real-guest] %s\n' "$*" >&2; }
die() { printf '[build-real-guest] ERROR: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$SCRIPT_PATH"; }

FORCE=0
CHECK=0
while (($#)); do
    case $1 in
        --force|-f) FORCE=1 ;;
        --check) CHECK=1 ;;
        --help|-h) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done

[[ -d $ROOTFS_SRC && -f $CONFIGURE ]] || die "missing $GUEST_SRC (guest files)"

if [[ -z ${HOME:-} ]]; then
    HOME=$(getent passwd "$(id -u)" | cut -d: -f6 || true)
    [[ -n $HOME ]] || die "HOME is not set"
fi
CACHE_ROOT=${HYPERCORE_REAL_GUEST_CACHE:-$HOME/.cache/hypercore/real-guest}
mkdir -p "$CACHE_ROOT"
CACHE_ROOT=$(cd "$CACHE_ROOT" && pwd -P)

# ---------------------------------------------------------------- mirrors
# "URI SUITE" for every enabled deb source of the host's apt configuration (one-line
# .list files and deb822 .sources files).
apt_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        awk '$1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if (i + 1 <= NF) print $i, $(i + 1)
            }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        awk 'function flush(  n, m, i, j, u, s) {
                if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no") {
                    n = split(uris, u, /[ \t]+/); m = split(suites, s, /[ \t]+/)
                    for (i = 1; i <= n; i++) for (j = 1; j <= m; j++)
                        if (u[i] != "" && s[j] != "") print u[i], s[j]
                }
                types = uris = suites = key = ""; enabled = "yes"
            }
            BEGIN { enabled = "yes" }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]/ {  # continuation line
                if (key == "uris") uris = uris " " $0
                else if (key == "suites") suites = suites " " $0
                else if (key == "types") types = types " " $0
                next
            }
            {
                key = tolower($0); sub(/:.*/, "", key)
                val = $0; sub(/^[^:]*:[ \t]*/, "", val)
                if (key == "types") types = val
                else if (key == "uris") uris = val
                else if (key == "suites") suites = val
                else if (key == "enabled") enabled = tolower(val)
            }
            END { flush() }' "$f"
    done
}

mirror_for() { # SUITE: the first host source URI serving it
    apt_sources | awk -v s="$1" '$2 == s { sub(/\/+$/, "", $1); print $1; exit }'
}

MIRROR=${HYPERCORE_REAL_GUEST_MIRROR:-$(mirror_for "$SUITE")}
if [[ -z $MIRROR ]]; then
    # A host on another Debian release: its Debian mirror serves bookworm too.
    MIRROR=$(apt_sources | awk '$1 ~ /\/debian\/?$/ { sub(/\/+$/, "", $1); print $1; exit }')
fi
[[ -n $MIRROR ]] || die "no Debian mirror in /etc/apt/sources.list*; set HYPERCORE_REAL_GUEST_MIRROR"
SECURITY=${HYPERCORE_REAL_GUEST_SECURITY_MIRROR:-$(mirror_for "$SUITE-security")}
[[ -n $SECURITY ]] || SECURITY=-
MIRROR=${MIRROR%/}
SECURITY=${SECURITY%/}

# ---------------------------------------------------------------- cache check
compute_key() {
    {
        echo "suite=$SUITE mirror=$MIRROR security=$SECURITY disk=$DISK_SIZE"
        sha256sum "$SCRIPT_PATH" | cut -d' ' -f1
        (cd "$GUEST_SRC" && find . \( -type f -o -type l \) -print0 | sort -z | xargs -0r sha256sum)
        (cd "$GUEST_SRC" && find . -type l -printf '%p -> %l\n' | sort)
        (cd "$GUEST_SRC" && find . -type f -perm -u+x -print | sort)
    } | sha256sum | cut -d' ' -f1
}

cache_valid() { # DIR KEY
    local dir=$1 key=$2 f
    for f in disk.qcow2 vmlinuz initrd.img cmdline build-id; do
        [[ -s $dir/$f ]] || return 1
    done
    grep -qx "key=$key" "$dir/build-id"
}

set_latest() {
    local tmp="$CACHE_ROOT/.latest.$$"
    if ! { ln -sfn "$1" "$tmp" && mv -Tf "$tmp" "$CACHE_ROOT/latest"; }; then
        rm -f "$tmp"
        return 1
    fi
}

finish() { # DIR
    local f
    set_latest "${1##*/}" || true
    for f in disk.qcow2 vmlinuz initrd.img cmdline; do log "  $1/$f"; done
    printf '%s\n' "$1"
    exit 0
}

KEY=$(compute_key)
GUEST_DIR="$CACHE_ROOT/$SUITE"

if ((!FORCE)) && cache_valid "$GUEST_DIR" "$KEY"; then
    log "cached guest is up to date: $GUEST_DIR"
    finish "$GUEST_DIR"
fi
if ((CHECK)); then
    log "no up-to-date guest in $GUEST_DIR: a build is needed"
    exit 1
fi

[[ $(id -u) == 0 ]] || die "building needs root (debootstrap, chroot); run as root once, later runs reuse the cache"
for tool in debootstrap unshare chroot mkfs.ext4 e2fsck qemu-img; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install debootstrap e2fsprogs qemu-utils util-linux)"
done

exec 9>"$CACHE_ROOT/.lock"
if command -v flock >/dev/null && ! flock -n 9; then
    log "another build is running; waiting for $CACHE_ROOT/.lock"
    flock 9
fi
if ((!FORCE)) && cache_valid "$GUEST_DIR" "$KEY"; then # built by a concurrent run
    log "cached guest is up to date: $GUEST_DIR"
    finish "$GUEST_DIR"
fi
# Leftovers of killed (SIGKILL) builds; we hold the lock, so none is active. Their mounts
# died with their namespaces; --one-file-system guards against any that did not.
rm -rf --one-file-system "$CACHE_ROOT"/.build.* "$CACHE_ROOT"/.work.* "$CACHE_ROOT"/.old.* \
    "$CACHE_ROOT"/.latest.* 2>/dev/null || true

# ---------------------------------------------------------------- build setup
WORK=$(mktemp -d "$CACHE_ROOT/.work.XXXXXX")
STAGE=$(mktemp -d "$CACHE_ROOT/.build.$SUITE.XXXXXX")
ROOTFS="$WORK/rootfs"
BUILD_LOG="$WORK/build.log"
OLD=""
# shellcheck disable=SC2317
cleanup() {
    local rc=$?
    if ((rc != 0)) && [[ -s $BUILD_LOG ]]; then
        log "build failed; the end of its log:"
        tail -n 40 "$BUILD_LOG" >&2 || true
    fi
    rm -rf --one-file-system "$WORK" "$STAGE"
    [[ -z $OLD ]] || rm -rf "$OLD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

T0=$SECONDS
step() { log "$* ($((SECONDS - T0)) s)"; }

# CMD... with its output in the build log (shown if the build fails).
logged() { "$@" >>"$BUILD_LOG" 2>&1; }

# CMD... run chrooted in the root file system, with /proc, /sys, /dev/pts and /run
# mounted in a private mount namespace (they disappear when CMD ends).
in_root() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    unshare --mount --propagation private -- /bin/bash -c '
        set -e
        root=$1; shift
        mount -t proc proc "$root/proc"
        mount -t sysfs sysfs "$root/sys"
        mkdir -p "$root/dev/pts"
        mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
        mount -t tmpfs -o mode=0755 tmpfs "$root/run"
        exec chroot "$root" "$@"' in_root "$ROOTFS" "$@"
}

# ---------------------------------------------------------------- debootstrap
step "debootstrap --variant=minbase $SUITE from $MIRROR (log: $BUILD_LOG)"
mkdir -p "$ROOTFS"
logged unshare --mount --propagation private -- \
    debootstrap --variant=minbase --arch=amd64 "$SUITE" "$ROOTFS" "$MIRROR" \
    || die "debootstrap failed"

# ---------------------------------------------------------------- configure
step "configuring the guest (packages, user, units)"
cp -R "$ROOTFS_SRC"/. "$ROOTFS"/
cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf" # apt inside the chroot; replaced below
install -m 755 "$CONFIGURE" "$ROOTFS/tmp/hc-configure.sh"
in_root /bin/sh /tmp/hc-configure.sh "$SUITE" "$MIRROR" "$SECURITY" \
    2>>"$BUILD_LOG" >"$WORK/versions" || die "configuring the guest failed"
rm -f "$ROOTFS/tmp/hc-configure.sh"

# ---------------------------------------------------------------- kernel + initrd
kernels=("$ROOTFS"/boot/vmlinuz-*)
if ((${#kernels[@]} != 1)) || [[ ! -s ${kernels[0]} ]]; then
    die "expected one kernel in /boot, found: ${kernels[*]}"
fi
KVER=${kernels[0]##*/vmlinuz-}
[[ -s $ROOTFS/boot/initrd.img-$KVER ]] || die "no initrd for $KVER"
in_root lsinitramfs "/boot/initrd.img-$KVER" > "$WORK/initrd.list" 2>>"$BUILD_LOG" \
    || die "lsinitramfs failed"
for m in virtio_pci virtio_blk ext4; do
    grep -q "/$m\.ko" "$WORK/initrd.list" || die "the initrd lacks $m"
done
cp "${kernels[0]}" "$STAGE/vmlinuz"
cp "$ROOTFS/boot/initrd.img-$KVER" "$STAGE/initrd.img"
printf '%s\n' "$CMDLINE" > "$STAGE/cmdline"

# ---------------------------------------------------------------- disk image
step "making the ext4 root file system ($DISK_SIZE) and the qcow2 image"
# Anything a chroot left behind: temporary files, the host's resolv.conf backup.
find "$ROOTFS/tmp" "$ROOTFS/var/tmp" -mindepth 1 -delete
ROOT_BYTES=$(du -sxb "$ROOTFS" | cut -f1)
truncate -s "$DISK_SIZE" "$WORK/root.raw"
# Inode tables and journal written now, so the guest runs no ext4lazyinit thread.
logged mkfs.ext4 -q -F -L hc-root -d "$ROOTFS" -E lazy_itable_init=0,lazy_journal_init=0 \
    "$WORK/root.raw" || die "mkfs.ext4 -d failed"
logged e2fsck -fn "$WORK/root.raw" || die "e2fsck found errors in the new file system"
logged qemu-img convert -O qcow2 "$WORK/root.raw" "$STAGE/disk.qcow2" || die "qemu-img convert failed"
rm -f "$WORK/root.raw"

{
    echo "key=$KEY"
    echo "suite=$SUITE"
    echo "mirror=$MIRROR"
    echo "security_mirror=$SECURITY"
    echo "kernel_version=$KVER"
    sed 's/^/package=/' "$WORK/versions"
    echo "rootfs_bytes=$ROOT_BYTES"
    echo "disk_virtual=$DISK_SIZE"
    echo "disk_bytes=$(stat -c %s "$STAGE/disk.qcow2")"
    echo "initrd_bytes=$(stat -c %s "$STAGE/initrd.img")"
    echo "build_seconds=$((SECONDS - T0))"
    echo "script_sha256=$(sha256sum "$SCRIPT_PATH" | cut -d' ' -f1)"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$STAGE/build-id"
chmod 755 "$STAGE"
chmod 644 "$STAGE"/*

# ---------------------------------------------------------------- install
if [[ -e $GUEST_DIR || -L $GUEST_DIR ]]; then
    OLD="$CACHE_ROOT/.old.$SUITE.$$"
    mv -T "$GUEST_DIR" "$OLD"
fi
mv -T "$STAGE" "$GUEST_DIR"
step "built $GUEST_DIR (disk $(stat -c %s "$GUEST_DIR/disk.qcow2") bytes, root $ROOT_BYTES bytes)"
finish "$GUEST_DIR"
