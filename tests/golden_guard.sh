#!/bin/sh
# The one gate in front of every test that reads the golden reference data (registered with pf_golden_test in
# tests/CMakeLists.txt, ctest label `golden`). The data lives outside the repository (../shared/golden, or
# -DPALIFLOW_SHARED=DIR): a user's clone does not have it, CI does.
#   - data present: run the test (exec, so its exit status and output are the test's own);
#   - data absent, golden data required (CI=true, or PALIFLOW_REQUIRE_GOLDEN=1): fail, naming what is missing,
#     because in CI a missing tree would otherwise turn the whole golden suite into silent skips;
#   - data absent otherwise: exit 77 (ctest SKIP_RETURN_CODE) with a one-line reason: skipped, never failed.
# PALIFLOW_REQUIRE_GOLDEN=0 lets a CI job that deliberately runs a plain clone (no ../shared) skip them too.
# usage: golden_guard.sh GOLDEN_DIR [NEEDED_PATH...] -- COMMAND [ARG...]
#        NEEDED_PATH is relative to GOLDEN_DIR (a file or folder the test reads); default: GOLDEN_DIR itself.
set -u
[ $# -ge 3 ] || { echo "golden_guard.sh: usage: GOLDEN_DIR [NEEDED_PATH...] -- COMMAND [ARG...]" >&2; exit 2; }
golden=$1
shift
missing=""
[ -d "$golden" ] || missing=$golden
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    [ -n "$missing" ] || [ -e "$golden/$1" ] || missing=$golden/$1
    shift
done
[ "${1:-}" = "--" ] || { echo "golden_guard.sh: no -- before the command" >&2; exit 2; }
shift
[ $# -ge 1 ] || { echo "golden_guard.sh: no command after --" >&2; exit 2; }

if [ -n "$missing" ]; then
    case ${PALIFLOW_REQUIRE_GOLDEN:-} in
    1 | true | yes) require=1 ;;
    0 | false | no) require=0 ;;
    *) case ${CI:-} in 1 | true | yes) require=1 ;; *) require=0 ;; esac ;;
    esac
    if [ "$require" = 1 ]; then
        echo "FAILED: golden data required here (CI=${CI:-} PALIFLOW_REQUIRE_GOLDEN=${PALIFLOW_REQUIRE_GOLDEN:-}) but $missing does not exist (configure with -DPALIFLOW_SHARED=DIR holding golden/)"
        exit 1
    fi
    echo "SKIPPED: needs the golden data, $missing does not exist (see README, Tests)"
    exit 77
fi
exec "$@"
