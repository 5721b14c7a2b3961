#!/bin/sh
# hypercore cp: remove a temporary file left by a copy that failed (best effort).
#
# argv: FILE
# stdout: nothing; exit status: rm's
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

rm -f -- "$1"
