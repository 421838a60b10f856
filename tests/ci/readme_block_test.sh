#!/usr/bin/env bash
# readme_block_test.sh SOURCE_DIR - .ci/readme-block finds the README's CI blocks, and refuses broken markers.
set -euo pipefail
src=${1:?usage: readme_block_test.sh SOURCE_DIR}
rb=$src/.ci/readme-block
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# The real README: both blocks CI runs are there, and are what the README's sections say.
q=$("$rb" quickstart "$src/README.md") || bad "README.md: no ci:quickstart block"
t=$("$rb" tests "$src/README.md") || bad "README.md: no ci:tests block"
case $q in *".ci/install-deps"*"examples/demo.sh"*) ;; *) bad "the quickstart block is not the Quick start: $q" ;; esac
case $t in *ctest*) ;; *) bad "the tests block runs no ctest: $t" ;; esac

# expect_fail NAME WHAT TEXT - readme-block NAME on TEXT fails and says WHAT.
expect_fail() {
    printf '%b' "$3" > "$tmp/R.md"
    if "$rb" "$1" "$tmp/R.md" > "$tmp/out" 2> "$tmp/err"; then
        bad "accepted ($2): $(cat "$tmp/out")"
    elif ! grep -q -- "$2" "$tmp/err"; then
        bad "wanted '$2', got: $(cat "$tmp/err")"
    fi
}
expect_fail a "no marker" 'text\n```sh\necho\n```\n'
expect_fail a "not a \`\`\`sh fence" '<!-- ci:a -->\n\n```sh\necho\n```\n'
expect_fail a "never closed" '<!-- ci:a -->\n```sh\necho\n'
expect_fail a "is empty" '<!-- ci:a -->\n```sh\n\n```\n'
expect_fail a "appears again" '<!-- ci:a -->\n```sh\nx\n```\n<!-- ci:a (again) -->\n```sh\ny\n```\n'
expect_fail a "last line" 'x\n<!-- ci:a -->\n'
expect_fail 'a.*' "lower-case" '<!-- ci:a -->\n```sh\nx\n```\n'

# A good block: exactly its lines, other markers and prose ignored, a note after the name allowed.
printf '%s\n' '# t' '<!-- ci:b -->' '```sh' 'echo b' '```' '<!-- ci:a (a note) -->' '```sh' 'echo 1 &&' \
    '  echo "2 ```"' '```' 'after' > "$tmp/R.md"
got=$("$rb" a "$tmp/R.md") || bad "rejected a good block"
[ "$got" = $'echo 1 &&\n  echo "2 ```"' ] || bad "block a read as: $got"

[ "$fails" = 0 ] || { echo "$fails failure(s)" >&2; exit 1; }
echo "readme-block: ok"
