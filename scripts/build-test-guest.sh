#!/usr/bin/env bash
# Build (or reuse from the cache) the Hypercore test guest: a Debian generic
# kernel plus a small initramfs with busybox, qemu-ga (+ its shared libraries),
# the virtio/9p/virtiofs/ACPI-button kernel modules and binary console keymaps
# (us, de: built with kbd's loadkeys from console-data). Debian packages only.
#
# Usage: scripts/build-test-guest.sh [--force] [--help]
#
#   --force   rebuild even if the cache is valid
#
# Environment:
#   HYPERCORE_TEST_GUEST_CACHE        cache root
#                                     (default: $HOME/.cache/hypercore/test-guest)
#   HYPERCORE_TEST_GUEST_COMPRESSION  initramfs compression: zstd (default) or gzip
#                                     (falls back to gzip if zstd is not installed)
#   HYPERCORE_TEST_GUEST_HOST_BINARIES  1 (default): take busybox and qemu-ga from
#                                     the host when installed; 0: always
#                                     apt-get download busybox-static and
#                                     qemu-guest-agent (+ missing libraries)
#
# Output: progress on stderr; the LAST line of stdout is the absolute path of
# the guest directory, so callers can do
#     dir=$(scripts/build-test-guest.sh | tail -n1)
#
# Cache layout:
#   $CACHE/<kernel-version>/vmlinuz      Debian generic kernel (bzImage)
#   $CACHE/<kernel-version>/vmlinux      the same kernel uncompressed (ELF with a
#                                        PVH entry note): `-kernel DIR/vmlinux`
#                                        boots ~3 s faster under TCG because the
#                                        xz decompression is skipped. Optional:
#                                        absent if it could not be extracted.
#   $CACHE/<kernel-version>/initrd.img   newc cpio, zstd or gzip compressed
#   $CACHE/<kernel-version>/cmdline      recommended kernel command line (-append)
#   $CACHE/<kernel-version>/build-id     stamp: key= (hash of this script, the
#                                        files in scripts/test-guest/rootfs, the
#                                        kernel version and the compression),
#                                        plus versions/sources of what went in
#   $CACHE/latest -> <kernel-version>
# A build happens in $CACHE/.work.* and $CACHE/.build.* and is renamed into place at the end, so
# an interrupted build never leaves a half-made guest directory. Concurrent
# runs are serialised with flock on $CACHE/.lock.
#
# Works as root (may run `apt-get update` once if the apt lists are empty) and
# as a normal user when apt lists / packages are present (apt-get download
# does not need root).
set -euo pipefail
umask 022
export LC_ALL=C
export PATH="$PATH:/usr/sbin:/sbin"

SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
SCRIPT_DIR=$(dirname "$SCRIPT_PATH")
ROOTFS_SRC="$SCRIPT_DIR/test-guest/rootfs"

# Recommended kernel command line, measured under TCG (q35, -cpu max, 5+
# boots each, agent answering guest-ping): quiet keeps the slow emulated UART
# out of the boot path; cryptomgr.notests skips crypto self-tests;
# init_on_alloc=0 stops zeroing every allocated page; mitigations=off,
# tsc=reliable and no_timer_check trim boot-time work. Together ~0.3-0.4 s.
# (loglevel=1, nokaslr, i8042.*, 8250.nr_uarts, audit=0, lsm=,
# rcupdate.rcu_expedited gave nothing measurable.)
CMDLINE="console=ttyS0 quiet panic=-1 cryptomgr.notests init_on_alloc=0 mitigations=off tsc=reliable no_timer_check"

# Modules wanted in the guest (names as in modules.dep, '-' == '_'); deps are
# added automatically and everything is loaded in dependency order.
WANTED_MODULES=(
    virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev
    virtio_console virtio_blk net_failover failover virtio_net virtio_balloon
    netfs fscache 9pnet 9pnet_virtio 9p fuse virtiofs
    button evdev
    virtio_pci
)

