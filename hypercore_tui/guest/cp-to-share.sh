#!/bin/sh
# hypercore cp, out of this guest through the shared folder: the guest side.
# Copies SRC into the shared folder (where the host picks it up and hashes all of it),
# checks that SRC did not change meanwhile (its size, inode and times before and after)
# and prints the sha256 of the listed 64 KiB blocks of SRC, which the host compares with
# the same blocks of what it received (hashing all of SRC here would take twice as long
# as the copy).
#
# argv: SRC STAGED SIZE VERIFY BLOCKS
#   SRC     the guest file to copy
#   STAGED  the path to write in the shared folder (mode 0600)
#   SIZE    SRC's size in bytes as cp-prepare-source.sh saw it
#   VERIFY  1: print the blocks' sha256; anything else: do not
#   BLOCKS  block numbers (64 KiB blocks), ascending, separated by spaces (may be empty)
# stdout: sha256sum's line for those blocks of SRC ("HEX  -"), when VERIFY is 1
# stderr and exit status on failure: one line; 7 the copy failed (dd's reason),
#   8 no or failing sha256sum, 11 SRC changed. STAGED is removed.
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

src=$1 staged=$2 size=$3 verify=$4 blocks=$5
fail() { rm -f "$staged"; printf '%s\n' "$2" >&2; exit "$1"; }
umask 077
before=$(stat -L -c '%s %d %i %y %z' "$src") || fail 7 "cannot stat $src"
[ "${before%% *}" = "$size" ] \
    || fail 11 "$src changed while it was copied (${before%% *} bytes now, not $size); copy it again"
reason=$(copy "$src" "$staged") || fail 7 "copying into the shared folder failed: $reason"
after=$(stat -L -c '%s %d %i %y %z' "$src") || fail 7 "cannot stat $src"
[ "$after" = "$before" ] \
    || fail 11 "$src changed while it was copied (written to meanwhile); copy it again"
if [ "$verify" = 1 ]; then
    command -v sha256sum >/dev/null 2>&1 \
        || fail 8 "the guest has no sha256sum (install coreutils, or copy with --no-verify)"
    spot "$src" "$blocks" || fail 8 "sha256sum failed in the guest"
fi
