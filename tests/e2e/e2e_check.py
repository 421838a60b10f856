#!/usr/bin/env python3
"""End-to-end checks of issue 12 against ../shared/golden/e2e.

  generate  - every case through `paliflow generate` (grouped like the golden checker: singles by
              (checkpoint, prompt) in one call, each batch group in one call with per-image prompts);
              ids and text must match exactly.
  corpus    - the embedded pipeline over the whole shared image corpus (good, hostile and non-image
              files) with a golden tiny model: exactly one record per file, a text record for every good
              image, an error record (stage preprocess) for every file of images/bad/ and every non-image.
  pipeline  - the embedded pipeline (`paliflow run`) over the same images and prompts must give, for every
              file, the same ids and text as `generate` (one code path) and as the golden.

--extra ARG (repeatable) is passed to every generate/run command, e.g. --extra=--backend --extra=reference
to check the reference oracle instead of the default engine.

Exit 0 only if everything matches; prints every mismatch with the first differing step and its margin.
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile


def load_cases(golden):
    with open(os.path.join(golden, "e2e", "cases.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def groups(cases):
    """[(checkpoint, [prompts], [cases])]: singles by (checkpoint, prompt), batches by their group."""
    singles = collections.OrderedDict()
    batches = collections.OrderedDict()
    for c in cases:
        if "batch" in c:
            batches.setdefault(c["batch"], []).append(c)
        else:
            singles.setdefault((c["checkpoint"], c["prompt"]), []).append(c)
    out = [(ck, [p], cs) for (ck, p), cs in singles.items()]
    for cs in batches.values():
        cs.sort(key=lambda c: c["batch_index"])
        out.append((cs[0]["checkpoint"], [c["prompt"] for c in cs], cs))
    return out


def json_lines(text):
    recs = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                recs.append(json.loads(line))
            except ValueError:
                pass
    return recs


def compare(label, case, got_ids, got_text, errors):
    want_ids, want_text = case["new_ids"], case["text"]
    if got_ids == want_ids and got_text == want_text:
        return True
    step = next((i for i, (a, b) in enumerate(zip(got_ids, want_ids)) if a != b), min(len(got_ids), len(want_ids)))
    margins = case.get("step_margins") or []
    margin = margins[step] if step < len(margins) else None
    errors.append(f"{label}: {case['checkpoint']} {case['image']} {case['prompt']!r}: ids {got_ids} text {got_text!r}"
                  f" != golden ids {want_ids} text {want_text!r} (first difference at step {step}, golden margin {margin})")
    return False


def run_generate(args, golden, ckpt, prompts, cases):
    cmd = [args.paliflow, "generate", "--model", os.path.join(golden, "e2e", ckpt), "--tokenizer", args.tokenizer,
           "--max-new-tokens", "10"] + args.extra
    for p in prompts:
        cmd += ["--prompt", p]
    cmd += [os.path.join(golden, c["image"]) for c in cases]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return json_lines(proc.stdout)


def check_generate(args, golden, cases):
    errors, results, n_ok = [], {}, 0
    for ckpt, prompts, cs in groups(cases):
        recs = run_generate(args, golden, ckpt, prompts, cs)
        if len(recs) != len(cs):
            errors.append(f"generate: {ckpt} {prompts}: {len(recs)} JSON lines for {len(cs)} images")
            continue
        for c, r in zip(cs, recs):
            want_image = os.path.join(golden, c["image"])
            if r.get("image") != want_image:
                errors.append(f"generate: image echoed as {r.get('image')!r}, expected {want_image!r}")
                continue
            results[(c["checkpoint"], c["image"], c["prompt"])] = (r.get("ids"), r.get("text"))
            n_ok += compare("generate", c, r.get("ids"), r.get("text"), errors)
    print(f"generate: {n_ok}/{len(cases)} cases match")
    return errors, results


def check_pipeline(args, golden, cases, gen_results):
    errors, n_ok = [], 0
    by_run = collections.OrderedDict()
    for c in cases:
        by_run.setdefault((c["checkpoint"], c["prompt"]), []).append(c)
    with tempfile.TemporaryDirectory(prefix="pf_e2e_") as tmp:
        for i, ((ckpt, prompt), cs) in enumerate(by_run.items()):
            out = os.path.join(tmp, f"run{i}.jsonl")
            paths = sorted({os.path.join(golden, c["image"]) for c in cs})
            cmd = [args.paliflow, "run", "--model", os.path.join(golden, "e2e", ckpt), "--tokenizer", args.tokenizer,
                   "--task", prompt, "--max-new-tokens", "10", "--progress", "off", "--out", out] + args.extra + paths
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                errors.append(f"pipeline: {' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
                continue
            with open(out, encoding="utf-8") as f:
                recs = [json.loads(line) for line in f if line.strip()]
            by_path = collections.defaultdict(list)
            for r in recs:
                by_path[r["path"]].append(r)
            for c in cs:
                path = os.path.join(golden, c["image"])
                rs = by_path.get(path, [])
                if len(rs) != 1:
                    errors.append(f"pipeline: {path} {prompt!r}: {len(rs)} records, expected exactly 1")
                    continue
                r = rs[0]
                if "error" in r:
                    errors.append(f"pipeline: {path} {prompt!r}: error record {r['error']}")
                    continue
                ok = compare("pipeline", c, r.get("ids"), r.get("text"), errors)
                gen = gen_results.get((c["checkpoint"], c["image"], c["prompt"]))
                if gen is not None and gen != (r.get("ids"), r.get("text")):
                    errors.append(f"pipeline vs generate: {path} {prompt!r}: pipeline {r.get('ids')} {r.get('text')!r}"
                                  f" != generate {gen[0]} {gen[1]!r}")
                    ok = False
                n_ok += ok
    print(f"pipeline: {n_ok}/{len(cases)} cases match golden and generate")
    return errors


def check_corpus(args, golden):
    errors = []
    images = os.path.join(golden, "images")
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(images) for f in fs)
    with tempfile.TemporaryDirectory(prefix="pf_corpus_") as tmp:
        out = os.path.join(tmp, "out.jsonl")
        cmd = [args.paliflow, "run", "--model", os.path.join(golden, "e2e", "checkpoints", "pg1_gemma_tiny"),
               "--tokenizer", args.tokenizer, "--task", "caption en", "--max-new-tokens", "3", "--progress", "off",
               "--out", out, images]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 3:   # the corpus holds hostile files: "done with failures"
            return [f"corpus: {' '.join(cmd)} exited {proc.returncode} (want 3): {proc.stderr[-2000:]}"]
        with open(out, encoding="utf-8") as f:
            recs = [json.loads(line) for line in f if line.strip()]
    by_path = collections.defaultdict(list)
    for r in recs:
        by_path[r["path"]].append(r)
    for path in files:
        rs = by_path.pop(path, [])
        if len(rs) != 1:
            errors.append(f"corpus: {path}: {len(rs)} records, expected exactly 1")
            continue
        r = rs[0]
        hostile = os.sep + "bad" + os.sep in path
        is_image = path.lower().endswith((".jpg", ".png", ".gif", ".webp", ".tif", ".bmp")) and not hostile
        if is_image and "text" not in r:
            errors.append(f"corpus: {path}: expected a text record, got {r.get('error')}")
        if not is_image:
            err = r.get("error")
            if not err or err.get("stage") != "preprocess" or path not in err.get("message", ""):
                errors.append(f"corpus: {path}: expected a preprocess error record naming the file, got {r}")
    for path in by_path:
        errors.append(f"corpus: record for {path}, which is not a file of the corpus")
    print(f"corpus: {len(recs)} records for {len(files)} files")
    return errors


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["generate", "pipeline", "corpus"])
    ap.add_argument("--paliflow", required=True)
    ap.add_argument("--golden", required=True, help="the shared golden folder (holds e2e/ and images/)")
    ap.add_argument("--tokenizer", help="default: GOLDEN/tokenizer/tokenizer.json")
    ap.add_argument("--extra", action="append", default=[], help="argument added to every paliflow command")
    args = ap.parse_args()
    args.tokenizer = args.tokenizer or os.path.join(args.golden, "tokenizer", "tokenizer.json")
    if args.mode == "corpus":
        errors = check_corpus(args, args.golden)
        for e in errors:
            print("MISMATCH " + e)
        return 1 if errors else 0
    cases = load_cases(args.golden)
    errors, gen_results = check_generate(args, args.golden, cases)
    if args.mode == "pipeline":
        errors += check_pipeline(args, args.golden, cases, gen_results)
    for e in errors:
        print("MISMATCH " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
