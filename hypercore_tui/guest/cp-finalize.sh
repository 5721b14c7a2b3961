#!/bin/sh
# hypercore cp, into this guest, last step: put the written file in place.
# Fills the temporary file from a file staged in the shared folder (if one is given),
# checks its sha256 (if one is given) and its size (if one is given), gives it the
# source's permission bits and the owner of its directory, and renames it to the final
# path (TMP lies in FINAL's directory: a rename, never a copy). On any failure the
# temporary file is removed.
#
# argv: TMP FINAL SHA256 MODE STAGED [SIZE]
#   TMP     the temporary file (made by cp-prepare-destination.sh)
#   FINAL   the final path
#   SHA256  the expected sha256 in hex, or "" (no check)
#   MODE    octal permission bits for chmod
#   STAGED  a file (in the shared folder, or the source inside the guest) to copy into
#           TMP first, or ""
#   SIZE    the expected size in bytes, or "" (no check)
# stdout: nothing
# stderr and exit status on failure: one line; 7 the copy from the share failed (dd's
#   reason), 8 no or failing sha256sum, 9 checksum or size mismatch, 10 the rename
#   failed
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
copy() {  # copy FROM TO: dd in 1 MiB blocks (large 9p requests); prints dd's reason on failure
    if ! err=$(dd if="$1" of="$2" bs=1M 2>&1 >/dev/null); then
        printf '%s\n' "$err" | grep -v -e 'records in' -e 'records out' -e 'copied' | tail -n 1
        return 1
    fi
}

tmp=$1 final=$2 want=$3 mode=$4 staged=$5 size=${6-}
fail() { rm -f "$tmp"; printf '%s\n' "$2" >&2; exit "$1"; }
if [ -n "$staged" ]; then
    reason=$(copy "$staged" "$tmp") || fail 7 "copying from the shared folder failed: $reason"
fi
if [ -n "$want" ]; then
    command -v sha256sum >/dev/null 2>&1 \
        || fail 8 "the guest has no sha256sum (install coreutils, or copy with --no-verify)"
    got=$(sha256sum "$tmp") || fail 8 "sha256sum failed in the guest"
    got=${got%% *}
    [ "$got" = "$want" ] || fail 9 "checksum mismatch in the guest (sha256 $got, expected $want)"
fi
chmod "$mode" "$tmp" 2>/dev/null
dir=${final%/*}
[ -n "$dir" ] || dir=/
# One stat: the temporary file's size, the directory's owner.
info=$(stat -c '%s %u:%g' "$tmp" "$dir" 2>/dev/null) || info=
got=${info%% *} owner=${info##* }
if [ -n "$size" ]; then
    [ -n "$info" ] || fail 9 "cannot check the copy's size"
    [ "$got" = "$size" ] || fail 9 "the copy in the guest has $got bytes, not $size"
fi
[ -n "$info" ] && [ "$owner" != 0:0 ] && chown "$owner" "$tmp" 2>/dev/null
mv -f "$tmp" "$final" || fail 10 "cannot rename the temporary file to $final"
