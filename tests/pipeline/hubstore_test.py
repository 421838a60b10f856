#!/usr/bin/env python3
"""Issue 18: the job store commits state transitions in groups (every 0.2 s), so a kill -9 loses the
transitions of the open group. They must cost nothing: the items are redone and the sink, which holds their
records already, writes nothing twice. Several rounds of kill -9 at random moments of the batched commits,
of the producer (crash_producer) or of the sink (crash_sink), then a resume to the end: exactly one record
per item, every item finished in the job store.

usage: hubstore_test.py crash_producer|crash_sink --paliflow PATH --worker PATH [--keep]
Exit 0 pass, 1 fail (tests/support/pftest.py: every process started is killed on the way out)."""
import os
import random
import signal
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import pipeline_test as pt  # noqa: E402  (the pipeline harness: Job, inputs, record checks)
from pftest import Fail, case_parser, check, kill9, read_records, run_case, wait_exit  # noqa: E402

ROUNDS = 6


def job_counts(db):
    con = sqlite3.connect(db)
    try:
        return dict(con.execute("SELECT state, count(*) FROM items GROUP BY state").fetchall())
    finally:
        con.close()


def n_records(out):
    try:
        return len(read_records(out))
    except (Fail, ValueError):   # a torn last line while the sink writes
        return -1


def run(a, d, victim):
    files = pt.make_inputs(d, n_good=1500)
    j = pt.Job(a, d, "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d)
    sink = j.sink()
    prod = j.producer()
    # slow enough that the job outlives the rounds, fast enough that every group commit holds many items
    j.worker("preprocess", ["--delay-ms", "5", "--threads", "2", "--exit-when-done"])
    j.worker("inference", ["--delay-ms", "1", "--max-batch", "4", "--exit-when-done"])
    rng = random.Random(os.getpid())
    kills = 0
    for r in range(ROUNDS):
        before = max(n_records(j.out), 0)
        t0 = time.time()
        # wait for progress, then kill at a random moment (the commit period is 0.2 s: anywhere in it)
        while n_records(j.out) < before + 10 and time.time() - t0 < 30 and prod.poll() is None:
            time.sleep(0.02)
        if prod.poll() is not None:
            break
        time.sleep(rng.uniform(0.0, 0.4))
        if victim == "producer":
            kill9(prod)
            kills += 1
            time.sleep(rng.uniform(0.0, 0.3))
            prod = j.producer()
        else:
            kill9(sink)
            kills += 1
            time.sleep(rng.uniform(0.0, 0.3))
            sink = j.sink()
    check(kills >= 3, "the job ended after %d kills: too fast for the test to mean anything" % kills)
    check(wait_exit(prod, 180, "producer") == 0, "producer exit status %s" % prod.returncode)
    pt.verify(j.out, files, j.db)
    counts = job_counts(j.db)
    check(counts.get(0, 0) == 0 and counts.get(1, 0) == 0, "unfinished items in the job store: %s" % counts)
    check(counts.get(2, 0) + counts.get(3, 0) == len(files), "job store counts %s for %d files" %
             (counts, len(files)))
    # the sink's own count of the records it was sent again (redone items) and did not write twice
    sink.send_signal(signal.SIGTERM)
    wait_exit(sink, 30, "sink")
    dups = [ln.strip() for ln in open(sink.log, errors="replace") if "duplicates dropped" in ln]
    print("%d kills of the %s; %d records, one per file; last sink: %s" % (kills, victim, len(files),
                                                                        dups[-1] if dups else "?"))


def main():
    a = case_parser(["crash_producer", "crash_sink"]).parse_args()
    return run_case(a.test, "pf_%s_" % a.test, lambda d: run(a, d, a.test.split("_")[1]), a.keep)

if __name__ == "__main__":
    sys.exit(main())
