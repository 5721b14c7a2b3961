#!/bin/sh
# hypercore cp, into this guest through the shared folder: fill the temporary file.
# Copies the file the host staged in the shared folder into the temporary file (made by
# cp-prepare-destination.sh) and checks the copy: its size, and the sha256 of the listed
# 64 KiB blocks (the host hashed the whole file and chose the blocks at random; hashing
# all of it here would take twice as long as the copy). The host then checks that the
# staged file did not change meanwhile, and cp-finalize.sh puts the file in place.
#
# argv: STAGED TMP SIZE BLOCKS SUM
#   STAGED  the file in the shared folder
#   TMP     the temporary file to fill
#   SIZE    the staged file's size in bytes
#   BLOCKS  block numbers (64 KiB blocks), ascending, separated by spaces (may be empty)
#   SUM     the sha256 of those blocks, read in that order
# stdout: nothing
# stderr and exit status on failure: one line; 7 the copy failed (dd's reason), 8 no or
#   failing sha256sum, 9 the copy differs from the staged file (size or blocks). TMP is
#   removed.
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
copy() {  # copy FROM TO: dd in 1 MiB blocks (large 9p requests); prints dd's reason on failure
    if ! err=$(dd if="$1" of="$2" bs=1M 2>&1 >/dev/null); then
        printf '%s\n' "$err" | grep -v -e 'records in' -e 'records out' -e 'copied' | tail -n 1
        return 1
    fi
}
spot() {  # spot FILE BLOCKS: sha256sum's line for those 64 KiB blocks of FILE, in order
    for block in $2; do
        dd if="$1" bs=65536 skip="$block" count=1 2>/dev/null || break
    done | sha256sum
}

staged=$1 tmp=$2 size=$3 blocks=$4 want=$5
fail() { rm -f "$tmp"; printf '%s\n' "$2" >&2; exit "$1"; }
reason=$(copy "$staged" "$tmp") || fail 7 "copying from the shared folder failed: $reason"
got=$(stat -c %s "$tmp") || fail 9 "cannot check the copy's size"
[ "$got" = "$size" ] \
    || fail 9 "the copy in the guest has $got bytes, the shared folder's file $size"
command -v sha256sum >/dev/null 2>&1 \
    || fail 8 "the guest has no sha256sum (install coreutils, or copy with --no-verify)"
got=$(spot "$tmp" "$blocks") || fail 8 "sha256sum failed in the guest"
got=${got%% *}
[ "$got" = "$want" ] || fail 9 "checksum mismatch in the guest: the copy differs from the \
shared folder's file (sha256 of the sampled blocks $got, expected $want)"
