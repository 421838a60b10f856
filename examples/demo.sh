#!/usr/bin/env bash
# The README's demo: annotate the sample images in examples/images with the embedded pipeline.
#
# With no real checkpoint it makes a tiny RANDOM PaliGemma (the real 257216-token vocabulary and the real
# 224-px SigLIP geometry, random weights, 4 MB): the pipeline runs end to end, but the captions are noise.
#
#   examples/demo.sh [--model DIR] [--tokenizer FILE] [--task TASK] [--build-dir DIR]
#
# --model DIR        a real checkpoint folder (e.g. google/paligemma-3b-mix-224 downloaded from the hub)
# --tokenizer FILE   PaliGemma's tokenizer.json (default: DIR/tokenizer.json, else the repository's own copy,
#                    fixtures/paligemma-tokenizer.tar.xz, which the build unpacks to BUILD/fixtures/)
# --build-dir DIR    the CMake build folder (default: build, as in the README's Quick start)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
model="" tokenizer="" task="caption en"
while [ $# -gt 0 ]; do
    case $1 in
    --model|--tokenizer|--task|--build-dir)
        [ $# -ge 2 ] || { echo "demo.sh: $1 needs a value (see --help)" >&2; exit 2; } ;;&
    --model) model=$2; shift 2 ;;
    --tokenizer) tokenizer=$2; shift 2 ;;
    --task) task=$2; shift 2 ;;
    --build-dir) build=$(cd "$2" && pwd) || { echo "demo.sh: --build-dir $2: no such folder" >&2; exit 2; }; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
bin=$build/paliflow
[ -x "$bin" ] || { echo "demo.sh: $bin not found: build first (cmake -S . -B build && cmake --build build)" >&2; exit 2; }

random=0
if [ -z "$model" ]; then
    random=1
    model=$build/demo-model
    [ -f "$model/config.json" ] || "$bin" make-random-checkpoint --like paligemma-3b-pt-224 --tiny --quiet "$model"
fi
if [ -z "$tokenizer" ]; then
    # The checkpoint's own tokenizer first; else the copy every build unpacks (so a plain clone needs nothing
    # from outside the repository).
    for t in "$model/tokenizer.json" "$build/fixtures/tokenizer.json"; do
        [ -f "$t" ] && { tokenizer=$t; break; }
    done
fi
if [ -z "$tokenizer" ]; then
    echo "demo.sh: no tokenizer.json: neither $model/tokenizer.json nor $build/fixtures/tokenizer.json (the" \
         "build unpacks it from fixtures/paligemma-tokenizer.tar.xz: run cmake --build $build)" >&2
    exit 2
fi

out=$build/demo-results.jsonl
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
