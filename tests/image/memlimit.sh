#!/bin/sh
# Bounded memory: under a 4 GiB address-space limit (what the checker imposes) every hostile file is refused,
# and large legitimate images still come out: a 4096x4096 JPEG (plain and with autorotate, which keeps the
# stored image in memory), a progressive 6000x6000 JPEG (libjpeg buffers all coefficients) and a
# 176-megapixel PNG just under Pillow's limit. Not under ASan (its shadow memory needs terabytes of
# address space): labelled no_sanitize.
# usage: memlimit.sh PALIFLOW GOLDEN_DIR PYTHON_WITH_PIL|""
set -u
PROG=$1 G=$2 PY=${3:-}
T=$(mktemp -d /tmp/pf_img_mem.XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# run PROG ARGS... under the limit (a subshell, so the limit can be set again for the next run)
limited() { ( ulimit -v 4194304 && exec "$PROG" "$@" ); }
( ulimit -v 4194304 ) 2>/dev/null || { echo "SKIP: cannot set ulimit -v"; exit 77; }
ln -s loop.jpg "$T/loop.jpg"

limited preprocess-image --size 896 --out "$T/bad.st" "$G/images/bad/"* "$T/loop.jpg" \
    "$G/images/hubble_3000x2000.jpg" 2>"$T/bad.err"
rc=$?
[ $rc -eq 1 ] || fail "hostile batch: exit $rc, want 1: $(cat "$T/bad.err")"
n=$(grep -c . "$T/bad.err")
want=$(($(ls "$G/images/bad" | wc -l) + 1))   # README.md is refused too, plus the loop
[ "$n" -eq "$want" ] || fail "hostile batch: $n stderr lines, want $want: $(cat "$T/bad.err")"
grep -q "hubble_3000x2000.jpg" "$T/bad.err" && fail "hubble refused: $(cat "$T/bad.err")"

if [ -n "$PY" ]; then
    "$PY" - "$T" <<'EOF' || fail "could not generate the large images"
import sys
import numpy as np
from PIL import Image
t = sys.argv[1]
y, x = np.mgrid[0:4096, 0:4096]
a = np.stack([x % 256, y % 256, (x ^ y) % 256], -1).astype(np.uint8)
ex = Image.Exif()
ex[0x0112] = 6
Image.fromarray(a).save(t + "/big4096.jpg", quality=90, exif=ex.tobytes())
Image.fromarray(np.tile(a, (2, 2, 1))[:6000, :6000]).save(t + "/prog6000.jpg", quality=80, progressive=True)
Image.new("1", (16000, 11000), 1).save(t + "/pixels_176mp.png")
EOF
fi
if [ -f "$T/big4096.jpg" ]; then
    for ar in "" --autorotate; do
        limited preprocess-image --size 448 $ar --out "$T/big.st" "$T/big4096.jpg" "$T/prog6000.jpg" \
            "$T/pixels_176mp.png" 2>"$T/big.err" || fail "large images ${ar}: $(cat "$T/big.err")"
    done
fi
echo "memory-bounded: ok"
