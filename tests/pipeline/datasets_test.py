#!/usr/bin/env python3
"""Datasets, not just folders (issue 19): `paliflow run` end to end on a tiny random checkpoint.

usage: datasets_test.py TEST --paliflow PATH --tokenizer FILE --images DIR       TEST:
  manifest   - a CSV and a JSONL manifest with per-item prompts, settings, ids and extra columns: one record
               per line and prompt, with its own task, max_new_tokens, "id" and "extra"; bad lines are named
               (file:line) and skipped while the rest of the job runs; a column named like a record field
               does not overwrite it; --list refuses a path<TAB>prompt line and points to --manifest.
  multitask  - --task given three times: one record per (image, task), each image decoded once per task but
               its vision features computed once (the engine's image cache); a rerun adds nothing.
  respelled  - the same folder as `photos/`, `./photos` and its absolute path: no item redone, no record twice.
  retry      - a broken file fails; fixed, `--retry-failed` requeues it: the output then holds exactly one
               record per item (the success; the error record is gone) and the summary says 0 errors. The same
               with a new --db over the old output.
Exit 0 pass, 1 fail, 77 skipped."""
import argparse
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from pftest import Fail, check, no_sanitizer_report, read_records, run_case, tiny_checkpoint  # noqa: E402

HANG = 180


class Env:
    def __init__(self, a, d):
        self.a, self.d = a, d
        self.ckpt = os.path.join(d, "ckpt")
        tiny_checkpoint(a.paliflow, self.ckpt, seed=19)
        self.photos = os.path.join(d, "photos")
        os.makedirs(self.photos)
        self.names = sorted(n for n in os.listdir(a.images) if n.endswith((".jpg", ".png")))[:3]
        for n in self.names:
            shutil.copy(os.path.join(a.images, n), self.photos)

    def run(self, args, cwd=None, want_rc=0):
        cmd = [self.a.paliflow, "run", "--model", self.ckpt, "--tokenizer", self.a.tokenizer, "--max-new-tokens",
               "2", "--progress", "off"] + list(args)
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=HANG, cwd=cwd or self.d)
        except subprocess.TimeoutExpired:
            raise Fail("still running after %d s: %s" % (HANG, " ".join(cmd)))
        err = p.stderr.decode(errors="replace")
        no_sanitizer_report(err, " ".join(cmd))
        if want_rc is not None:
            check(p.returncode == want_rc, "exit %d (want %d): %s\n%s" % (p.returncode, want_rc, " ".join(cmd),
                                                                         err[-2000:]))
        return err


def summary(err):
    for line in err.splitlines():
        if line.startswith("paliflow run: ") and " files, " in line:
            parts = line.split(": ", 1)[1].split(",")
            return tuple(int(p.split()[0]) for p in parts[:3])
    raise Fail("no summary line in: %s" % err[-500:])


def t_manifest(env):
    p = env.photos
    a, b, c = (os.path.join("photos", n) for n in env.names)
    csv = os.path.join(env.d, "m.csv")
    with open(csv, "w") as f:
        f.write("path,prompt,id,split,max_new_tokens,text\n")
        f.write('%s,"answer en what is this, really?",img-1,val,4,forged\n' % a)
        f.write("%s,ocr,img-2,\"tr,ain\",,\n" % b)
        f.write("%s,caption en,img-3\n" % c)                       # too few fields: named, skipped
        f.write("%s,caption en,img-4,test,lots,\n" % c)            # bad number: named, skipped
        f.write("%s,caption en,img-5,test,3,\n" % os.path.join("photos", "missing.jpg"))   # an error record
    out = os.path.join(env.d, "m.jsonl")
    err = env.run(["--task", "caption en", "--out", out, "--manifest", csv], want_rc=3)  # done with failures
    check("m.csv:4: fewer fields" in err and "m.csv:5: 'max_new_tokens'" in err, "bad lines not named: %s" % err)
    recs = read_records(out)
    check(len(recs) == 3, "%d records for 3 good lines: %s" % (len(recs), recs))
    by_id = {r["id"]: r for r in recs}
    r1, r2, r5 = by_id["img-1"], by_id["img-2"], by_id["img-5"]
    check(r1["task"] == "answer en what is this, really?" and len(r1["ids"]) == 4, "per-item prompt/settings: %s" % r1)
    check(r1["extra"] == {"split": "val", "text": "forged"} and r1["text"] != "forged", "extra columns: %s" % r1)
    check(r1["path"] == os.path.join(env.d, a), "path not relative to the manifest: %s" % r1["path"])
    check(r2["task"] == "ocr" and r2["extra"] == {"split": "tr,ain"} and len(r2["ids"]) == 2, "line 3: %s" % r2)
    check("error" in r5 and r5["extra"] == {"split": "test"}, "a missing file: %s" % r5)
    # JSONL with a list of prompts, in a subfolder: paths are relative to the manifest
    sub = os.path.join(env.d, "sub")
    os.makedirs(sub)
    jl = os.path.join(sub, "m.jsonl")
    with open(jl, "w") as f:
        f.write(json.dumps({"path": os.path.join("..", a), "prompt": ["caption en", "ocr"], "id": 7,
                            "meta": {"k": [1, 2]}}) + "\n")
        f.write("{not json\n")
        # a record longer than the sink's batch buffer (64 KiB at first): its line is dumped again into a grown one
        f.write(json.dumps({"path": os.path.join("..", b), "prompt": "ocr", "id": 8, "big": "x" * 100000}) + "\n")
    out2 = os.path.join(env.d, "m2.jsonl")
    err = env.run(["--task", "caption en", "--out", out2, "--manifest", jl])
    check("m.jsonl:2: not JSON" in err, "bad JSONL line not named: %s" % err)
    recs = read_records(out2)
    big = [r for r in recs if r["id"] == 8]
    recs = [r for r in recs if r["id"] != 8]
    check(sorted(r["task"] for r in recs) == ["caption en", "ocr"] and all(r["id"] == 7 for r in recs) and
          all(r["extra"] == {"meta": {"k": [1, 2]}} for r in recs), "JSONL prompt list: %s" % recs)
    check(len(big) == 1 and big[0]["extra"] == {"big": "x" * 100000} and big[0]["task"] == "ocr",
          "a 100 KB record: %s" % [str(r)[:200] for r in big])
    # --list with a tab: refused, pointing to --manifest
    lst = os.path.join(env.d, "l.txt")
    with open(lst, "w") as f:
        f.write("%s\tcaption en\n" % a)
    err = env.run(["--task", "caption en", "--out", os.path.join(env.d, "l.jsonl"), "--list", lst], want_rc=None)
    check("l.txt:1: a tab" in err and "--manifest" in err, "--list with a tab: %s" % err[-800:])


