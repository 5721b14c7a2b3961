#!/bin/sh
# hypercore cp: the sha256 of a guest file (to check a copy end to end).
# (Read from stdin: GNU sha256sum escapes odd names and would prefix its line with ``\``.)
#
# argv: FILE
# stdout: sha256sum's line for FILE ("HEX  -")
# stderr and exit status on failure: one line; 8 the guest has no sha256sum, else
#   sha256sum's own status
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

command -v sha256sum >/dev/null 2>&1 \
    || { echo "the guest has no sha256sum (install coreutils, or copy with --no-verify)" >&2
         exit 8; }
sha256sum < "$1"
