#!/bin/sh
# apply.sh MANIFEST [APPLY OPTIONS...]: converge this machine to MANIFEST.
#
# Exit status: 0 every task ended ok or changed (and every handler ran), 1 otherwise.
set -u
if [ "$#" -lt 1 ]; then
    echo "usage: apply.sh MANIFEST [APPLY OPTIONS...]" >&2
    exit 1
fi
manifest=$1
shift
exec desync-decl apply "$@" -- "$manifest"
