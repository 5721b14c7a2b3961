#!/bin/sh
# hypercore cp, out of this guest, step 1: is the source a file we can read?
# Checks SRC and reports its size, its permission bits and, when it lies inside the
# shared folder's mount, its path there (the host then reads it from the share itself).
#
# argv: SRC SHARE_MOUNTPOINT
#   SRC               the guest file to copy
#   SHARE_MOUNTPOINT  where the shared folder is mounted in the guest, or ""
# stdout: KEY=VALUE records, each ended by a NUL: size=BYTES, mode=OCTAL, share_rel=/PATH
# stderr and exit status on failure: one line; 3 no such file, 4 a directory or not a
#   regular file, 5 not readable
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
out() { printf '%s=%s\0' "$1" "$2"; }

src=$1 mnt=$2
fail() { printf '%s\n' "$2" >&2; exit "$1"; }
[ -e "$src" ] || fail 3 "no such file in the guest: $src"
[ -d "$src" ] && fail 4 "$src is a directory; copying directories is not supported \
(pack it with tar first)"
[ -f "$src" ] || fail 4 "$src is not a regular file"
[ -r "$src" ] || fail 5 "$src is not readable"
info=$(stat -L -c '%s %a' "$src") || fail 5 "cannot stat $src"
out size "${info% *}"
out mode "${info#* }"
if [ -n "$mnt" ]; then
    rsrc=$(realpath "$src" 2>/dev/null) || rsrc=
    case $rsrc in "${mnt%/}"/*) out share_rel "${rsrc#"${mnt%/}"}" ;; esac
fi