log() { printf '[build-test-guest] %s\n' "$*" >&2; }
die() { printf '[build-test-guest] ERROR: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$SCRIPT_PATH"; }

FORCE=0
while (($#)); do
    case $1 in
        --force|-f) FORCE=1 ;;
        --help|-h) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done

[[ -d $ROOTFS_SRC && -f $ROOTFS_SRC/init ]] || die "missing $ROOTFS_SRC (guest files)"

if [[ -z ${HOME:-} ]]; then
    HOME=$(getent passwd "$(id -u)" | cut -d: -f6 || true)
    [[ -n $HOME ]] || die "HOME is not set"
fi
CACHE_ROOT=${HYPERCORE_TEST_GUEST_CACHE:-$HOME/.cache/hypercore/test-guest}
mkdir -p "$CACHE_ROOT"
CACHE_ROOT=$(cd "$CACHE_ROOT" && pwd -P)

COMPRESSION=${HYPERCORE_TEST_GUEST_COMPRESSION:-zstd}
case $COMPRESSION in zstd|gzip) ;; *) die "HYPERCORE_TEST_GUEST_COMPRESSION must be zstd or gzip" ;; esac

HOST_BINARIES=${HYPERCORE_TEST_GUEST_HOST_BINARIES:-1}
case $HOST_BINARIES in 0|1) ;; *) die "HYPERCORE_TEST_GUEST_HOST_BINARIES must be 0 or 1" ;; esac

IS_ROOT=0
[[ $(id -u) == 0 ]] && IS_ROOT=1
APT_OPTS=(-q)
((IS_ROOT)) && APT_OPTS+=(-o APT::Sandbox::User=root)

# ---------------------------------------------------------------- kernel version
APT_UPDATED=0
apt_update_once() {
    ((IS_ROOT && !APT_UPDATED)) || return 1
    APT_UPDATED=1
    log "running apt-get update"
    apt-get "${APT_OPTS[@]}" update >&2 || return 1
}

# linux-image-amd64 -> linux-image-6.1.0-NN-amd64 (signed generic kernel).
apt_kernel_version() {
    apt-cache depends linux-image-amd64 2>/dev/null \
        | awk '$1 ~ /Depends:$/ && $2 ~ /^linux-image-[0-9][^ ]*-amd64$/ { sub(/^linux-image-/, "", $2); print $2; exit }'
}

# Newest generic (non-cloud, non-rt) kernel installed on the host.
host_kernel_version() {
    local d k best=""
    for d in /usr/lib/modules/*-amd64 /lib/modules/*-amd64; do
        [[ -d $d ]] || continue
        k=${d##*/}
        [[ $k == *cloud* || $k == *rt-* ]] && continue
        [[ -r /boot/vmlinuz-$k ]] || continue
        best=$(printf '%s\n%s\n' "$best" "$k" | sed '/^$/d' | sort -V | tail -n1)
    done
    printf '%s' "$best"
}

# apt-cache can take ~1 s (more where the pkgcache is disabled, as in Debian
# container images), so remember the answer for as long as the apt lists and
# preferences are unchanged. Keeps the cached path fast.
apt_fingerprint() {
    local f=(/var/lib/apt/lists/*_Packages* /etc/apt/preferences /etc/apt/preferences.d/*)
    { stat -c '%n %s %Y' "${f[@]}" 2>/dev/null || true; } | sha256sum | cut -d' ' -f1
}
KVER_MEMO="$CACHE_ROOT/.kver-memo"
KVER=""
fp=""
if compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    fp=$(apt_fingerprint)
    if [[ -r $KVER_MEMO ]]; then
        read -r memo_fp memo_kver < "$KVER_MEMO" || true
        [[ ${memo_fp:-} == "$fp" && -n ${memo_kver:-} ]] && KVER=$memo_kver
    fi
fi
if [[ -z $KVER ]]; then
    KVER=$(apt_kernel_version || true)
    if [[ -n $KVER && -n $fp ]]; then
        if ! { printf '%s %s\n' "$fp" "$KVER" > "$KVER_MEMO.$$" && mv -f "$KVER_MEMO.$$" "$KVER_MEMO"; }; then
            rm -f "$KVER_MEMO.$$"
        fi
    fi
fi
if [[ -z $KVER ]] && apt_update_once; then
    KVER=$(apt_kernel_version || true)
fi
if [[ -z $KVER ]]; then
    KVER=$(host_kernel_version)
    [[ -n $KVER ]] || die "cannot resolve linux-image-amd64 (no apt lists? run 'apt-get update') and no generic kernel is installed"
    log "apt cannot resolve linux-image-amd64; using the host's kernel $KVER"
fi

# ---------------------------------------------------------------- cache check
compute_key() {
    {
        echo "kver=$KVER compression=$COMPRESSION host_binaries=$HOST_BINARIES"
        sha256sum "$SCRIPT_PATH" | cut -d' ' -f1
        (cd "$ROOTFS_SRC" && find . \( -type f -o -type l \) -print0 | sort -z | xargs -0r sha256sum)
        (cd "$ROOTFS_SRC" && find . -type l -printf '%p -> %l\n' | sort)
    } | sha256sum | cut -d' ' -f1
}

cache_valid() { # DIR KEY
    local dir=$1 key=$2 f
    for f in vmlinuz initrd.img cmdline build-id; do
        [[ -s $dir/$f ]] || return 1
    done
    grep -qx "key=$key" "$dir/build-id" || return 1
    # vmlinux is optional, but must be there if the build made one
    if grep -qx 'vmlinux=yes' "$dir/build-id"; then [[ -s $dir/vmlinux ]] || return 1; fi
}

set_latest() {
    local tmp="$CACHE_ROOT/.latest.$$"
    if ! { ln -sfn "$1" "$tmp" && mv -Tf "$tmp" "$CACHE_ROOT/latest"; }; then
        rm -f "$tmp"
        return 1
    fi
}

finish() { # DIR
    set_latest "${1##*/}" || true
    printf '%s\n' "$1"
    exit 0
}

