#!/bin/sh
# runtime-packages.sh BINARY - the Debian packages that hold the shared libraries BINARY loads (one per
# line, sorted), for the runtime stage of deploy/Dockerfile. libc6 is left out: every Debian base has it.
# Each library is asked for under its path and its resolved path (merged /usr: dpkg knows one of them).
set -eu
bin=${1:?usage: runtime-packages.sh BINARY}
libs=$(ldd "$bin" | awk '/=> \// { print $3 }')
[ -n "$libs" ] || { echo "runtime-packages.sh: $bin links no shared library?" >&2; exit 1; }
paths=$(for l in $libs; do echo "$l"; readlink -f "$l"; done | sort -u)
# shellcheck disable=SC2086
dpkg -S $paths 2>/dev/null | cut -d: -f1 | tr ',' '\n' | sed 's/^ *//' | sort -u | grep -v -x -e libc6
