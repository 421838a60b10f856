#!/usr/bin/env python3
"""Issue 18: the scan in its own thread, and --path-only without the producer reading the files.

  scan_thread  The producer's input list is a FIFO the test holds open: the scan cannot end while the test
               writes paths into it, yet records for those paths must come out (before the scan thread, the loop
               itself blocked reading the list and dispatched nothing). Closing the FIFO ends the scan and the job.
  path_only    The same files through a producer without and with --path-only. With it, the producer must not
               read them: its read bytes (/proc/PID/io rchar) stay far below the files' size (sparse 8 MiB files,
               so a producer that read them would show 8 MiB each); each record's `content_key`, made by the
               worker from the bytes, equals the `key` of the run that read them in the producer.
  kill_scan    kill -9 of the producer while its scan is under way (the list is a FIFO still open), then a resume
               with the whole list: exactly one record per file, every item finished in the job store.
  touched      --path-only, the job done; then every file touched (same bytes, new time: a new stat key), one
               rewritten with other bytes, and the job run again on a new job store (every item redone) into the
               same output, by a new sink that rebuilt its index from the output: the touched files get no
               second record (the sink knows results by content_key too), the rewritten one gets its new
               record.

usage: hubscan_test.py scan_thread|path_only|kill_scan|touched --paliflow PATH --worker PATH [--keep]
No timed assertion: waits have generous limits and only fail a test that would otherwise hang."""
import argparse
import os
import sqlite3
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline_test as pt  # noqa: E402


def producer(a, d, j, inputs, extra=()):
    """A producer of job J over INPUTS (the Job helper always adds the folder d/in)."""
    cmd = [a.paliflow, "producer", "--bind", j.prod_ep, "--db", j.db, "--task", j.task, "--image-size", "8",
           "--custom-image-size", "--progress", "off", "--ack-timeout", "5"] + pt.HB + list(extra) + list(inputs)
    return pt.start(cmd, j.log("producer"))


def small_files(d, n):
    os.makedirs(os.path.join(d, "in"), exist_ok=True)
    files = {}
    for i in range(n):
        p = os.path.join(d, "in", "f%05d.jpg" % i)
        with open(p, "wb") as f:
            f.write(b"image %d " % i * (1 + i % 7))
        files[p] = "good"
    return files


class FifoWriter:
    """Holds a FIFO open for writing (so its reader never sees the end) until close()."""

    def __init__(self, path):
        os.mkfifo(path)
        self.path = path
        self.fd = None
        self.opened = threading.Event()
        # open() for writing blocks until the producer opens it for reading: in a thread, so a producer that
        # fails first does not hang the test
        self.t = threading.Thread(target=self._open, daemon=True)
        self.t.start()

    def _open(self):
        self.fd = os.open(self.path, os.O_WRONLY)
        self.opened.set()

    def write(self, lines):
        pt.check(self.opened.wait(30), "the producer never opened the list FIFO")
        os.write(self.fd, "".join(l + "\n" for l in lines).encode())

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def records_for(out, paths):
    try:
        got = set(r["path"] for r in pt.read_records(out))
    except (pt.Fail, ValueError):
        return 0
    return len(got & set(paths))


def wait_for(cond, timeout, what, procs=()):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        for p in procs:
            pt.check(p.poll() is None, "%s exited (status %s) while waiting for %s; log %s" % (
                getattr(p, "log", "a process"), p.returncode, what, getattr(p, "log", "")))
        time.sleep(0.05)
    raise pt.Fail("no %s within %d s" % (what, timeout))


def job_states(db):
    con = sqlite3.connect(db)
    try:
        return dict(con.execute("SELECT state, count(*) FROM items GROUP BY state").fetchall())
    finally:
        con.close()


