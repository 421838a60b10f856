#!/usr/bin/env bash
# model_layers_test.sh SOURCE_DIR - the folders of model/ and image/ include only what model/README.md says
# they may: the layering is checked on the includes too, not only by the linker (which misses a header-only
# dependency such as model/math/vec_math.h, or an include whose symbols happen not to be used).
#
# Every folder may include base/ and itself. An offence prints "FILE includes HEADER: FOLDER may include ...".
set -euo pipefail
. "$(dirname "$0")/check_selftest.sh"
src=${1:?usage: model_layers_test.sh SOURCE_DIR}

# allowed FOLDER - the project folders FOLDER may include (besides base/ and itself); the order of
# model/README.md ("Folders, in data-flow order"). Folders not listed here are not checked.
allowed() {
    case $1 in
    model/math | model/tokenizer | model/seg | image) echo "" ;;
    model/io) echo "model/math" ;;
    model/ref) echo "model/io model/math" ;;
    model/linear) echo "model/math" ;;
    model/engine) echo "model/linear model/io model/math" ;;
    model/generate) echo "model/engine model/ref model/tokenizer model/linear model/io model/math" ;;
    model/tools) echo "model/generate model/engine model/ref model/tokenizer model/linear model/io model/math" ;;
    *) echo "*" ;;
    esac
}

# check DIR - print every offence under DIR; return 1 if there is one.
check() {
    local dir=$1 file folder ok hdr hdr_dir n=0
    while IFS= read -r file; do
        folder=$(dirname "$file")
        ok=$(allowed "$folder")
        [ "$ok" = "*" ] && continue
        while IFS= read -r hdr; do
            case $hdr in */*) ;; *) continue ;; esac   # a bare name is the folder's own header
            hdr_dir=$(dirname "$hdr")
            case " base $folder $ok " in *" $hdr_dir "*) continue ;; esac
            echo "$file includes $hdr: $folder may include base/${ok:+ and $ok} only (model/README.md)"
            n=$((n + 1))
        done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$dir/$file")
    done < <(cd "$dir" && find model image -name '*.[ch]' 2>/dev/null | sort)
    [ "$n" -eq 0 ]
}

# The check catches offences: a synthetic tree with allowed includes and two upward ones.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/model/engine" "$tmp/model/ref" "$tmp/image"
printf '#include "base/err.h"\n#include "model/linear/mm.h"\n#include "engine.h"\n' > "$tmp/model/engine/ok.c"
printf '#include "model/engine/engine.h"\n' > "$tmp/model/ref/up.c"
printf '#include "model/io/model.h"\n' > "$tmp/image/up.c"
expect_reports "$tmp" "model/ref/up.c includes model/engine/engine.h" "image/up.c includes model/io/model.h"

if ! check "$src"; then
    echo "FAIL: an include against the layering of model/README.md (see above)" >&2
    exit 1
fi
echo "ok: model/ and image/ folders include only the folders model/README.md allows"