KEY=$(compute_key)
GUEST_DIR="$CACHE_ROOT/$KVER"

if ((!FORCE)) && cache_valid "$GUEST_DIR" "$KEY"; then
    log "cached guest is up to date: $GUEST_DIR"
    finish "$GUEST_DIR"
fi

exec 9>"$CACHE_ROOT/.lock"
if command -v flock >/dev/null && ! flock -n 9; then
    log "another build is running; waiting for $CACHE_ROOT/.lock"
    flock 9
fi
if ((!FORCE)) && cache_valid "$GUEST_DIR" "$KEY"; then # built by a concurrent run
    log "cached guest is up to date: $GUEST_DIR"
    finish "$GUEST_DIR"
fi
# Leftovers of killed (SIGKILL) builds; we hold the lock, so none is active.
rm -rf "$CACHE_ROOT"/.build.* "$CACHE_ROOT"/.work.* "$CACHE_ROOT"/.old.* "$CACHE_ROOT"/.latest.* 2>/dev/null || true

# ---------------------------------------------------------------- build setup
# Scratch space (the kernel .deb unpacks to ~400 MB) lives in the cache root
# too, so that leftovers of a SIGKILLed build are found and removed above.
WORK=$(mktemp -d "$CACHE_ROOT/.work.XXXXXX")
STAGE=$(mktemp -d "$CACHE_ROOT/.build.$KVER.XXXXXX")
OLD=""
# shellcheck disable=SC2317
cleanup() {
    rm -rf "$WORK" "$STAGE"
    [[ -z $OLD ]] || rm -rf "$OLD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
ROOT="$WORK/initramfs"
mkdir -p "$ROOT"

# apt-get download PKG... into DIR; prints nothing on stdout.
apt_download() { # DIR PKG...
    local dir=$1; shift
    (cd "$dir" && apt-get "${APT_OPTS[@]}" download "$@") >&2 2>&1 && return 0
    apt_update_once || return 1
    (cd "$dir" && apt-get "${APT_OPTS[@]}" download "$@") >&2 2>&1
}

deb_version() { dpkg-deb -f "$1" Version; }

# ---------------------------------------------------------------- kernel
log "building test guest for kernel $KVER in $STAGE"
KROOT="$WORK/kernel"
mkdir -p "$WORK/debs" "$KROOT"
KERNEL_SRC=""
if apt_download "$WORK/debs" "linux-image-$KVER"; then
    deb=$(ls "$WORK"/debs/linux-image-"$KVER"_*.deb)
    log "extracting $(basename "$deb")"
    dpkg-deb -x "$deb" "$KROOT"
    KERNEL_SRC="linux-image-$KVER $(deb_version "$deb") (apt-get download)"
    VMLINUZ="$KROOT/boot/vmlinuz-$KVER"
    MODDIR="$KROOT/lib/modules/$KVER"
    [[ -d $MODDIR ]] || MODDIR="$KROOT/usr/lib/modules/$KVER"
elif [[ -r /boot/vmlinuz-$KVER && -d /usr/lib/modules/$KVER ]]; then
    log "download of linux-image-$KVER failed; using the host's installed kernel"
    VMLINUZ="/boot/vmlinuz-$KVER"
    MODDIR="/usr/lib/modules/$KVER"
    KERNEL_SRC="linux-image-$KVER $(dpkg-query -W -f='${Version}' "linux-image-$KVER" 2>/dev/null || echo '?') (host /boot)"
else
    die "cannot download linux-image-$KVER and it is not installed on the host"
fi
[[ -s $VMLINUZ ]] || die "no kernel image at $VMLINUZ"
[[ -d $MODDIR/kernel ]] || die "no modules at $MODDIR"
grep -q '^CONFIG_NET_9P_VIRTIO=' "$(dirname "$VMLINUZ")/config-$KVER" 2>/dev/null \
    || log "warning: kernel config lacks CONFIG_NET_9P_VIRTIO (cloud kernel?)"

# modules.dep: the .deb does not ship it (postinst runs depmod).
DEPFILE="$MODDIR/modules.dep"
if [[ ! -s $DEPFILE ]]; then
    if command -v depmod >/dev/null && [[ $MODDIR == "$KROOT"/* ]]; then
        log "running depmod on the extracted tree"
        depmod -b "${MODDIR%/lib/modules/"$KVER"}" "$KVER" >&2 || true
    fi
fi
if [[ ! -s $DEPFILE && -s /usr/lib/modules/$KVER/modules.dep ]]; then
    DEPFILE="/usr/lib/modules/$KVER/modules.dep"
fi

declare -A MOD_PATH=() MOD_DEPS=()
norm() { local n=${1##*/}; n=${n%%.ko*}; printf '%s' "${n//-/_}"; }
if [[ -s $DEPFILE ]]; then
    log "resolving module dependencies from $DEPFILE"
    WANTED_RE=$(IFS='|'; echo "${WANTED_MODULES[*]}")
    WANTED_RE=${WANTED_RE//_/[-_]}
    while IFS= read -r line; do
        path=${line%%:*}
        deps=${line#*:}
        n=$(norm "$path")
        MOD_PATH[$n]=$path
        MOD_DEPS[$n]=""
        for d in $deps; do MOD_DEPS[$n]+=" $(norm "$d")"; done
    done < <(grep -E "^[^:]*/($WANTED_RE)\.ko[^:/]*:" "$DEPFILE" || true)
    # A dependency outside the pattern above: look it up too (rare).
    need_more=1
    while ((need_more)); do
        need_more=0
        for n in "${!MOD_DEPS[@]}"; do
            for d in ${MOD_DEPS[$n]}; do
                [[ -n ${MOD_PATH[$d]:-} ]] && continue
                line=$(grep -E "^[^:]*/${d//_/[-_]}\.ko[^:/]*:" "$DEPFILE" | head -n1 || true)
                [[ -n $line ]] || die "dependency $d of $n not in modules.dep"
                MOD_PATH[$d]=${line%%:*}
                MOD_DEPS[$d]=""
                for x in ${line#*:}; do MOD_DEPS[$d]+=" $(norm "$x")"; done
                need_more=1
            done
        done
    done
else
    # No modules.dep and no depmod: use the depends= field of each module's
    # .modinfo section (same information, computed by modpost).
    log "no modules.dep available; using the modules' .modinfo depends="
    while IFS= read -r -d '' f; do
        n=$(norm "$f")
        MOD_PATH[$n]=${f#"$MODDIR"/}
    done < <(find "$MODDIR/kernel" -name '*.ko*' -print0)
    modinfo_deps() {
        local f="$MODDIR/${MOD_PATH[$1]}"
        case $f in
            *.ko) tr '\0' '\n' < "$f" ;;
            *.ko.xz) xz -dc "$f" | tr '\0' '\n' ;;
            *.ko.zst) zstd -dcq "$f" | tr '\0' '\n' ;;
            *.ko.gz) gzip -dc "$f" | tr '\0' '\n' ;;
        esac | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '
    }
fi

builtin_module() { grep -qE "/$1\.ko\$" "$MODDIR/modules.builtin" 2>/dev/null; }

declare -A VISITED=()
MOD_ORDER=()
visit() { # NAME (post-order DFS: dependencies first)
    local n=$1 d deps
    [[ -n ${VISITED[$n]:-} ]] && return 0
    VISITED[$n]=1
    if [[ -z ${MOD_PATH[$n]:-} ]]; then
        if builtin_module "${n//_/[-_]}"; then
            log "module $n is built in"
        else
            log "warning: module $n not found, skipped"
        fi
        return 0
    fi
    if [[ -n ${MOD_DEPS[$n]+set} ]]; then deps=${MOD_DEPS[$n]}; else deps=$(modinfo_deps "$n"); fi
    for d in $deps; do visit "${d//-/_}"; done
    MOD_ORDER+=("$n")
}
for m in "${WANTED_MODULES[@]}"; do visit "$m"; done

mkdir -p "$ROOT/lib/modules/$KVER" "$ROOT/etc/hypercore"
: > "$ROOT/etc/hypercore/modules"
for n in "${MOD_ORDER[@]}"; do
    rel=${MOD_PATH[$n]}
    src="$MODDIR/$rel"
    dst_rel=${rel%.ko*}.ko
    dst="$ROOT/lib/modules/$KVER/$dst_rel"
    mkdir -p "$(dirname "$dst")"
    case $rel in
        *.ko) cp "$src" "$dst" ;;
        *.ko.xz) xz -dc "$src" > "$dst" ;;
        *.ko.zst) zstd -dcq "$src" > "$dst" ;;
        *.ko.gz) gzip -dc "$src" > "$dst" ;;
        *) die "unknown module format: $rel" ;;
    esac
    echo "$dst_rel" >> "$ROOT/etc/hypercore/modules"
