#!/bin/sh
# hypercore cp, out of this guest through the shared folder: the guest side.
# Copies SRC into the shared folder (where the host picks it up) and prints its sha256.
# (``sha256sum < FILE``: GNU sha256sum escapes a name with a backslash or newline and then
# starts its line with ``\``, which would read as a checksum mismatch.)
#
# argv: SRC STAGED VERIFY
#   SRC     the guest file to copy
#   STAGED  the path to write in the shared folder (mode 0600)
#   VERIFY  1: print SRC's sha256; anything else: do not
# stdout: sha256sum's line for SRC ("HEX  -"), when VERIFY is 1
# stderr and exit status on failure: one line; 7 the copy failed (dd's reason),
#   8 no or failing sha256sum. STAGED is removed.
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
copy() {  # copy FROM TO: dd in 1 MiB blocks (large 9p requests); prints dd's reason on failure
    if ! err=$(dd if="$1" of="$2" bs=1M 2>&1 >/dev/null); then
        printf '%s\n' "$err" | grep -v -e 'records in' -e 'records out' -e 'copied' | tail -n 1
        return 1
    fi
}

src=$1 staged=$2 verify=$3
fail() { rm -f "$staged"; printf '%s\n' "$2" >&2; exit "$1"; }
umask 077
reason=$(copy "$src" "$staged") || fail 7 "copying into the shared folder failed: $reason"
if [ "$verify" = 1 ]; then
    command -v sha256sum >/dev/null 2>&1 \
        || fail 8 "the guest has no sha256sum (install coreutils, or copy with --no-verify)"
    sha256sum < "$src" || fail 8 "sha256sum failed in the guest"
fi
