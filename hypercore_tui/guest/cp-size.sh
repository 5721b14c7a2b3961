#!/bin/sh
# hypercore cp: the size of a guest file (does the guest see a file the host wrote into
# the shared folder?).
#
# argv: FILE
# stdout: the size in bytes; exit status: stat's
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

stat -c %s "$1"