done
log "modules (load order): ${MOD_ORDER[*]}"
for f in modules.builtin modules.builtin.modinfo modules.order; do
    [[ -f $MODDIR/$f ]] && cp "$MODDIR/$f" "$ROOT/lib/modules/$KVER/"
done
# modules.dep for the subset, so `modprobe` also works inside the guest.
if command -v depmod >/dev/null; then
    depmod -b "$ROOT" "$KVER" 2>/dev/null || true
    rm -f "$ROOT/lib/modules/$KVER"/modules.{builtin.modinfo,order,symbols,symbols.bin,alias,alias.bin,devname,softdep}
fi

# ---------------------------------------------------------------- busybox
is_static() { ! ldd "$1" >/dev/null 2>&1; }
BUSYBOX=""
BUSYBOX_SRC=""
for c in /bin/busybox /usr/bin/busybox; do
    if ((HOST_BINARIES)) && [[ -x $c ]] && is_static "$c"; then
        BUSYBOX=$c
        BUSYBOX_SRC="$c ($(dpkg-query -W -f='busybox-static ${Version}' busybox-static 2>/dev/null || echo host))"
        break
    fi
done
if [[ -z $BUSYBOX ]]; then
    log "downloading busybox-static (no static busybox on the host, or HOST_BINARIES=0)"
    mkdir -p "$WORK/bb-debs" "$WORK/bb"
    apt_download "$WORK/bb-debs" busybox-static || die "cannot download busybox-static"
    deb=$(ls "$WORK"/bb-debs/busybox-static_*.deb)
    dpkg-deb -x "$deb" "$WORK/bb"
    for c in "$WORK/bb/bin/busybox" "$WORK/bb/usr/bin/busybox"; do
        [[ -x $c ]] && BUSYBOX=$c && break
    done
    [[ -n $BUSYBOX ]] || die "busybox-static package has no busybox binary"
    BUSYBOX_SRC="busybox-static $(deb_version "$deb") (apt-get download)"
