#!/usr/bin/env bash
# The README's demo: annotate the sample images in examples/images with the embedded pipeline.
#
# With no real checkpoint it makes a tiny RANDOM PaliGemma (the real 257216-token vocabulary and the real
# 224-px SigLIP geometry, random weights, 4 MB): the pipeline runs end to end, but the captions are noise.
#
#   examples/demo.sh [--model DIR] [--tokenizer FILE] [--task TASK]
#
# --model DIR        a real checkpoint folder (e.g. google/paligemma-3b-mix-224 downloaded from the hub)
# --tokenizer FILE   PaliGemma's tokenizer.json (default: DIR/tokenizer.json, else the one in
#                    ../shared/golden/tokenizer/ beside this repository)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/build/paliflow
model="" tokenizer="" task="caption en"
while [ $# -gt 0 ]; do
    case $1 in
    --model) model=$2; shift 2 ;;
    --tokenizer) tokenizer=$2; shift 2 ;;
    --task) task=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -x "$bin" ] || { echo "demo.sh: $bin not found: build first (cmake -S . -B build && cmake --build build)" >&2; exit 2; }

random=0
if [ -z "$model" ]; then
    random=1
    model=$root/build/demo-model
    [ -f "$model/config.json" ] || "$bin" make-random-checkpoint --like paligemma-3b-pt-224 --tiny --quiet "$model"
fi
if [ -z "$tokenizer" ]; then
    for t in "$model/tokenizer.json" "$root/../shared/golden/tokenizer/tokenizer.json"; do
        [ -f "$t" ] && { tokenizer=$t; break; }
    done
fi
if [ -z "$tokenizer" ]; then
    echo "demo.sh: no tokenizer.json found: pass --tokenizer FILE (PaliGemma's tokenizer.json from any hub" \
         "PaliGemma checkpoint)" >&2
    exit 2
fi

out=$root/build/demo-results.jsonl
rm -f "$out" "$out.db"   # a fresh job each time (the job store would otherwise resume the last one)
"$bin" run --model "$model" --tokenizer "$tokenizer" --task "$task" --max-new-tokens 20 \
    --exclude '*.md' --out "$out" "$root/examples/images"

echo
echo "Results: $out ($(wc -l < "$out") records, one JSON line per image)"
head -c 600 "$out"; echo ...
if [ "$random" = 1 ]; then
    cat <<'MSG'

  ******************************************************************************************
  *  THESE CAPTIONS ARE NOISE: the demo model has RANDOM weights (no real checkpoint given). *
  *  For real captions download a checkpoint (e.g. google/paligemma-3b-mix-224) and run      *
  *      examples/demo.sh --model ~/models/paligemma-3b-mix-224                              *
  ******************************************************************************************
MSG
fi