def t_scan_thread(a, d):
    files = small_files(d, 60)
    paths = sorted(files)
    j = pt.Job(a, d, "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d)
    fifo = FifoWriter(os.path.join(d, "list.fifo"))
    j.sink()
    prod = producer(a, d, j, ["--list", fifo.path])
    j.worker("preprocess", ["--threads", "1", "--exit-when-done"])
    j.worker("inference", ["--max-batch", "4", "--exit-when-done"])
    fifo.write(paths[:30])
    # the list is still open: the scan cannot be complete, and yet its first files are done
    wait_for(lambda: records_for(j.out, paths[:30]) == 30, 60, "records for the first 30 files during the scan",
             [prod])
    pt.check(prod.poll() is None, "the producer ended with its list still open")
    log = open(prod.log, errors="replace").read()
    pt.check("scan complete" not in log, "the scan says complete with its list still open")
    fifo.write(paths[30:])
    fifo.close()
    pt.check(pt.wait_exit(prod, 120, "producer") == 0, "producer exit status %s" % prod.returncode)
    pt.verify(j.out, files, j.db)
    print("30 records out while the scan was still reading its list; then %d in all" % len(files))


def t_path_only(a, d):
    n = 6
    os.makedirs(os.path.join(d, "in"))
    files = {}
    for i in range(n):   # sparse: 8 MiB each to read, nothing on disk
        p = os.path.join(d, "in", "big%d.jpg" % i)
        with open(p, "wb") as f:
            f.write(b"image %d" % i)
            f.truncate(8 << 20)
        files[p] = "good"
    total = n * (8 << 20)
    keys = {}
    for mode in ("read", "path_only"):
        sub = os.path.join(d, mode)
        os.makedirs(sub)
        j = pt.Job(a, sub, "ipc://%s/prod.sock" % sub, "ipc://%s/sink.sock" % sub)
        sink = j.sink()
        extra = ["--stay"] + (["--path-only"] if mode == "path_only" else [])
        prod = producer(a, sub, j, [os.path.join(d, "in")], extra)
        j.worker("preprocess", ["--threads", "1"])
        j.worker("inference", ["--max-batch", "4"])
        wait_for(lambda: "job complete" in open(prod.log, errors="replace").read(), 120, "the job's end", [prod])
        rchar = int([ln.split()[1] for ln in open("/proc/%d/io" % prod.pid) if ln.startswith("rchar:")][0])
        prod.terminate()
        pt.wait_exit(prod, 30, "producer")
        sink.terminate()
        pt.wait_exit(sink, 30, "sink")
        recs = pt.verify(j.out, files, j.db)
        keys[mode] = {r["path"]: r for r in recs}
        print("%s: producer read %d bytes for %d bytes of files" % (mode, rchar, total))
        if mode == "read":
            pt.check(rchar >= total, "the reading producer read only %d of %d bytes: the check cannot tell" %
                     (rchar, total))
        else:
            pt.check(rchar < total // 4, "with --path-only the producer read %d bytes (the files hold %d)" %
                     (rchar, total))
    for p in files:
        r0, r1 = keys["read"][p], keys["path_only"][p]
        pt.check("content_key" not in r0, "a record of the reading producer has a content_key: %s" % r0)
        pt.check(r1.get("content_key") == r0["key"], "%s: --path-only content_key %s, the bytes' key %s" % (
            p, r1.get("content_key"), r0["key"]))
        pt.check(r1["key"] != r0["key"] and r1["key"][-16:] == r0["key"][-16:],
                 "%s: --path-only key %s should be the stat key with the same settings half as %s" % (
                     p, r1["key"], r0["key"]))


def t_kill_scan(a, d):
    files = small_files(d, 400)
    paths = sorted(files)
    j = pt.Job(a, d, "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d)
    fifo = FifoWriter(os.path.join(d, "list.fifo"))
    j.sink()
    prod = producer(a, d, j, ["--list", fifo.path])
    j.worker("preprocess", ["--threads", "2", "--exit-when-done"])
    j.worker("inference", ["--max-batch", "4", "--exit-when-done"])
    fifo.write(paths[:250])
    wait_for(lambda: records_for(j.out, paths) >= 20, 60, "20 records during the scan", [prod])
    pt.kill9(prod)   # its list is still open: the scan was under way
    fifo.close()
    before = records_for(j.out, paths)
    full = os.path.join(d, "list.txt")
    with open(full, "w") as f:
        f.write("".join(p + "\n" for p in paths))
    prod = producer(a, d, j, ["--list", full])
    pt.check(pt.wait_exit(prod, 180, "resumed producer") == 0, "producer exit status %s" % prod.returncode)
    pt.verify(j.out, files, j.db)
    states = job_states(j.db)
    pt.check(states.get(2, 0) == len(files) and len(states) == 1, "job store states %s" % states)
    print("kill -9 during the scan with %d records out; resumed: one record for each of %d files" %
          (before, len(files)))


def t_touched(a, d):
    files = small_files(d, 20)
    paths = sorted(files)
    j = pt.Job(a, d, "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d)
    sink = j.sink()
    keys = {}
    for run in (1, 2):
        if run == 2:
            # a new sink that must rebuild its index from the output (the content keys come from the records)
            sink.terminate()
            pt.wait_exit(sink, 30, "sink")
            os.unlink(j.out + ".seen")
            sink = j.sink()
            for p in paths:
                st = os.stat(p)
                os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 7_000_000_000))
            with open(paths[0], "ab") as f:
                f.write(b" rewritten")
            j.db = os.path.join(d, "job2.sqlite")
        prod = producer(a, d, j, [os.path.join(d, "in")], ["--path-only"])
        j.worker("preprocess", ["--threads", "1", "--exit-when-done"])
        j.worker("inference", ["--max-batch", "4", "--exit-when-done"])
        pt.check(pt.wait_exit(prod, 120, "producer run %d" % run) == 0, "producer exit status %s" % prod.returncode)
        con = sqlite3.connect(j.db)
        keys[run] = dict(con.execute("SELECT path, key FROM items"))
        con.close()
    changed = [p for p in paths if keys[1].get(p) != keys[2].get(p)]
    pt.check(len(changed) == len(paths), "touching should give every file a new stat key; %d of %d changed" %
             (len(changed), len(paths)))
    recs = pt.read_records(j.out)
    per = {}
    for r in recs:
        per.setdefault(r["path"], []).append(r)
    for p in paths:
        want = 2 if p == paths[0] else 1
        got = per.get(p, [])
        pt.check(len(got) == want, "%s: %d records, want %d (%s)" % (
            p, len(got), want, "rewritten" if want == 2 else "only touched"))
    cks = [r.get("content_key") for r in per[paths[0]]]
    pt.check(len(set(cks)) == 2, "the rewritten file's two records share content_key %s" % cks)
    print("%d files touched and redone: no second record; the rewritten one: its new record" % (len(paths) - 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("test", choices=["scan_thread", "path_only", "kill_scan", "touched"])
    ap.add_argument("--paliflow", required=True)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    body = {"scan_thread": t_scan_thread, "path_only": t_path_only, "kill_scan": t_kill_scan,
            "touched": t_touched}[a.test]
    return pt.run_case(a.test, "pf_%s_" % a.test, lambda d: body(a, d), a.keep)


if __name__ == "__main__":
    sys.exit(main())