def t_multitask(env):
    out = os.path.join(env.d, "mt.jsonl")
    tasks = ["caption en", "ocr", "answer en what is this?"]
    args = []
    for t in tasks:
        args += ["--task", t]
    err = env.run(args + ["--out", out, "photos"])
    recs = read_records(out)
    pairs = sorted((os.path.basename(r["path"]), r["task"]) for r in recs)
    want = sorted((n, t) for n in env.names for t in tasks)
    check(pairs == want, "records %s, want one per (image, task) %s" % (pairs, want))
    check(summary(err) == (9, 9, 0), "summary: %s" % err[-300:])
    check(len({r["key"] for r in recs}) == 9, "keys not distinct per task")
    env.run(args + ["--out", out, "photos"])
    check(len(read_records(out)) == 9, "a rerun added records")
    # a --config file's tasks are replaced by the command line's, not added to them ("the command line wins")
    conf = os.path.join(env.d, "run.conf")
    with open(conf, "w") as f:
        f.write("task = ocr\ntask = caption en\n")
    out2 = os.path.join(env.d, "mt2.jsonl")
    env.run(["--config", conf, "--task", "answer en why?", "--out", out2, "photos"])
    check(sorted({r["task"] for r in read_records(out2)}) == ["answer en why?"], "config tasks added to the command line's")
    out3 = os.path.join(env.d, "mt3.jsonl")
    env.run(["--config", conf, "--out", out3, "photos"])
    check(sorted({r["task"] for r in read_records(out3)}) == ["caption en", "ocr"], "a config file's two tasks")


def t_respelled(env):
    out = os.path.join(env.d, "rs.jsonl")
    for spelling in ("photos/", "./photos", env.photos, os.path.join(env.photos, "..", "photos")):
        env.run(["--task", "caption en", "--out", out, spelling])
    recs = read_records(out)
    check(len(recs) == len(env.names), "%d records for %d files after 4 spellings" % (len(recs), len(env.names)))
    check(all(r["path"].startswith("photos/") for r in recs), "records do not keep the first spelling: %s" % recs)


def t_retry(env):
    folder = os.path.join(env.d, "rt")
    os.makedirs(folder)
    shutil.copy(os.path.join(env.photos, env.names[0]), os.path.join(folder, "good.png"))
    bad = os.path.join(folder, "bad.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    out = os.path.join(env.d, "rt.jsonl")
    err = env.run(["--task", "caption en", "--out", out, folder], want_rc=3)  # done with failures
    check(summary(err) == (2, 1, 1), "first run: %s" % err[-300:])
    check(sum("error" in r for r in read_records(out)) == 1, "no error record")
    shutil.copy(os.path.join(env.photos, env.names[1]), bad)          # fixed
    err = env.run(["--task", "caption en", "--out", out, "--retry-failed", folder])
    check(summary(err) == (2, 2, 0), "retry summary: %s" % err[-300:])
    recs = read_records(out)
    check(len(recs) == 2 and not any("error" in r for r in recs), "after --retry-failed: %s" % recs)
    # resume after the compaction: nothing is redone or duplicated (the job store's offsets followed)
    env.run(["--task", "caption en", "--out", out, folder])
    check(len(read_records(out)) == 2, "a rerun after compaction added records")
    # a new --db over an old output with an error record: the success supersedes it too
    with open(bad, "wb") as f:
        f.write(b"not an image")
    out2 = os.path.join(env.d, "rt2.jsonl")
    env.run(["--task", "caption en", "--out", out2, folder], want_rc=3)  # done with failures
    shutil.copy(os.path.join(env.photos, env.names[2]), bad)
    err = env.run(["--task", "caption en", "--out", out2, "--db", os.path.join(env.d, "new.db"), folder])
    check(summary(err) == (2, 2, 0), "new --db summary: %s" % err[-300:])
    recs = read_records(out2)
    check(len(recs) == 2 and not any("error" in r for r in recs), "after a new --db: %s" % recs)


TESTS = {"manifest": t_manifest, "multitask": t_multitask, "respelled": t_respelled, "retry": t_retry}


def case_main(tests, prefix):
    """The command line of a script of such cases (this one, shards_test.py): TEST --paliflow --tokenizer
    --images; skipped without the tokenizer."""
    ap = argparse.ArgumentParser()
    ap.add_argument("test", choices=sorted(tests))
    ap.add_argument("--paliflow", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--images", required=True)
    a = ap.parse_args()
    if not os.path.exists(a.tokenizer):
        print("SKIP: no tokenizer at %s" % a.tokenizer)
        return 77
    return run_case(a.test, "%s%s_" % (prefix, a.test), lambda d: tests[a.test](Env(a, d)))


def main():
    return case_main(TESTS, "pf_datasets_")


if __name__ == "__main__":
    sys.exit(main())