fi
mkdir -p "$ROOT/bin"
cp "$BUSYBOX" "$ROOT/bin/busybox"
chmod 755 "$ROOT/bin/busybox"
# Applet symlinks (bin/ls, sbin/poweroff, usr/bin/...), all -> /bin/busybox.
while IFS= read -r applet; do
    [[ -n $applet && $applet != */busybox ]] || continue
    mkdir -p "$ROOT/$(dirname "$applet")"
    ln -sfn /bin/busybox "$ROOT/$applet"
done < <("$BUSYBOX" --list-full)

# ---------------------------------------------------------------- qemu-ga
QGA=""
QGA_SYSROOT=""
if ((HOST_BINARIES)) && [[ -x /usr/sbin/qemu-ga ]] && ldd /usr/sbin/qemu-ga >/dev/null 2>&1 \
        && ! ldd /usr/sbin/qemu-ga | grep -q 'not found'; then
    QGA=/usr/sbin/qemu-ga
    QGA_SRC="/usr/sbin/qemu-ga ($(dpkg-query -W -f='qemu-guest-agent ${Version}' qemu-guest-agent 2>/dev/null || echo host))"
else
    log "downloading qemu-guest-agent and missing libraries (no usable host qemu-ga, or HOST_BINARIES=0)"
    QGA_SYSROOT="$WORK/qga"
    mkdir -p "$WORK/qga-debs" "$QGA_SYSROOT"
    # The package and the shared-library packages of its dependency closure
    # that are not installed on the host.
    pkgs=(qemu-guest-agent)
    while IFS= read -r p; do
        [[ $p == lib* ]] || continue
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' && continue
        pkgs+=("$p")
    done < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
                --no-breaks --no-replaces --no-enhances --no-pre-depends qemu-guest-agent 2>/dev/null \
             | awk '/^[a-z0-9]/ { print $1 }' | sed 's/:.*//' | sort -u)
    apt_download "$WORK/qga-debs" "${pkgs[@]}" || die "cannot download ${pkgs[*]}"
    for deb in "$WORK"/qga-debs/*.deb; do dpkg-deb -x "$deb" "$QGA_SYSROOT"; done
    QGA="$QGA_SYSROOT/usr/sbin/qemu-ga"
    [[ -x $QGA ]] || die "qemu-guest-agent package has no /usr/sbin/qemu-ga"
    QGA_SRC="qemu-guest-agent $(deb_version "$(ls "$WORK"/qga-debs/qemu-guest-agent_*.deb)") (apt-get download)"
fi
mkdir -p "$ROOT/usr/sbin"
cp "$QGA" "$ROOT/usr/sbin/qemu-ga"
chmod 755 "$ROOT/usr/sbin/qemu-ga"

# Shared libraries (ldd output is already the recursive closure) and the
# dynamic loader at its expected path. Libraries from the sysroot keep their
# path relative to the sysroot.
LDPATH=""
if [[ -n $QGA_SYSROOT ]]; then
    LDPATH="$QGA_SYSROOT/lib/x86_64-linux-gnu:$QGA_SYSROOT/usr/lib/x86_64-linux-gnu"
fi
ldd_out=$(LD_LIBRARY_PATH=$LDPATH ldd "$QGA") || die "ldd $QGA failed"
if grep -q 'not found' <<<"$ldd_out"; then
    die "qemu-ga has unresolved libraries: $(grep 'not found' <<<"$ldd_out" | tr -s ' \t\n' ' ')"
fi
while read -r a b c _; do
    if [[ $b == "=>" ]]; then lib=$c; else lib=$a; fi
    [[ $lib == /* ]] || continue # linux-vdso.so.1
    dest=$lib
    [[ -n $QGA_SYSROOT && $lib == "$QGA_SYSROOT"/* ]] && dest=${lib#"$QGA_SYSROOT"}
    mkdir -p "$ROOT$(dirname "$dest")"
    cp -L "$lib" "$ROOT$dest"
done <<<"$ldd_out"
interp=$(grep -oE '^[[:space:]]*/[^ ]*ld-linux[^ ]*' <<<"$ldd_out" | tr -d '[:space:]' || true)
[[ -n $interp && -e $ROOT$interp ]] || die "dynamic loader not copied (ldd output: $ldd_out)"

