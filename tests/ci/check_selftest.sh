# check_selftest.sh - sourced by the include checks (internal_headers_test.sh, model_layers_test.sh): a check
# is first run on a made-up tree with planted offences, so a check that reports nothing can never pass.

# expect_reports TREE WANT...: the caller's check() fails on TREE and reports exactly the WANT lines.
expect_reports() {
    local tree=$1 out want
    shift
    if out=$(check "$tree"); then
        echo "FAIL: the check passed a tree with $# offences" >&2
        exit 1
    fi
    for want in "$@"; do
        case $out in *"$want"*) ;; *) echo "FAIL: the check did not report '$want'; it said: $out" >&2; exit 1 ;; esac
    done
    if [ "$(printf '%s\n' "$out" | wc -l)" -ne $# ]; then
        echo "FAIL: the check reported allowed includes too: $out" >&2
        exit 1
    fi
}
