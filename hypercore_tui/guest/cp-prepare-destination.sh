#!/bin/sh
# hypercore cp, into this guest, step 1: where does the file go?
# Resolves the final path (DST itself, or DST/NAME when DST is a directory), reports the
# free space there and whether it lies inside the shared folder's mount, and (unless the
# host will write the file through the share itself) creates the temporary file, mode
# 0600 and exclusively, next to the final path.
#
# argv: DST NAME TOKEN SHARE_MOUNTPOINT DIRECT_OK
#   DST               the destination path the user gave (a trailing / means a directory)
#   NAME              the file's name, used when DST is a directory
#   TOKEN             random hex naming the temporary file .hypercore-TOKEN.part
#   SHARE_MOUNTPOINT  where the shared folder is mounted in the guest, or ""
#   DIRECT_OK         1: the host may write into the share itself (then no temporary file)
# stdout: KEY=VALUE records, each ended by a NUL: final=PATH, free="AVAIL BLOCKSIZE" (when
#   stat can tell), share_rel=/PATH (the final path inside the share), tmp=PATH (the
#   temporary file, unless the host writes through the share)
# stderr and exit status on failure: one line; 3 no such directory, 4 DST names a
#   directory where a file was expected, 6 the temporary file cannot be created
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
out() { printf '%s=%s\0' "$1" "$2"; }

dst=$1 name=$2 token=$3 mnt=$4 direct_ok=$5
fail() { printf '%s\n' "$2" >&2; exit "$1"; }
if [ -d "$dst" ]; then
    case $dst in */) final=$dst$name ;; *) final=$dst/$name ;; esac
else
    case $dst in */) fail 3 "no such directory in the guest: $dst" ;; esac
    final=$dst
fi
[ -d "$final" ] && fail 4 "$final is a directory in the guest"
dir=${final%/*}
[ -n "$dir" ] || dir=/
[ -d "$dir" ] || fail 3 "no such directory in the guest: $dir"
out final "$final"
free=$(stat -f -c '%a %S' "$dir" 2>/dev/null) && out free "$free"
rel=
if [ -n "$mnt" ]; then
    rdir=$(realpath "$dir" 2>/dev/null) || rdir=
    case $rdir/ in "${mnt%/}"/*) rel=${rdir#"${mnt%/}"}/${final##*/}; out share_rel "$rel" ;; esac
fi
[ -n "$rel" ] && [ "$direct_ok" = 1 ] && exit 0
tmp=${dir%/}/.hypercore-$token.part
umask 077
if ! err=$( { set -C; : > "$tmp"; } 2>&1 ); then
    fail 6 "cannot create a file in $dir: ${err##*: }"
fi
out tmp "$tmp"
