#!/usr/bin/env python3
"""Write a random big_vision mask decoder (the keys and PyTorch layouts of vae-oid.npz, codebook [128, D])
for tests: `make_vae.py OUT.npz [--dim D] [--compressed] [--drop KEY] [--seed S]`.

Only numpy: the test needs no ../shared. --drop leaves one array out (a malformed decoder)."""
import argparse

import numpy as np


def arrays(dim, seed):
    rng = np.random.default_rng(seed)

    def w(*shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def b(n):
        return (rng.standard_normal(n) * 0.05).astype(np.float32)

    a = {"_vq_vae._embedding": rng.standard_normal((128, dim)).astype(np.float32),
         "decoder.0.weight": w(128, dim, 1, 1, fan_in=dim), "decoder.0.bias": b(128)}
    for r in (2, 3):
        for j, k in ((0, 3), (2, 3), (4, 1)):
            a[f"decoder.{r}.net.{j}.weight"] = w(128, 128, k, k, fan_in=128 * k * k) * (0.5 if k == 1 else 1)
            a[f"decoder.{r}.net.{j}.bias"] = b(128)
    for i, (ci, co) in zip((4, 6, 8, 10), ((128, 128), (128, 64), (64, 32), (32, 16))):
        a[f"decoder.{i}.weight"] = w(ci, co, 4, 4, fan_in=ci * 4)   # ConvTranspose2d layout [in, out, k, k]
        a[f"decoder.{i}.bias"] = b(co)
    a["decoder.12.weight"] = w(1, 16, 1, 1, fan_in=16)
    a["decoder.12.bias"] = np.zeros(1, np.float32)
    return a


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--compressed", action="store_true")
    ap.add_argument("--drop")
    a = ap.parse_args()
    arr = arrays(a.dim, a.seed)
    if a.drop:
        del arr[a.drop]
    (np.savez_compressed if a.compressed else np.savez)(a.out, **arr)


if __name__ == "__main__":
    main()
