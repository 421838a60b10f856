#!/usr/bin/env python3
"""The hub as a demanding new user meets it (README "Several processes"), on a folder of odd file names.

  report_reasons  `paliflow run --report` (the real preprocessing, a tiny random checkpoint) over files named
                  with spaces, unicode, a leading dash, a '#', 200 characters: two empty files, two that are
                  not images, a symlink loop of two links, one good image. The report's errors.by_reason must
                  group the failures by reason ("preprocess: empty (0 bytes)": 2, ...), not hold one group per
                  file (the preprocess stage starts its messages with the file's path, which the job store kept
                  in the reason); every failed file gets one WARN line naming its path once.
  path_only       producer --path-only (test workers) over a --list naming a file that does not exist and two
                  that do: the missing one's error record and report reason say what failed ("cannot stat: No
                  such file or directory"), as the read without --path-only says "cannot open: ...".
  quarantined     the only inference worker's model takes another image size: the producer quarantines it and
                  its progress lines must say so ("+ 0 inference (+ 1 quarantined: no work)"), not count it as
                  a worker; a second inference worker with the right size then finishes the job (exit 0).
  blind           --path-only and a preprocess worker that cannot see the files (a tmpfs over their folder in
                  its own mount namespace): the producer quarantines it with one line that names the worker
                  once ("preprocess worker blind quarantined: /.../a.jpg: cannot open: ..."); a second worker
                  that sees them finishes the job.
  service         README "Service mode": a sink and two workers started without --exit-when-done outlive a
                  job; while no producer runs each logs its "producer silent for N s" line once, and "producer
                  is back" when the next producer (another --db) starts, which they then finish (the sink used
                  to say nothing when the silence ended).

usage: hubuser_test.py report_reasons|path_only|quarantined|blind|service --paliflow PATH --worker PATH --tokenizer FILE
No timed assertion: waits have generous limits and only fail a test that would otherwise hang."""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline_test as pt  # noqa: E402
from pftest import check, read_records, start, tiny_checkpoint, wait_exit, wait_for  # noqa: E402

IMAGES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "images")


def reasons_of(report):
    rep = json.load(open(report))
    return {x["reason"]: x["count"] for x in rep["errors"]["by_reason"]}, rep


def t_report_reasons(a, d):
    inp = os.path.join(d, "in")
    os.makedirs(os.path.join(inp, "sub dir"))
    shutil.copy(os.path.join(IMAGES, "chelsea.jpg"), os.path.join(inp, "cat with spaces.jpg"))
    for name in ("empty one.jpg", os.path.join("sub dir", "空 #1.jpg")):
        open(os.path.join(inp, name), "wb").close()
    for name in ("-leading-dash.jpg", "L" * 200 + "#x.png"):
        with open(os.path.join(inp, name), "wb") as f:
            f.write(b"not an image at all\n")
    os.symlink("loop2.jpg", os.path.join(inp, "loop1.jpg"))
    os.symlink("loop1.jpg", os.path.join(inp, "loop2.jpg"))
    model = tiny_checkpoint(a.paliflow, os.path.join(d, "model"), seed=3)
    out, report = os.path.join(d, "out.jsonl"), os.path.join(d, "report.json")
    r = subprocess.run([a.paliflow, "run", "--model", model, "--tokenizer", a.tokenizer, "--task", "caption en",
                        "--max-new-tokens", "3", "--progress", "off", "--out", out, "--report", report, inp],
                       capture_output=True, text=True, timeout=300)
    print(r.stderr)
    check(r.returncode == 3, "run: exit %d (3: done with failures): %s" % (r.returncode, r.stderr[-2000:]))
    recs = read_records(out)
    check(len(recs) == 7, "%d records for 7 files: %s" % (len(recs), [x["path"] for x in recs]))
    reasons, rep = reasons_of(report)
    print("by_reason: %s" % reasons)
    check(rep["errors"]["count"] == 6 and sum(reasons.values()) == 6, "6 failures in the report: %s" % rep["errors"])
    check(reasons.get("preprocess: empty (0 bytes)") == 2, "the empty files are not one group: %s" % reasons)
    notimg = [k for k in reasons if k.startswith("preprocess: not an image in a supported format")]
    check(len(notimg) == 1 and reasons[notimg[0]] == 2, "the non-images are not one group: %s" % reasons)
    check(reasons.get("producer: cannot open: Too many levels of symbolic links") == 2, "the loop: %s" % reasons)
    check(not any(inp in k or "empty one" in k or "dash" in k for k in reasons), "a path in a reason: %s" % reasons)
    # one WARN per failed file, its path once (the message's own "PATH: " is not repeated)
    warns = [l for l in r.stderr.splitlines() if " WARN producer: " in l and "failed)" in l]
    check(len(warns) == 6, "%d WARN lines for 6 failed files:\n%s" % (len(warns), "\n".join(warns)))
    for rec in recs:
        if "error" in rec:
            hits = [l for l in warns if (rec["path"] + ":") in l]
            check(len(hits) == 1 and hits[0].count(rec["path"]) == 1, "WARN lines for %s: %s" % (rec["path"], hits))


