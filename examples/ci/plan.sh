#!/bin/sh
# plan.sh MANIFEST OUT [PLAN OPTIONS...]: the plan of MANIFEST as Markdown in OUT, for
# a pull-request comment, and on stdout for the job's log.
#
# Exit status, as `desync-decl plan --detailed-exitcode` defines it: 0 nothing would
# change, 2 something would, 1 an error (a task's error is a row of the plan; a
# manifest that does not load leaves OUT saying so, the error is in the log).
# A plan longer than DESYNC_DECL_COMMENT_LIMIT characters (default 60000; GitHub
# takes 65536 in a comment) is cut at a line, and says so.
set -u
if [ "$#" -lt 2 ]; then
    echo "usage: plan.sh MANIFEST OUT [PLAN OPTIONS...]" >&2
    exit 1
fi
manifest=$1
out=$2
shift 2
limit=${DESYNC_DECL_COMMENT_LIMIT:-60000}

status=0
desync-decl plan --markdown --detailed-exitcode "$@" -- "$manifest" >"$out" || status=$?
if [ "$status" -eq 1 ] && [ ! -s "$out" ]; then
    printf '### desync-decl plan failed\n\nThe manifest did not load: its errors are in the log of this job.\n' >"$out"
fi
cat "$out"
if [ "$(wc -m <"$out")" -gt "$limit" ]; then
    awk -v limit="$limit" '{ n += length($0) + 1; if (n > limit) exit; print }' "$out" >"$out.cut"
    printf '\n… the plan is cut here: the whole of it is in the log of this job.\n' >>"$out.cut"
    mv "$out.cut" "$out"
fi
exit "$status"
