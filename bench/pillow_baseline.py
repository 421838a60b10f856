#!/usr/bin/env python3
"""Pillow baseline for bench_image: what SiglipImageProcessor does per image, without transformers' own
overhead. Image.open + convert("RGB") + resize((S, S), BICUBIC) + rescale (float64 * 1/255 -> float32)
+ normalise ((x - 0.5) / 0.5) + HWC -> CHW, the same work bench_image times for paliflow.

Usage: pillow_baseline.py SIZE REPS FILE...
prints "images_per_s <per CPU second> images <n> cpu_seconds <t> wall_seconds <w>"
"""
import sys
import time
import warnings

import numpy as np
from PIL import Image

warnings.simplefilter("ignore")  # palette-transparency notices


def one(path, size):
    im = Image.open(path)
    if im.mode != "RGB":
        im = im.convert("RGB")
    im = im.resize((size, size), Image.BICUBIC)
    a = np.asarray(im).astype(np.float64) * 0.00392156862745098
    a = a.astype(np.float32)
    a = (a - np.float32(0.5)) / np.float32(0.5)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def main():
    size, reps, files = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    for f in files:  # warm-up: page cache, lazy imports
        one(f, size)
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    for _ in range(reps):
        for f in files:
            one(f, size)
            n += 1
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    print("images_per_s %.3f images %d cpu_seconds %.4f wall_seconds %.4f" % (n / dc, n, dc, dt))


if __name__ == "__main__":
    main()
