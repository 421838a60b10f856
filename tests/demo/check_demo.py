#!/usr/bin/env python3
"""The README's Quick start demo on a build: examples/demo.sh with no arguments (no checkpoint, no tokenizer, no
../shared) must annotate every sample image and say the captions are noise.

usage: check_demo.py SOURCE_DIR BUILD_DIR

Runs demo.sh with --build-dir BUILD_DIR (it writes BUILD_DIR/demo-model and BUILD_DIR/demo-results.jsonl) and
checks one record per image in examples/images, each with text and token ids and no error.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from pftest import Fail, read_records  # noqa: E402

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, build = sys.argv[1], sys.argv[2]
    p = subprocess.run(["bash", os.path.join(src, "examples", "demo.sh"), "--build-dir", build],
                       capture_output=True, text=True, timeout=540)
    if p.returncode != 0:
        sys.exit(f"demo.sh exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    if "THESE CAPTIONS ARE NOISE" not in p.stdout:
        sys.exit(f"demo.sh ran a random model without saying the captions are noise:\n{p.stdout[-2000:]}")
    images = sorted(f for f in os.listdir(os.path.join(src, "examples", "images")) if f.lower().endswith(IMAGE_EXT))
    try:
        recs = read_records(os.path.join(build, "demo-results.jsonl"))   # whole lines only: the run has ended
    except Fail as e:
        sys.exit(str(e))
    got = sorted(os.path.basename(r.get("path", "")) for r in recs)
    if got != images:
        sys.exit(f"records for {got}, want one per sample image {images}")
    for r in recs:
        if "error" in r or not isinstance(r.get("ids"), list) or not r["ids"] or not isinstance(r.get("text"), str):
            sys.exit(f"bad record: {json.dumps(r)[:1000]}")
    print(f"demo: {len(recs)} records, one per sample image, no errors")


if __name__ == "__main__":
    main()
