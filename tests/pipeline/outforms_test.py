#!/usr/bin/env python3
"""Issue 19: the output forms beside the JSONL (pipeline/out_view.h), end to end with the real producer and
sink and the test workers, each under kill -9 of the sink at random moments and a resume to the end:

  webdataset    --webdataset W --shard-size 7: every shard a valid tar; exactly one sample per result (image
                bytes = the file's, .json = its record, .txt = its text), none for error records; full shards
                of 7 samples; member names without folders.
  sidecar_dir   --sidecar-dir S: one sidecar per file under S (its absolute path mirrored), holding its one
                record; nothing else under S but sidecars and their folders.
  sidecar_next  --sidecar-next: the same, next to each image.
  jsonl_shards  --jsonl-shards R --shard-mb 0.01: the shards' lines are the JSONL's, in order, each shard
                under the size unless it holds one line; index.json counts them.
  hostile       hostile names (--list with '..' paths, control bytes, a 250-byte name, '.json' files that
                are not ours, a symlink planted in the sidecar folder pointing outside): nothing is written
                outside the output folders, no member name has a '/', foreign files are left untouched.
  compact       a separate sink compacts at job end: a file that failed in a first job and succeeds in a second
                (new job store, same output) has one final record, its result.

usage: outforms_test.py NAME --paliflow PATH --worker PATH [--keep]"""
import argparse
import io
import json
import os
import random
import signal
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import pftest as pf  # noqa: E402  (process helpers: start, kill9, checks, run_case)
import pipeline_test as pt  # noqa: E402  (the pipeline harness: Job, inputs, record checks)

ROUNDS = 4


def sink_cmd(j, extra):
    return [j.a.paliflow, "sink", "--bind", j.bind_sink, "--producer", j.prod_ep, "--out", j.out, "--batch", "8",
            "--flush-ms", "20"] + pt.HB + list(extra)


def start_sink(j, extra):
    return pf.start(sink_cmd(j, extra), j.log("sink"))


def start_producer(j, listed):
    """The producer of pt.Job, on the paths listed in LISTED (not on the folder)."""
    cmd = [j.a.paliflow, "producer", "--bind", j.bind_prod, "--db", j.db, "--task", j.task, "--image-size", "8",
           "--custom-image-size", "--progress", "lines", "--progress-interval", "1", "--ack-timeout", "5",
           "--max-attempts", "3", "--list", listed] + pt.HB
    return pf.start(cmd, j.log("producer"))


