#!/bin/bash
# hub_scale.sh - the producer on a job of N files (issue 18): dispatch during the scan against after it, the
# producer's memory, the job store's size, the scan's time and the time from a restart to the first hand-out.
#
#   bench/hub_scale.sh BUILD_DIR N [WORK_DIR]
#
# Makes N inputs as hard links (1000 per folder, one real file each: N links cost N/1000 inodes), then:
#  1. sink + producer + one preprocess and one inference test_worker (credit 8 each, ipc://, 224 px): output
#     bytes and producer RSS sampled every 0.5 s until 20 s after "scan complete"; items/s during and after (the
#     whole windows, and the last 10 s of the scan against the 10 s after it).
#  2. the producer alone on a new job store: scan time, peak RSS, store size.
#  3. restarts of that job with workers (after SIGTERM, then after kill -9): the producer's "first item handed
#     out N s after start" line, and RSS after 15 s of work.
# N of a few hundred thousand or more (the restarts need work left). WORK_DIR (default /tmp/hub_scale) is removed
# at the end unless KEEP=1. Watch `df -h` and `df -i` first: ~165 MB of job store and ~40 MB of folders per 1M.
set -u
B=$1; N=$2; W=${3:-/tmp/hub_scale}
PF=$B/paliflow; TW=$B/tests/pipeline/test_worker
[ -x "$PF" ] && [ -x "$TW" ] || { echo "hub_scale: no $PF or $TW" >&2; exit 2; }
mkdir -p "$W"; IN=$W/in
now() { date +%s.%N; }
if [ ! -d "$IN" ]; then
  echo "== making $N inputs in $IN"
  python3 - "$IN" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in range((n + 999) // 1000):
    dd = os.path.join(root, "%05d" % d)
    os.makedirs(dd, exist_ok=True)
    src = os.path.join(dd, "00000.jpg")
    with open(src, "wb") as f:
        f.write(b"img%08d" % d)
    for i in range(1, min(1000, n - d * 1000)):
        os.link(src, os.path.join(dd, "%05d.jpg" % i))
PY
fi

workers() {   # D
  $TW preprocess --producer ipc://$1/prod.sock --sink ipc://$1/sink.sock --threads 1 --credit 8 --steps 1 > $1/pre.log 2>&1 &
  WP=$!
  $TW inference --producer ipc://$1/prod.sock --sink ipc://$1/sink.sock --max-batch 8 --credit 8 --steps 1 > $1/inf.log 2>&1 &
  WI=$!
}

echo "== 1. dispatch during and after the scan"
D=$W/run; rm -rf $D; mkdir -p $D
$PF sink --bind ipc://$D/sink.sock --producer ipc://$D/prod.sock --out $D/out.jsonl --log-level warn > $D/sink.log 2>&1 &
S=$!
T0=$(now)
$PF producer --bind ipc://$D/prod.sock --db $D/job.sqlite --task "caption en" --image-size 224 --progress off $IN > $D/prod.log 2>&1 &
P=$!
workers $D
SCANT=""
while kill -0 $P 2>/dev/null; do
  t=$(echo "$(now) - $T0" | bc)
  echo "$t $(stat -c %s $D/out.jsonl 2>/dev/null || echo 0) $(awk '/VmRSS/{print $2}' /proc/$P/status) $(grep -c 'scan complete' $D/prod.log)" >> $D/samples
  [ -z "$SCANT" ] && grep -q "scan complete" $D/prod.log && SCANT=$t
  [ -n "$SCANT" ] && [ "$(echo "$t - $SCANT > 20" | bc)" = 1 ] && break
  sleep 0.5
done
kill $P $WP $WI; wait $P $WP $WI 2>/dev/null
kill $S; wait $S 2>/dev/null
python3 - $D/samples "$(wc -l < $D/out.jsonl)" "$(stat -c %s $D/out.jsonl)" <<'PY'
import sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 4]
bpl = int(sys.argv[3]) / max(int(sys.argv[2]), 1)
first = next((r for r in rows if r[1] > 0), None)
scan = next((r for r in rows if r[3] >= 1), None)
last = rows[-1]
if first and scan:
    d = (scan[1] - first[1]) / bpl / max(scan[0] - first[0], 1e-9)
    a = (last[1] - scan[1]) / bpl / max(last[0] - scan[0], 1e-9)
    print("scan complete at %.1f s; items/s during the scan %.0f, after it %.0f: %.0f%%" % (scan[0], d, a, 100 * d / a))
    # The same over the last 10 s of the scan against the first 10 s after it: no workers' start-up in the first
    # window, and on a shared machine the two windows are close enough in time to see the same other load.
    at = lambda t: min(rows, key=lambda r: abs(r[0] - t))
    w0, w1, w2 = at(max(scan[0] - 10, first[0])), at(scan[0] + 1), at(scan[0] + 11)
    if w1 is not w2 and w0 is not scan:
        nd = (scan[1] - w0[1]) / bpl / max(scan[0] - w0[0], 1e-9)
        na = (w2[1] - w1[1]) / bpl / max(w2[0] - w1[0], 1e-9)
        print("items/s in the last %.0f s of the scan %.0f, in the 10 s after it %.0f: %.0f%%" %
              (scan[0] - w0[0], nd, na, 100 * nd / max(na, 1e-9)))
    print("producer RSS kB: at the scan's end %d, at the end %d (%d records)" % (scan[2], last[2], int(sys.argv[2])))
PY

echo "== 2. the producer alone: scan"
D=$W/alone; rm -rf $D; mkdir -p $D
T0=$(now)
$PF producer --bind ipc://$D/prod.sock --db $D/job.sqlite --task "caption en" --image-size 224 --progress off $IN > $D/scan.log 2>&1 &
P=$!
while ! grep -q "scan complete" $D/scan.log; do kill -0 $P || break; sleep 0.5; done
echo "scan $(echo "$(now) - $T0" | bc) s; producer VmHWM $(awk '/VmHWM/{print $2}' /proc/$P/status) kB"
kill -TERM $P; wait $P
echo "job store $(stat -c %s $D/job.sqlite) bytes"

echo "== 3. restarts with workers"
$PF sink --bind ipc://$D/sink.sock --producer ipc://$D/prod.sock --out $D/out.jsonl --log-level warn > $D/sink.log 2>&1 &
S=$!
workers $D
for round in 1 2; do
  T0=$(now)
  $PF producer --bind ipc://$D/prod.sock --db $D/job.sqlite --progress off > $D/resume$round.log 2>&1 &
  P=$!
  while ! grep -q "first item handed out" $D/resume$round.log; do kill -0 $P || break; sleep 0.01; done
  echo "restart $round ($([ $round = 1 ] && echo after SIGTERM || echo after kill -9)): $(grep -o 'first item handed out.*' $D/resume$round.log) (wall $(echo "$(now) - $T0" | bc) s)"
  sleep 15
  if kill -0 $P 2>/dev/null; then
    echo "  RSS after 15 s of work: $(awk '/VmRSS/{print $2}' /proc/$P/status) kB"
    kill -9 $P
  else
    echo "  the job ended within 15 s (N too small for this step)"
  fi
  wait $P 2>/dev/null
done
kill $WP $WI $S; wait 2>/dev/null
[ "${KEEP:-0}" = 1 ] || rm -rf "$W"
