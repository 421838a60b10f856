#!/usr/bin/env python3
"""Smoke test of `paliflow bench` on a tiny checkpoint: it runs, prints its table, and writes the JSON fields
the issue names with sane values (no timing is asserted: tests never judge speed)."""
import json
import subprocess
import sys
import tempfile
import os

paliflow, model = sys.argv[1], sys.argv[2]
with tempfile.TemporaryDirectory(prefix="pf_bench_") as tmp:
    out = os.path.join(tmp, "bench.json")
    cmd = [paliflow, "bench", "--model", model, "--precision", "fp32", "--images", "2", "--new-tokens", "3",
           "--batches", "1,2", "--decode-steps", "1", "--triad-mb", "24", "--json", out]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr[-2000:]}")
    for word in ("GEMM rate", "bandwidth", "prefill", "decode batch 1", "decode batch 2", "end to end", "peak RSS",
                 "precision probe", "auto -> "):
        if word not in p.stdout:
            sys.exit(f"table lacks '{word}':\n{p.stdout}")
    j = json.load(open(out))
    for key in ("images_per_s", "prefill_gflops", "gemm_peak_gflops", "bandwidth_gbs", "decode_bound_ms",
                "peak_rss_bytes", "load_s"):
        if not isinstance(j.get(key), (int, float)) or not j[key] > 0:
            sys.exit(f"{key}: {j.get(key)!r}")
    if j.get("precision") != "fp32" or not j.get("isa"):
        sys.exit(f"precision/isa: {j.get('precision')!r} {j.get('isa')!r}")
    dec = j.get("decode_ms_per_step")
    if not isinstance(dec, dict) or sorted(dec) != ["1", "2"] or not all(v > 0 for v in dec.values()):
        sys.exit(f"decode_ms_per_step: {dec!r}")
    probe = j.get("precision_probe")  # the table --precision auto decides from (model/linear/precision_probe.h)
    if not isinstance(probe, dict) or probe.get("auto") not in ("fp32", "bf16", "int8") or \
            not probe.get("fp32", {}).get("supported") or not probe["fp32"].get("gflops", 0) > 0:
        sys.exit(f"precision_probe: {probe!r}")
    print("bench smoke: ok")