# ---------------------------------------------------------------- console keymaps
# The VGA console's layouts for the keyboard tests (hc.keymap=NAME, or
# /usr/libexec/hypercore/keymap NAME through the agent): busybox loadkmap files
# made by kbd's loadkeys -u -b (Unicode values: the console runs in UTF-8 mode)
# from console-data's keymaps. Both packages are only unpacked here, never
# installed; loadkeys needs nothing but libc. de follows xkb's default German
# layout (what X11 and Debian's console-setup give): ^ ` and the acute accent are
# dead keys, AltGr+plus is a plain ~ and AltGr+e the euro sign (console-data's
# de-latin1 has a dead ~ and the currency sign there).
log "building console keymaps (kbd, console-data)"
KBD_ROOT="$WORK/kbd"
mkdir -p "$WORK/kbd-debs" "$KBD_ROOT"
apt_download "$WORK/kbd-debs" kbd console-data || die "cannot download kbd and console-data"
for deb in "$WORK"/kbd-debs/*.deb; do dpkg-deb -x "$deb" "$KBD_ROOT"; done
LOADKEYS=$KBD_ROOT/bin/loadkeys
[[ -x $LOADKEYS ]] || LOADKEYS=$KBD_ROOT/usr/bin/loadkeys
[[ -x $LOADKEYS ]] || die "the kbd package has no loadkeys"
KMAPS="$KBD_ROOT/usr/share/keymaps/i386"
# A map of our own beside console-data's: its includes are found relative to it
# (loadkeys wants the absolute path of a gzipped map for that).
{
    gzip -dc "$KMAPS/qwertz/de-latin1.kmap.gz"
    echo "altgr keycode 27 = asciitilde"
    echo "altgr keycode 18 = U+20AC"
} | gzip -n > "$KMAPS/qwertz/hypercore-de.kmap.gz"
mkdir -p "$ROOT/usr/share/hypercore/keymaps"
for pair in us:qwerty/us de:qwertz/hypercore-de; do
    "$LOADKEYS" -q -u -b "$KMAPS/${pair#*:}.kmap.gz" > "$ROOT/usr/share/hypercore/keymaps/${pair%%:*}.bmap" \
        || die "loadkeys failed for ${pair#*:}"
    [[ $(head -c 7 "$ROOT/usr/share/hypercore/keymaps/${pair%%:*}.bmap") == bkeymap ]] \
        || die "loadkeys wrote no binary keymap for ${pair#*:}"
done
KEYMAPS_SRC="us de from $(for deb in "$WORK"/kbd-debs/*.deb; do printf '%s %s, ' "$(dpkg-deb -f "$deb" Package)" "$(deb_version "$deb")"; done)"
KEYMAPS_SRC=${KEYMAPS_SRC%, }

# ---------------------------------------------------------------- rootfs
cp -R "$ROOTFS_SRC"/. "$ROOT"/
chmod 755 "$ROOT/init" "$ROOT/sbin/shutdown" "$ROOT"/usr/libexec/hypercore/*
chmod 600 "$ROOT/etc/shadow"
mkdir -p "$ROOT"/{dev,proc,sys,run,tmp,shared,mnt,root,home/hcuser,var/lib,var/log,var/tmp,etc/qemu}
chmod 1777 "$ROOT/tmp" "$ROOT/var/tmp"
chmod 700 "$ROOT/root"
ln -sfn /run "$ROOT/var/run"
ln -sfn /run/lock "$ROOT/var/lock"
ln -sfn /proc/self/mounts "$ROOT/etc/mtab"
{
    echo "kernel=$KVER"
    echo "key=$KEY"
} > "$ROOT/etc/hypercore/build-id"

# ---------------------------------------------------------------- cpio (newc)
# Written here rather than with cpio(1) so that no extra package is needed, all
# files are root-owned (except /home/hcuser: 1000:1000) even when built by a
# normal user, /dev/console exists without mknod, and mtimes are fixed.
CPIO_INO=100
CPIO_MTIME=1
ZEROS='\0\0\0' # printf format: up to 3 NUL bytes of padding
# shellcheck disable=SC2059
newc_hdr() { # NAME MODE(octal) SIZE UID GID RMAJ RMIN NLINK
    local name=$1 namesize=$((${#1} + 1)) pad
    CPIO_INO=$((CPIO_INO + 1))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\0' \
        "$CPIO_INO" $((8#$2)) "$4" "$5" "$8" "$CPIO_MTIME" "$3" 0 0 "$6" "$7" "$namesize" 0 "$name"
    pad=$(((4 - (110 + namesize) % 4) % 4))
    printf "${ZEROS:0:pad*2}"
}
# shellcheck disable=SC2059
newc_pad() { local pad=$(((4 - $1 % 4) % 4)); printf "${ZEROS:0:pad*2}"; }
write_cpio() { # DIR
    local type mode size path name owner target
    newc_hdr dev 40755 0 0 0 0 0 2
    newc_hdr dev/console 20600 0 0 0 5 1 1
    while IFS=' ' read -r -d '' type mode size path; do
        name=${path#./}
        [[ $name == dev ]] && continue
        owner=(0 0)
        [[ $name == home/hcuser ]] && owner=(1000 1000)
        case $type in
            d) newc_hdr "$name" "4$(printf '%04o' "0$mode")" 0 "${owner[@]}" 0 0 2 ;;
            f)
                newc_hdr "$name" "10$(printf '%04o' "0$mode")" "$size" "${owner[@]}" 0 0 1
                cat "$path"
                newc_pad "$size"
                ;;
            l)
                target=$(readlink "$path")
                newc_hdr "$name" 120777 "${#target}" "${owner[@]}" 0 0 1
                printf '%s' "$target"
                newc_pad "${#target}"
                ;;
            *) die "unsupported file type $type: $path" ;;
        esac
    done < <(cd "$1" && find . -mindepth 1 -printf '%y %m %s %p\0' | sort -z -k4)
    newc_hdr 'TRAILER!!!' 0 0 0 0 0 0 1
}
(cd "$ROOT" && write_cpio "$ROOT") > "$WORK/initrd.cpio"
# pad the archive to a 512-byte multiple (as cpio(1) does)
size=$(stat -c %s "$WORK/initrd.cpio")
if ((size % 512)); then head -c $((512 - size % 512)) /dev/zero >> "$WORK/initrd.cpio"; fi

if [[ $COMPRESSION == zstd ]] && ! command -v zstd >/dev/null; then
    log "zstd not installed; using gzip"
    COMPRESSION_USED=gzip
else
    COMPRESSION_USED=$COMPRESSION
fi
case $COMPRESSION_USED in
    zstd) zstd -q -19 -T0 -c "$WORK/initrd.cpio" > "$STAGE/initrd.img" ;;
    gzip) gzip -9 -n -c "$WORK/initrd.cpio" > "$STAGE/initrd.img" ;;
esac

cp "$VMLINUZ" "$STAGE/vmlinuz"

# vmlinux for PVH boot: the bzImage payload is the (stripped) ELF vmlinux,
# compressed; find the compressed stream and unpack it (as the kernel's
# scripts/extract-vmlinux does). QEMU boots such an ELF via its PVH note.
extract_vmlinux() { # BZIMAGE OUT
    local magic off tool
    for magic in 'xz:\xFD7zXZ\x00' 'zstd:\x28\xB5\x2F\xFD' 'gzip:\x1F\x8B\x08'; do
        tool=${magic%%:*}
        command -v "$tool" >/dev/null || continue
        while read -r off; do
            off=${off%%:*}
            case $tool in
                xz) tail -c +$((off + 1)) "$1" | xz -dcq --single-stream > "$2" 2>/dev/null ;;
                zstd) tail -c +$((off + 1)) "$1" | zstd -dcq > "$2" 2>/dev/null ;;
                gzip) tail -c +$((off + 1)) "$1" | gzip -dcq > "$2" 2>/dev/null ;;
            esac
            if [[ $(head -c 4 "$2" 2>/dev/null | od -An -tx1 | tr -d ' \n') == 7f454c46 ]]; then
                return 0
            fi
        done < <(LC_ALL=C grep -obUaP "${magic#*:}" "$1" | head -n 5)
    done
    rm -f "$2"
    return 1
}
KCONFIG="$(dirname "$VMLINUZ")/config-$KVER"
if grep -q '^CONFIG_PVH=y' "$KCONFIG" 2>/dev/null && extract_vmlinux "$VMLINUZ" "$STAGE/vmlinux"; then
    log "extracted vmlinux for PVH boot ($(stat -c %s "$STAGE/vmlinux") bytes)"
else
    log "warning: no vmlinux (PVH) extracted; use vmlinuz"
    rm -f "$STAGE/vmlinux"
fi
printf '%s\n' "$CMDLINE" > "$STAGE/cmdline"
{
    echo "key=$KEY"
    echo "kernel_version=$KVER"
    echo "kernel=$KERNEL_SRC"
    echo "busybox=$BUSYBOX_SRC"
    echo "qemu_ga=$QGA_SRC"
    echo "keymaps=$KEYMAPS_SRC"
    echo "vmlinux=$([[ -f $STAGE/vmlinux ]] && echo yes || echo no)"
    echo "initrd_compression=$COMPRESSION_USED"
    echo "initrd_uncompressed_bytes=$(stat -c %s "$WORK/initrd.cpio")"
    echo "modules=${MOD_ORDER[*]}"
    echo "script_sha256=$(sha256sum "$SCRIPT_PATH" | cut -d' ' -f1)"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$STAGE/build-id"
chmod 755 "$STAGE"
chmod 644 "$STAGE"/*

# ---------------------------------------------------------------- install
if [[ -e $GUEST_DIR || -L $GUEST_DIR ]]; then
    OLD="$CACHE_ROOT/.old.$KVER.$$"
    mv -T "$GUEST_DIR" "$OLD"
fi
mv -T "$STAGE" "$GUEST_DIR"
log "built $GUEST_DIR (initrd $(stat -c %s "$GUEST_DIR/initrd.img") bytes, $COMPRESSION_USED)"
finish "$GUEST_DIR"
