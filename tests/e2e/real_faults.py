#!/usr/bin/env python3
"""The multi-process pipeline with the REAL stages (libvips preprocessing, the golden tiny PaliGemma):
producer and sink bind, preprocess and inference workers connect; both workers are killed with -9 mid-job
and replacements finish it. Checks: exactly one record per file; every image gets the same ids and text
as `paliflow generate` gives for it (so a lost, doubled or mixed-up item cannot pass); every hostile file
gets a preprocess error record.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from pftest import Fail, read_records, run_case, start  # noqa: E402


def records(out):
    return read_records(out, torn_ok=True)   # the output is still being written


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--paliflow", required=True)
    ap.add_argument("--golden", required=True)
    a = ap.parse_args()
    model = os.path.join(a.golden, "e2e", "checkpoints", "pg1_gemma_tiny")
    tok = os.path.join(a.golden, "tokenizer", "tokenizer.json")
    good = sorted(f for f in os.listdir(os.path.join(a.golden, "images"))
                  if f.endswith((".jpg", ".png", ".gif", ".webp", ".tif", ".bmp")))
    bad = ["empty.jpg", "truncated_half.jpg", "bomb_65000x65000.png", "image.svg", "bad_crc.png"]
    return run_case("real faults", "pf_real_faults_", lambda d: run(a, d, model, tok, good, bad), tail=40)


def run(a, d, model, tok, good, bad):
    """The job, the kills and the checks, in the temporary folder D (pftest.run_case)."""
    src = os.path.join(d, "in")
    os.makedirs(src)
    files = {}
    for copy in range(3):   # three copies: enough work that the kills land mid-job
        for f in good:
            p = os.path.join(src, "c%d_%s" % (copy, f))
            shutil.copy(os.path.join(a.golden, "images", f), p)
            files[p] = f
    for f in bad:
        p = os.path.join(src, "bad_" + f)
        shutil.copy(os.path.join(a.golden, "images", "bad", f), p)
        files[p] = None
    # what generate says for every distinct image (one batch)
    gen = subprocess.run([a.paliflow, "generate", "--model", model, "--tokenizer", tok, "--prompt", "caption en",
                          "--max-new-tokens", "24"] + [os.path.join(a.golden, "images", f) for f in good],
                         capture_output=True, text=True, timeout=300)
    if gen.returncode != 0:
        raise Fail("generate: " + gen.stderr[-2000:])
    want = {}
    for f, line in zip(good, [l for l in gen.stdout.splitlines() if l.startswith("{")]):
        r = json.loads(line)
        want[f] = (r["ids"], r["text"])
    prod, sink = "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d
    out = os.path.join(d, "out.jsonl")
    hb = ["--heartbeat", "0.2", "--heartbeat-timeout", "1.5"]
    start([a.paliflow, "sink", "--bind", sink, "--producer", prod, "--out", out] + hb, os.path.join(d, "sink.log"))
    p = start([a.paliflow, "producer", "--bind", prod, "--db", os.path.join(d, "job.sqlite"), "--task",
               "caption en", "--max-new-tokens", "24", "--image-size", "224", "--progress", "lines"] + hb + [src],
              os.path.join(d, "producer.log"))
    pre = start([a.paliflow, "preprocess-worker", "--producer", prod, "--sink", sink, "--threads", "1"] + hb,
                os.path.join(d, "pre1.log"))
    inf = start([a.paliflow, "inference-worker", "--producer", prod, "--sink", sink, "--model", model,
                 "--tokenizer", tok, "--max-batch", "2"] + hb, os.path.join(d, "inf1.log"))
    t0 = time.time()
    while len(records(out)) < 10:
        if time.time() - t0 > 120:
            raise Fail("no progress before the kill")
        time.sleep(0.05)
    os.killpg(pre.pid, signal.SIGKILL)
    os.killpg(inf.pid, signal.SIGKILL)
    n_at_kill = len(records(out))
    if n_at_kill >= len(files):
        raise Fail("the job finished before the kill")
    start([a.paliflow, "preprocess-worker", "--producer", prod, "--sink", sink, "--threads", "2",
           "--exit-when-done"] + hb, os.path.join(d, "pre2.log"))
    start([a.paliflow, "inference-worker", "--producer", prod, "--sink", sink, "--model", model, "--tokenizer",
           tok, "--max-batch", "8", "--exit-when-done"] + hb, os.path.join(d, "inf2.log"))
    try:
        rc = p.wait(timeout=300)
    except subprocess.TimeoutExpired:
        raise Fail("the producer did not finish")
    if rc != 0:
        raise Fail("producer exit status %d" % rc)
    recs = records(out)
    by_path = {}
    for r in recs:
        by_path.setdefault(r["path"], []).append(r)
    for path, f in files.items():
        rs = by_path.get(path, [])
        if len(rs) != 1:
            raise Fail("%s: %d records" % (path, len(rs)))
        r = rs[0]
        if f is None:
            if "error" not in r or r["error"]["stage"] != "preprocess" or path not in r["error"]["message"]:
                raise Fail("%s: expected a preprocess error record, got %s" % (path, r))
        elif (r.get("ids"), r.get("text")) != want[f]:
            raise Fail("%s: pipeline %s %r != generate %s %r" % (path, r.get("ids"), r.get("text"), *want[f]))
    if len(recs) != len(files):
        raise Fail("%d records for %d files" % (len(recs), len(files)))
    print("real faults: %d files, %d records at the kill, %d records in the end, all equal to generate" %
          (len(files), n_at_kill, len(recs)))


if __name__ == "__main__":
    sys.exit(main())