def t_path_only(a, d):
    os.makedirs(os.path.join(d, "in"))
    good = [os.path.join(d, "in", n) for n in ("a b.jpg", "-c#d.jpg")]
    for i, p in enumerate(good):
        with open(p, "wb") as f:
            f.write(b"image %d" % i * 10)
    missing = os.path.join(d, "gone", "missing.jpg")
    lst = os.path.join(d, "list.txt")
    with open(lst, "w") as f:
        f.write("\n".join(good + [missing]) + "\n")
    j = pt.Job(a, d, "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d)
    j.sink()
    report = os.path.join(d, "report.json")
    p = start([a.paliflow, "producer", "--bind", j.prod_ep, "--db", j.db, "--task", j.task, "--image-size", "8",
               "--custom-image-size", "--progress", "off", "--path-only", "--list", lst, "--report", report] + pt.HB,
              j.log("producer"))
    j.worker("preprocess", ["--exit-when-done"])
    j.worker("inference", ["--exit-when-done"])
    check(wait_exit(p, 60, "producer") == 0, "producer exit status %s" % p.returncode)
    recs = {r["path"]: r for r in read_records(j.out)}
    check(sorted(recs) == sorted(good + [missing]), "records for %s" % sorted(recs))
    err = recs[missing].get("error", {})
    check(err.get("stage") == "producer" and err.get("message") == "cannot stat: No such file or directory",
          "the missing file's error: %s" % err)
    reasons, _ = reasons_of(report)
    check(reasons == {"producer: cannot stat: No such file or directory": 1}, "report reasons: %s" % reasons)


def t_quarantined(a, d):
    files = pt.make_inputs(d, n_good=6, extra=False)
    j = pt.Job(a, d, "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d)
    j.sink()
    p = j.producer(["--progress-interval", "0.2"])
    j.worker("preprocess", ["--exit-when-done"])
    wrong = j.worker("inference", ["--model-size", "16", "--name", "wrong-size"])
    want = "workers 1 preprocess + 0 inference (+ 1 quarantined: no work), sink up"
    wait_for(lambda: want in open(p.log, errors="replace").read(), 60, "a progress line with '%s'" % want)
    log = open(p.log, errors="replace").read()
    check("inference worker wrong-size quarantined: its model takes 16 px images" in log, "no quarantine line")
    check(not os.path.exists(j.out) or not read_records(j.out), "records without an inference worker that works")
    j.worker("inference", ["--exit-when-done"])
    check(wait_exit(p, 60, "producer") == 0, "producer exit status %s" % p.returncode)
    pt.verify(j.out, files, j.db)
    wrong.terminate()
    check(wait_exit(wrong, 30, "the quarantined worker") == 0, "the quarantined worker did not exit 0 on SIGTERM")


def t_blind(a, d):
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        print("SKIP: unshare -rm (a mount namespace for the worker that lacks the files) is not permitted here")
        sys.exit(77)
    files = pt.make_inputs(d, n_good=4, extra=False)
    j = pt.Job(a, d, "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d)
    j.sink()
    p = j.producer(["--path-only"])
    hide = "mount -t tmpfs none %s && exec \"$@\"" % os.path.join(d, "in")
    cmd = ["unshare", "-rm", "sh", "-c", hide, "sh", a.worker, "preprocess", "--producer", j.prod_ep, "--sink",
           j.sink_ep, "--name", "blind"] + pt.HB
    blind = start(cmd, j.log("blind"))
    j.worker("inference", ["--exit-when-done"])
    wait_for(lambda: "quarantined" in open(p.log, errors="replace").read(), 60, "the blind worker's quarantine")
    lines = [l for l in open(p.log, errors="replace") if "quarantined" in l]
    check(len(lines) == 1 and "preprocess worker blind quarantined: " in lines[0] and lines[0].count("worker blind") == 1
          and "cannot open" in lines[0], "the quarantine line: %s" % lines)
    j.worker("preprocess", ["--exit-when-done"])
    check(wait_exit(p, 60, "producer") == 0, "producer exit status %s" % p.returncode)
    pt.verify(j.out, files, j.db)
    blind.terminate()
    wait_exit(blind, 30, "the blind worker")


def t_service(a, d):
    files = pt.make_inputs(d, n_good=4, extra=False)
    j = pt.Job(a, d, "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d)
    p = j.producer()   # first: a service that never heard a producer has no silence to report yet
    services = [j.sink(), j.worker("preprocess"), j.worker("inference")]
    silent = "producer silent for"
    text = {services[0]: "still collecting results", services[1]: "keeping my items and waiting for it",
            services[2]: "keeping my items and waiting for it"}
    check(wait_exit(p, 60, "the first producer") == 0, "first producer exit status %s" % p.returncode)
    pt.verify(j.out, files, j.db)

    def logged(s, what):
        return what in open(s.log, errors="replace").read()
    # no producer now: each service says so once, and keeps running
    wait_for(lambda: all(logged(s, silent) for s in services), 60, "every service's silence line")
    for s in services:
        line = [l for l in open(s.log, errors="replace") if silent in l]
        check(len(line) == 1 and text[s] in line[0], "%s: silence lines %s" % (s.log, line))
        check(s.poll() is None, "%s exited between jobs" % s.log)
    # the next job (another job store, same output): every service hears it, says so, and does it
    j.db = os.path.join(d, "job2.sqlite")
    j.task = "ocr"
    p = j.producer()
    check(wait_exit(p, 60, "the second producer") == 0, "second producer exit status %s" % p.returncode)
    for s in services:
        check(logged(s, "producer is back"), "%s: no 'producer is back' line" % s.log)
    recs = read_records(j.out)
    check(sorted((r["path"], r["task"]) for r in recs) ==
          sorted((f, t) for f in files for t in ("caption en", "ocr")), "records of the two jobs: %s" %
          [(r["path"], r["task"]) for r in recs])
    for s in services:
        s.terminate()
        check(wait_exit(s, 30, s.log) == 0, "%s did not exit 0 on SIGTERM" % s.log)


def main():
    ap = pt.case_parser(["report_reasons", "path_only", "quarantined", "blind", "service"])
    ap.add_argument("--tokenizer", required=True, help="PaliGemma's tokenizer.json (the build's fixture)")
    a = ap.parse_args()
    body = {"report_reasons": t_report_reasons, "path_only": t_path_only, "quarantined": t_quarantined,
            "blind": t_blind, "service": t_service}[a.test]
    return pt.run_case("hubuser " + a.test, "pf_hubuser_%s_" % a.test, lambda d: body(a, d), a.keep)


if __name__ == "__main__":
    sys.exit(main())