def run_job(a, d, extra, files=None, crash=True, n_good=150, listed=None, db=None):
    """One job through producer, workers and a sink with EXTRA options; with CRASH, the sink is killed -9
    ROUNDS times at random moments and restarted. Returns (job, files)."""
    if files is None:
        files = pt.make_inputs(d, n_good=n_good)
    j = pt.Job(a, d, "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d)
    if db:
        j.db = db
    sink = start_sink(j, extra)
    prod = start_producer(j, listed) if listed else j.producer()
    j.worker("preprocess", ["--delay-ms", "5", "--threads", "2", "--exit-when-done"])
    j.worker("inference", ["--delay-ms", "2", "--max-batch", "4", "--exit-when-done"])
    rng = random.Random(os.getpid())
    kills = 0
    for _ in range(ROUNDS if crash else 0):
        before = len(safe_records(j.out))
        t0 = time.time()
        while len(safe_records(j.out)) < before + 8 and time.time() - t0 < 30 and prod.poll() is None:
            time.sleep(0.02)
        if prod.poll() is not None:
            break
        time.sleep(rng.uniform(0.0, 0.1))
        pf.kill9(sink)
        kills += 1
        time.sleep(rng.uniform(0.0, 0.2))
        sink = start_sink(j, extra)
    if crash:
        pf.check(kills >= 2, "the job ended after %d kills: too fast for the test to mean anything" % kills)
    pf.check(pf.wait_exit(prod, 180, "producer") == 0, "producer exit status %s" % prod.returncode)
    if "--exit-when-done" not in extra:   # every record is acknowledged: the forms are synced
        sink.send_signal(signal.SIGTERM)
    pf.check(pf.wait_exit(sink, 30, "sink") == 0, "sink exit status %s" % sink.returncode)
    return j, files


def safe_records(out):
    try:
        return pf.read_records(out)
    except (pf.Fail, ValueError):
        return []


def results_of(recs):
    return [r for r in recs if "error" not in r]


def source_bytes(path):
    """The bytes of an item: a file, or a member of a tar shard ("SHARD#MEMBER")."""
    if ".tar#" in path:
        shard, member = path.split(".tar#", 1)
        with tarfile.open(shard + ".tar") as t:
            return t.extractfile(member).read()
    return open(path, "rb").read()


def check_webdataset(wdir, recs, shard_size):
    shards = sorted(f for f in os.listdir(wdir) if f.endswith(".tar"))
    pf.check(shards and shards[0] == "shard-000000.tar", "shards: %s" % shards[:3])
    pf.check(shards == ["shard-%06d.tar" % i for i in range(len(shards))], "shard names not consecutive: %s" % shards)
    samples = {}
    counts = []
    for s in shards:
        with tarfile.open(os.path.join(wdir, s)) as t:   # a valid tar after every batch, also after kill -9
            keys = set()
            for m in t.getmembers():
                pf.check("/" not in m.name and ".." not in m.name and m.isfile(), "member %r in %s" % (m.name, s))
                key, ext = m.name.split(".", 1)
                pf.check(key not in samples or key in keys, "sample %s in two places (%s)" % (key, s))
                keys.add(key)
                data = t.extractfile(m).read()
                pf.check(ext not in samples.setdefault(key, {}), "member %s twice" % m.name)
                samples[key][ext] = data
            counts.append(len(keys))
    pf.check(all(c == shard_size for c in counts[:-1]), "shard sample counts %s (want %d)" % (counts, shard_size))
    want = results_of(recs)
    pf.check(len(samples) == len(want), "%d samples for %d result records" % (len(samples), len(want)))
    by_path = {}
    for key, sm in samples.items():
        pf.check(set(sm) >= {"json", "txt"}, "sample %s has %s" % (key, sorted(sm)))
        rec = json.loads(sm["json"])
        pf.check("error" not in rec, "sample for an error record: %s" % key)
        pf.check(sm["txt"].decode() == rec["text"], "text of %s" % key)
        imgs = [e for e in sm if e not in ("json", "txt")]
        pf.check(len(imgs) == 1, "sample %s: image members %s" % (key, imgs))
        pf.check(sm[imgs[0]] == source_bytes(rec["path"]), "image bytes of %s differ from %s" % (key, rec["path"]))
        pf.check(rec["path"] not in by_path, "two samples for %s" % rec["path"])
        by_path[rec["path"]] = rec
    for r in want:
        pf.check(by_path.get(r["path"], {}).get("key") == r["key"], "no sample for %s" % r["path"])
    return len(samples), len(shards)


def t_webdataset(a, d):
    w = os.path.join(d, "wds")
    j, files = run_job(a, d, ["--webdataset", w, "--shard-size", "7"])
    recs = pt.verify(j.out, files, j.db)
    n, ns = check_webdataset(w, recs, 7)
    # another output over the same shard folder: refused, the shards left as they are
    other = pf.start([a.paliflow, "sink", "--bind", "ipc://%s/s2.sock" % d, "--producer", "ipc://%s/p2.sock" % d,
                      "--out", os.path.join(d, "other.jsonl"), "--webdataset", w] + pt.HB, j.log("sink_other"))
    pf.check(pf.wait_exit(other, 30, "second sink") != 0, "a sink took over another output's shards")
    pf.check("no checkpoint of this output" in open(other.log).read(), "the refusal does not say why")
    check_webdataset(w, recs, 7)
    print("%d samples in %d shards, %d error records in the JSONL only" % (n, ns, len(recs) - n))


def t_webdataset_tar(a, d):
    """Items that are members of a tar shard (pipeline/archive): the sink reads their bytes from the shard."""
    os.makedirs(os.path.join(d, "in"))
    shard = os.path.join(d, "in", "photos.tar")
    with tarfile.open(shard, "w") as t:
        for i in range(9):
            data = b"member %d " % i * (3 + i)
            ti = tarfile.TarInfo("imgs/%03d.jpg" % i)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    w = os.path.join(d, "wds")
    j, _ = run_job(a, d, ["--webdataset", w, "--shard-size", "4"], files={}, crash=False)
    recs = pf.read_records(j.out)
    pf.check(len(recs) == 9 and all("#" in r["path"] and "error" not in r for r in recs),
             "records: %s" % [r.get("path") for r in recs][:3])
    n, ns = check_webdataset(w, recs, 4)
    print("%d samples from tar members in %d shards" % (n, ns))


def sidecar_of(root, path):
    return os.path.join(root, path.lstrip("/") + ".json") if root else path + ".json"


def check_sidecars(root, recs, files):
    for r in recs:
        sc = sidecar_of(root, r["path"])
        pf.check(os.path.isfile(sc), "no sidecar %s" % sc)
        arr = json.load(open(sc))
        pf.check(isinstance(arr, list) and len(arr) == 1, "sidecar %s holds %d records" % (sc, len(arr)))
        pf.check(arr[0] == r, "sidecar %s differs from the JSONL record" % sc)
    if root:
        for dp, dn, fn in os.walk(root):
            for f in fn:
                pf.check(f.endswith(".json") and not f.startswith(".") , "stray file %s in %s" % (f, dp))


def t_sidecar_dir(a, d):
    s = os.path.join(d, "side")
    j, files = run_job(a, d, ["--sidecar-dir", s])
    recs = pt.verify(j.out, files, j.db)
    check_sidecars(s, recs, files)
    print("%d sidecars under %s" % (len(recs), s))


def t_sidecar_next(a, d):
    j, files = run_job(a, d, ["--sidecar-next"])
    recs = pt.verify(j.out, files, j.db)
    check_sidecars(None, [r for r in recs if not os.path.islink(r["path"])], files)
    print("%d sidecars next to their images" % len(recs))


def t_jsonl_shards(a, d):
    r = os.path.join(d, "rot")
    j, files = run_job(a, d, ["--jsonl-shards", r, "--shard-mb", "0.01"])
    pt.verify(j.out, files, j.db)
    idx = json.load(open(os.path.join(r, "index.json")))
    lines = []
    for s in idx["shards"]:
        data = open(os.path.join(r, s["file"]), "rb").read()
        pf.check(len(data) == s["bytes"], "%s: %d bytes, index says %d" % (s["file"], len(data), s["bytes"]))
        ls = data.splitlines(keepends=True)
        pf.check(len(ls) == s["records"], "%s: %d lines, index says %d" % (s["file"], len(ls), s["records"]))
        pf.check(len(data) <= 10485 or len(ls) == 1, "%s: %d bytes over the size" % (s["file"], len(data)))
        lines += ls
    pf.check(lines == open(j.out, "rb").read().splitlines(keepends=True), "shards' lines are not the JSONL's")
    pf.check(idx["records"] == len(lines), "index total %d for %d lines" % (idx["records"], len(lines)))
    print("%d records in %d shards" % (len(lines), len(idx["shards"])))


def t_hostile(a, d):
    os.makedirs(os.path.join(d, "in", "sub"))
    outside = os.path.join(d, "outside")
    os.makedirs(outside)
    names = ["dots..jpg", "ctl\x01\x1b[31m.jpg", "x" * 250 + ".jpg", "semi;colon|pipe.jpg", "sp ace é.jpg", ".. .jpg",
             "-rf.jpg", "a.b.c.jpeg"]
    files = {}
    for i, n in enumerate(names):
        p = os.path.join(d, "in", "sub", n)
        with open(p, "wb") as f:
            f.write(b"hostile %d" % i)
        files[p] = "good"
    # a photo service's own .json next to an image: not ours, never overwritten
    foreign = os.path.join(d, "in", "sub", "dots..jpg.json")
    with open(foreign, "w") as f:
        f.write('{"photoTakenTime": 1}')
    # listed with '..' components: the record's path keeps them; the sidecar tree must not follow them up
    lst = os.path.join(d, "list.txt")
    with open(lst, "wb") as f:
        for p in files:
            f.write(p.replace("/in/sub/", "/in/sub/../sub/").encode() + b"\n")
    files = {p.replace("/in/sub/", "/in/sub/../sub/"): k for p, k in files.items()}
    side = os.path.join(d, "side")
    os.makedirs(side)
    # a symlink planted where the mirrored tree would go, pointing outside
    os.symlink(outside, os.path.join(side, d.lstrip("/").split("/")[0]))
    w = os.path.join(d, "wds")
    j, _ = run_job(a, d, ["--webdataset", w, "--shard-size", "3", "--sidecar-dir", side], files=files, crash=False,
                   listed=lst)
    recs = pf.read_records(j.out)
    pf.check(len(recs) == len(files), "%d records for %d files" % (len(recs), len(files)))
    pf.check(os.listdir(outside) == [], "written outside the output folders: %s" % os.listdir(outside))
    check_webdataset(w, recs, 3)
    pf.check(open(foreign).read() == '{"photoTakenTime": 1}', "a foreign .json was overwritten")
    for dp, dn, fn in os.walk(side):
        pf.check(os.path.realpath(dp).startswith(os.path.realpath(side)), "sidecar folder %s outside" % dp)
        for n in dn + fn:
            pf.check(n not in ("..", ".") and "/" not in n, "name %r" % n)
    sink_log = [p.log for p in pf.PROCS if "sink" in p.log][-1]
    pf.check("symlink" in open(sink_log, errors="replace").read(), "the planted symlink was not refused in the log")
    # again with the symlink gone: every file gets its sidecar, '..' folded into the tree, never above it
    os.unlink(os.path.join(side, d.lstrip("/").split("/")[0]))
    os.rename(j.out, j.out + ".1")
    for f in (j.db,):
        os.unlink(f)
    j, _ = run_job(a, d, ["--sidecar-dir", side], files=files, crash=False, listed=lst)
    for r in pf.read_records(j.out):
        comps = [c for c in r["path"].split("/") if c not in ("", ".")]
        sc = os.path.join(side, *["_" if c == ".." else c for c in comps[:-1]])
        hits = [f for f in os.listdir(sc) if f.endswith(".json")] if os.path.isdir(sc) else []
        pf.check(len(hits) >= 1, "no sidecar for %r under %s" % (r["path"], sc))
    print("%d hostile names: nothing outside, foreign file kept" % len(names))


def t_compact(a, d):
    os.makedirs(os.path.join(d, "in"))
    files = {}
    for i in range(20):
        p = os.path.join(d, "in", "f%02d.jpg" % i)
        with open(p, "wb") as f:
            f.write((b"BAD" if i < 3 else b"ok") + b" %d" % i)
        files[p] = "bad" if i < 3 else "good"
    # --exit-when-done: the sink exits after it heard "finished" and compacted
    j, _ = run_job(a, d, ["--exit-when-done"], files=files, crash=False)
    recs = pf.read_records(j.out)
    pf.check(sum("error" in r for r in recs) == 3, "first job: %d errors" % sum("error" in r for r in recs))
    for p, k in list(files.items()):   # the bad files fixed; a new job store over the same output
        if k == "bad":
            with open(p, "wb") as f:
                f.write(b"fixed " + os.path.basename(p).encode())
            files[p] = "good"
    j, _ = run_job(a, d, ["--exit-when-done"], files=files, crash=False, db=os.path.join(d, "job2.sqlite"))
    recs = pt.verify(j.out, files)
    pf.check(not any("error" in r for r in recs), "superseded errors stayed")
    sink_log = [p.log for p in pf.PROCS if "sink" in p.log][-1]
    pf.check("3 error records superseded" in open(sink_log).read(), "the sink did not say it compacted")
    print("3 errors superseded by later successes and removed by the sink: %d records" % len(recs))


TESTS = {"webdataset": t_webdataset, "webdataset_tar": t_webdataset_tar, "sidecar_dir": t_sidecar_dir, "sidecar_next": t_sidecar_next,
         "jsonl_shards": t_jsonl_shards, "hostile": t_hostile, "compact": t_compact}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("test", choices=sorted(TESTS))
    ap.add_argument("--paliflow", required=True)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    return pf.run_case(a.test, "pf_of_%s_" % a.test, lambda d: TESTS[a.test](a, d), a.keep)


if __name__ == "__main__":
    sys.exit(main())
