#!/usr/bin/env python3
"""Segmentation at the command line (issue 20).

  decode   - `paliflow decode-answer` on every golden case (../shared/golden/seg): each mask, decoded from
             the COCO RLE here with numpy (column-major, first run zeros: an independent reader), equals the
             golden mask except pixels whose golden pre-threshold value is within 1e-4 of 0; boxes as golden.
  refuse   - decode-answer, generate, run and inference-worker refuse a missing, a non-zip and an
             incomplete --seg-decoder before doing anything, naming the file (and the array).
  run      - `paliflow run --task "segment cat"` with the tiny golden checkpoint and a random decoder made
             here (numpy, D=16, deflated members): every record has "objects", equal to what decode-answer
             makes of its text, and no note; without --seg-decoder the objects have no masks (a note says
             why when one would be needed). `generate` gives the same objects as the pipeline.
Exit 0 when everything holds, 77 (skipped) when the golden data is absent.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ERRORS = []


def check(cond, msg):
    if not cond:
        ERRORS.append(msg)
        print("FAIL:", msg)


def rle_to_mask(m):
    h, w = m["size"]
    counts = m["counts"]
    check(sum(counts) == h * w, f"RLE counts sum to {sum(counts)}, want {h * w}")
    flat = np.zeros(h * w, bool)
    pos, val = 0, False
    for c in counts:
        flat[pos:pos + c] = val
        pos += c
        val = not val
    return flat.reshape((h, w), order="F")


def decode_answer(a, lines, extra=(), check_rc=True):
    p = subprocess.run([a.paliflow, "decode-answer", *extra], input="\n".join(lines) + "\n",
                       capture_output=True, text=True, timeout=300)
    if check_rc:
        check(p.returncode == 0, f"decode-answer exit {p.returncode}: {p.stderr[-500:]}")
    return [json.loads(l) for l in p.stdout.splitlines()]


def t_decode(a, d):
    seg = os.path.join(a.golden, "seg")
    cases = [json.loads(l) for l in open(os.path.join(seg, "cases.jsonl")) if l.strip()]
    lines, want = [], []
    for c in cases:
        if c["kind"] == "decode":
            text = "".join("<loc%04d>" % v for v in c["loc"]) + "".join("<seg%03d>" % v for v in c["codes"]) + " x"
            objs = [dict(c, label="x")]
        else:
            text, objs = c["text"], c["objects"]
        lines.append(json.dumps({"text": text, "width": c["width"], "height": c["height"]}))
        want.append((c, objs))
    got = decode_answer(a, lines, ["--seg-decoder", os.path.join(seg, "vae-oid-random.npz")])
    check(len(got) == len(want), f"{len(got)} output lines for {len(want)} answers")
    flips = 0
    for (c, objs), g in zip(want, got):
        # Objects whose box the evaluator calls invalid (corners out of order) are left out, like boxes.
        valid = [o for o in objs if o["loc"][2] > o["loc"][0] and o["loc"][3] > o["loc"][1]]
        go = g.get("objects", [])
        check(len(go) == len(valid), f"{c['name']}: {len(go)} objects, want {len(valid)}")
        for o, r in zip(valid, go):
            check(r["label"] == o["label"] and r["loc"] == o["loc"], f"{c['name']}: label/loc {r}")
            mask = rle_to_mask(r["mask"])
            gm = np.load(os.path.join(seg, o["mask_path"]))
            check(mask.shape == gm.shape, f"{c['name']}: mask shape {mask.shape} != {gm.shape}")
            if mask.shape != gm.shape:
                continue
            diff = mask != gm
            if o.get("box_resized_path"):
                y1, x1, y2, x2 = o["box_yxyx_px"]
                res = np.load(os.path.join(seg, o["box_resized_path"]))
                near = np.zeros_like(gm)
                near[y1:y2, x1:x2] = np.abs(res) < 1e-4
                bad = diff & ~near
            else:
                bad = diff
            flips += int(diff.sum())
            check(not bad.any(), f"{c['name']}: {int(bad.sum())} mask pixels differ from the golden")
            # the box: pixel window of the evaluator, from the floats we print
            x0p, y0p, x1p, y1p = (int(r[k]) for k in ("x0", "y0", "x1", "y1"))
            check([y0p, x0p, y1p, x1p] == o["box_yxyx_px"], f"{c['name']}: box {r} vs {o['box_yxyx_px']}")
    print(f"decode: {len(cases)} cases; {flips} mask pixels differ from the golden (all near 0)")


def refusals(a, d):
    """(label, path, words the message must hold) of bad decoders."""
    notzip = os.path.join(d, "notzip.npz")
    with open(notzip, "w") as f:
        f.write("not a zip\n")
    partial = os.path.join(d, "partial.npz")
    subprocess.run([a.python, os.path.join(HERE, "make_vae.py"), partial, "--drop", "decoder.6.weight"], check=True)
    return [("missing", os.path.join(d, "nope.npz"), ["nope.npz"]), ("not a zip", notzip, ["notzip.npz"]),
            ("incomplete", partial, ["partial.npz", "decoder.6.weight"])]


def t_refuse(a, d):
    bad = refusals(a, d)
    tiny = os.path.join(a.golden, "e2e", "checkpoints", "pg1_gemma_tiny")
    tok = os.path.join(a.golden, "tokenizer", "tokenizer.json")
    img = os.path.join(a.golden, "images", "chelsea.png")
    for label, path, words in bad:
        cmds = {
            "decode-answer": [a.paliflow, "decode-answer", "--seg-decoder", path, "--width", "9", "--height", "9"],
            "generate": [a.paliflow, "generate", "--model", tiny, "--tokenizer", tok, "--prompt", "segment cat",
                         "--seg-decoder", path, img],
            "run": [a.paliflow, "run", "--model", tiny, "--tokenizer", tok, "--task", "segment cat", "--progress",
                    "off", "--out", os.path.join(d, "refused.jsonl"), "--seg-decoder", path, img],
            "inference-worker": [a.paliflow, "inference-worker", "--producer", "ipc://" + d + "/p", "--sink",
                                 "ipc://" + d + "/s", "--model", tiny, "--tokenizer", tok, "--seg-decoder", path],
        }
        for name, cmd in cmds.items():
            p = subprocess.run(cmd, input="", capture_output=True, text=True, timeout=120)
            check(p.returncode == 2, f"{name} with a {label} decoder: exit {p.returncode}, want 2")
            check(all(w in p.stderr for w in words) and "--seg-decoder" in p.stderr,
                  f"{name} with a {label} decoder: message does not name {words}: {p.stderr[-300:]}")
        check(not os.path.exists(os.path.join(d, "refused.jsonl")), "run wrote records with a bad decoder")


def run_records(a, d, name, extra):
    tiny = os.path.join(a.golden, "e2e", "checkpoints", "pg1_gemma_tiny")
    tok = os.path.join(a.golden, "tokenizer", "tokenizer.json")
    imgs = os.path.join(d, "imgs")
    os.makedirs(imgs, exist_ok=True)
    for f in ("chelsea.png", "camera_gray.jpg"):
        src = os.path.join(a.golden, "images", f)
        dst = os.path.join(imgs, f)
        if not os.path.exists(dst):
            os.symlink(src, dst)
    out = os.path.join(d, name + ".jsonl")
    p = subprocess.run([a.paliflow, "run", "--model", tiny, "--tokenizer", tok, "--task", "segment cat",
                        "--max-new-tokens", "24", "--progress", "off", "--out", out, *extra, imgs],
                       capture_output=True, text=True, timeout=600)
    check(p.returncode == 0, f"run {name}: exit {p.returncode}: {p.stderr[-800:]}")
    recs = [json.loads(l) for l in open(out)] if os.path.exists(out) else []
    check(len(recs) == 2, f"run {name}: {len(recs)} records, want 2")
    return recs, tiny, tok, imgs


def t_run(a, d):
    vae = os.path.join(d, "vae16.npz")
    subprocess.run([a.python, os.path.join(HERE, "make_vae.py"), vae, "--dim", "16", "--compressed"], check=True)
    recs, tiny, tok, imgs = run_records(a, d, "with", ["--seg-decoder", vae])
    for r in recs:
        check(isinstance(r.get("objects"), list), f"run: record without objects: {r}")
        check("note" not in r, f"run: a note with the decoder given: {r.get('note')}")
        w, h = r["image"]["width"], r["image"]["height"]
        got = decode_answer(a, [json.dumps({"text": r["text"], "width": w, "height": h})], ["--seg-decoder", vae])
        check(got and got[0].get("objects") == r["objects"],
              f"run: record objects differ from decode-answer on its text: {r['objects']} vs {got}")
    # generate: the same text, the same objects
    gen = subprocess.run([a.paliflow, "generate", "--model", tiny, "--tokenizer", tok, "--prompt", "segment cat",
                          "--max-new-tokens", "24", "--seg-decoder", vae,
                          *sorted(os.path.join(imgs, f) for f in os.listdir(imgs))],
                         capture_output=True, text=True, timeout=600)
    check(gen.returncode == 0, f"generate: exit {gen.returncode}: {gen.stderr[-500:]}")
    by_name = {os.path.basename(r["path"]): r for r in recs}
    for line in gen.stdout.splitlines():
        g = json.loads(line)
        r = by_name.get(os.path.basename(g["image"]))
        check(r is not None and g.get("text") == r["text"] and g.get("objects") == r["objects"],
              f"generate vs run: {g} vs {r}")
    recs2, *_ = run_records(a, d, "without", [])
    for r in recs2:
        check(isinstance(r.get("objects"), list), f"run without decoder: record without objects: {r}")
        for o in r.get("objects", []):
            check(o.get("mask", None) is None, f"run without decoder: a mask: {o}")
    # Answers of a segment model, through the same sink code path as records: decode-answer on records.
    seg_text = "<loc0100><loc0200><loc0800><loc0900>" + "".join("<seg%03d>" % (i * 7) for i in range(16)) + " cat"
    rec_line = json.dumps({"text": seg_text, "image": {"width": 320, "height": 240}})
    with_mask = decode_answer(a, [rec_line], ["--seg-decoder", vae])[0]["objects"][0]["mask"]
    check(with_mask["size"] == [240, 320], f"decode-answer on a record line: size {with_mask['size']}")
    m = rle_to_mask(with_mask)
    check(0 < m.sum() < (900 - 200) / 1023 * 320 * (800 - 100) / 1023 * 240 + 1, f"mask area {m.sum()}")
    check(not m[:, :62].any() and not m[:23, :].any(), "mask pixels outside the box")
    without = decode_answer(a, [rec_line])[0]
    check(without["objects"][0]["mask"] is None and "note" in without, f"no decoder: {without}")
    print(f"run: {len(recs)} records with a decoder, {len(recs2)} without")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["decode", "refuse", "run"])
    ap.add_argument("--paliflow", required=True)
    ap.add_argument("--golden", required=True)
    a = ap.parse_args()
    a.python = sys.executable
    if not os.path.isdir(os.path.join(a.golden, "seg")) or not os.path.isdir(os.path.join(a.golden, "e2e")):
        print(f"golden data not found under {a.golden}: skipped")
        return 77
    with tempfile.TemporaryDirectory(prefix="pf_seg_") as d:
        {"decode": t_decode, "refuse": t_refuse, "run": t_run}[a.mode](a, d)
    if ERRORS:
        print(f"{len(ERRORS)} failures")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
