#!/usr/bin/env python3
"""sink_restart.py - what a sink start costs with a big output: time from the sink's start to its first
acknowledged record, and its memory (VmRSS / VmHWM), with N records already in the output.

Why: the sink's dedupe set used to be rebuilt at every start by parsing the whole output, and held in memory
(issue 18); it now lives on disk beside the output (pipeline/sink_index.h) and a start reads only the tail.

The N records are synthetic lines (distinct key + path, the fields the sink reads back), written directly: a
real run of N items would take hours here. Then, twice (start 1: the first start over that output, which
builds the index when there is none; start 2: a later restart): a producer with a fresh job store and 20 new
small files, the test workers (near-zero compute, tests/pipeline/test_worker.c), and the sink are started;
reported is the time from the sink's start until the output grows (its first batch is written, synced and
acknowledged at once) and the sink's VmRSS/VmHWM then. Then (--steady K, default 20000) a job of K new files
through that sink: its bytes written to storage per record (/proc/PID/io write_bytes: output line, index
pages and journal; of them, the output's own bytes, and cancelled_write_bytes: dirtied then dropped by a
truncation before reaching the disk, mostly the index's rollback journal), its CPU per record and records/s,
which show what the index costs once it is far larger than its page cache.
No assertion: a measurement.

usage: sink_restart.py --paliflow build/paliflow --worker build/tests/pipeline/test_worker [--records N]
                       [--steady K] [--dir D] [--start-timeout S]
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def write_records(path, n):
    with open(path, "w") as f:
        chunk = []
        for i in range(n):
            chunk.append('{"path":"synthetic/img%09d.jpg","key":"%032x-%016x","task":"caption en","text":"a cat",'
                         '"ids":[1,2,3],"stopped_by_eos":true,"image":{"width":64,"height":64},"attempt":1}\n'
                         % (i, i * 2654435761, 7))
            if len(chunk) == 10000:
                f.write("".join(chunk))
                chunk = []
        f.write("".join(chunk))


def mem_kb(pid):
    rss = hwm = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def io_write_bytes(pid):
    """(write_bytes, cancelled_write_bytes) of PID: bytes the process dirtied in the page cache (sent to storage
    unless cancelled), and those of them a truncation dropped before they were written (the index's rollback
    journal is truncated at each commit)."""
    w = c = 0
    with open("/proc/%d/io" % pid) as f:
        for line in f:
            if line.startswith("write_bytes:"):
                w = int(line.split()[1])
            elif line.startswith("cancelled_write_bytes:"):
                c = int(line.split()[1])
    return w, c


def cpu_s(pid):
    """User + system CPU seconds of PID so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_start(a, d, run, out, files=20):
    """Start producer, workers, then the sink; returns (s to first ack, RSS kB, HWM kB, steady) where steady is
    (records, seconds, sink write_bytes) from the first ack to the job's end when FILES > 20, else None."""
    inp = os.path.join(d, "in%d" % run)
    os.makedirs(inp)
    for i in range(files):
        with open(os.path.join(inp, "f%06d.jpg" % i), "wb") as f:
            f.write(os.urandom(200) + b"%d-%d" % (run, i))
    pep = "ipc://%s/p%d.sock" % (d, run)
    sep = "ipc://%s/s%d.sock" % (d, run)
    logs = []

    def spawn(argv, name):
        lf = open(os.path.join(d, "%s%d.log" % (name, run)), "w")
        logs.append(lf)
        return subprocess.Popen(argv, stdout=lf, stderr=subprocess.STDOUT)

    procs = [spawn([a.paliflow, "producer", "--bind", pep, "--db", os.path.join(d, "job%d.db" % run), "--task",
                    "caption en", "--image-size", "224", "--progress", "off", inp], "producer")]
    for role in ("preprocess", "inference"):
        procs.append(spawn([a.worker, role, "--producer", pep, "--sink", sep, "--steps", "1"], role))
    time.sleep(1.0)   # the producer scans its 20 files and waits for a sink
    size0 = os.path.getsize(out)
    t0 = time.monotonic()
    sink = spawn([a.paliflow, "sink", "--bind", sep, "--producer", pep, "--out", out, "--log-level", "info"], "sink")
    procs.append(sink)
    first = None
    while time.monotonic() - t0 < a.start_timeout:
        if os.path.getsize(out) > size0:
            first = time.monotonic() - t0
            break
        if sink.poll() is not None:
            break
        time.sleep(0.005)
    rss, hwm = mem_kb(sink.pid) if sink.poll() is None else (0, 0)
    steady = None
    if files > 20 and first is not None:
        w0, c0, t1 = io_write_bytes(sink.pid), cpu_s(sink.pid), time.monotonic()
        procs[0].wait(3600)   # the producer exits when its job is complete
        size1 = os.path.getsize(out)
        w1, c1 = io_write_bytes(sink.pid), cpu_s(sink.pid)
        n = records_in(out, size0, size1)
        steady = (n, time.monotonic() - t1, w1[0] - w0[0], w1[1] - w0[1], size1 - size0, c1 - c0)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for lf in logs:
        lf.close()
    return first, rss, hwm, steady


def records_in(out, a, b):
    with open(out, "rb") as f:
        f.seek(a)
        return f.read(b - a).count(b"\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--paliflow", required=True)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--records", type=int, default=1000000)
    ap.add_argument("--steady", type=int, default=20000)
    ap.add_argument("--dir")
    ap.add_argument("--start-timeout", type=float, default=600,
                    help="seconds to wait for a start's first ack (a first start over 10M records rebuilds the index)")
    a = ap.parse_args()
    d = a.dir or tempfile.mkdtemp(prefix="sink_restart_")
    os.makedirs(d, exist_ok=True)
    out = os.path.join(d, "out.jsonl")
    write_records(out, a.records)
    print("output: %d records, %.1f MB" % (a.records, os.path.getsize(out) / 1e6))
    for run in (1, 2, 3):
        if run == 3 and a.steady <= 20:
            break
        first, rss, hwm, steady = one_start(a, d, run, out, a.steady if run == 3 else 20)
        print("start %d: first ack after %s s; sink VmRSS %.1f MB, VmHWM %.1f MB"
              % (run, "%.2f" % first if first is not None else "(none)", rss / 1024, hwm / 1024))
        if steady:
            n, secs, wb, cb, ob, cpu = steady
            n = max(n, 1)
            print("then %d new records in %.1f s (%.0f/s): sink wrote %.0f bytes per record (%.1f MB; of which "
                  "output lines %.0f B/record, cancelled by truncation %.0f B/record); sink CPU %.0f us/record"
                  % (n, secs, n / secs if secs else 0, wb / n, wb / 1e6, ob / n, cb / n, cpu / n * 1e6))
    if not a.dir:
        shutil.rmtree(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
