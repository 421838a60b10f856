#!/usr/bin/env bash
# internal_headers_test.sh SOURCE_DIR - a *_internal.h is included only from its own folder.
#
# A folder is a library (model/engine, pipeline, image...): its *_internal.h holds the state its .c files
# share, and code elsewhere must go through the folder's public headers. The one exception is the folder's
# mirror under tests/ (tests/pipeline for pipeline/, tests/model/io for model/io): white-box unit tests of
# that folder. Every offence is printed as "FILE includes HEADER (folder X)"; the test fails if there is any.
#
# Includes are resolved the way the build resolves them: "dir/x_internal.h" from the repository root (the
# one include directory), "x_internal.h" and "../x_internal.h" relative to the including file.
set -euo pipefail
. "$(dirname "$0")/check_selftest.sh"
src=${1:?usage: internal_headers_test.sh SOURCE_DIR}

# sources DIR - every .c and .h of the tree, relative to DIR (build trees and .git left out).
sources() {
    if git -C "$1" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
        # Tracked and new (not ignored) files: what the next commit would hold.
        git -C "$1" ls-files --cached --others --exclude-standard -- '*.c' '*.h'
    else
        (cd "$1" && find . \( -name '.git' -o -path './build*' \) -prune -o \( -name '*.c' -o -name '*.h' \) -print |
            sed 's#^\./##')
    fi
}

# normalize PATH - PATH with "." and "dir/.." removed (no file system access).
normalize() {
    local IFS=/ part out=()
    for part in $1; do
        case $part in
        '' | .) ;;
        ..) [ ${#out[@]} -gt 0 ] && unset 'out[${#out[@]}-1]' ;;
        *) out+=("$part") ;;
        esac
    done
    echo "${out[*]}"
}

# check DIR - print every offence in DIR's tree; return 1 if there is one.
check() {
    local dir=$1 file hdr resolved hdr_dir file_dir n=0
    while IFS= read -r file; do
        [ -f "$dir/$file" ] || continue   # listed by git but deleted in the work tree
        while IFS= read -r hdr; do
            case $hdr in
            */*) case $hdr in ../* | ./*) resolved=$(normalize "$(dirname "$file")/$hdr") ;; *) resolved=$hdr ;; esac ;;
            *) resolved=$(normalize "$(dirname "$file")/$hdr") ;;
            esac
            hdr_dir=$(dirname "$resolved")
            file_dir=$(dirname "$file")
            file_dir=${file_dir#tests/}   # the folder's test mirror counts as the folder
            if [ "$file_dir" != "$hdr_dir" ]; then
                echo "$file includes $hdr (folder $hdr_dir): a *_internal.h may only be included from $hdr_dir/"
                n=$((n + 1))
            fi
        done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*_internal\.h\)".*/\1/p' "$dir/$file")
    done < <(sources "$dir")
    [ "$n" -eq 0 ]
}

# The check itself catches offences: a synthetic tree with one allowed include of each kind and two bad ones.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/a/b" "$tmp/c" "$tmp/tests/a/b"
touch "$tmp/a/b/x_internal.h"
printf '#include "a/b/x_internal.h"\n#include "x_internal.h"\n' > "$tmp/a/b/ok.c"
printf '#include "a/b/x_internal.h"\n' > "$tmp/tests/a/b/white_box.c"
printf '#include "a/b/x_internal.h"\n' > "$tmp/c/bad_root.c"
printf '  #  include "../a/b/x_internal.h"\n' > "$tmp/a/bad_relative.c"
expect_reports "$tmp" "c/bad_root.c includes a/b/x_internal.h" "a/bad_relative.c includes ../a/b/x_internal.h"

# The real tree.
if ! check "$src"; then
    echo "FAIL: *_internal.h included from outside its folder (see above)" >&2
    exit 1
fi
echo "ok: every *_internal.h is included only from its own folder (or its tests/ mirror)"
