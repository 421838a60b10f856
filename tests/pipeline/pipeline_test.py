#!/usr/bin/env python3
"""Process-level pipeline tests: real producer and sink processes (build/paliflow) with workers running
the test stages (test_worker), over ipc/tcp/inproc; faults (kill -9), restarts, the PUB socket, a poison
item, and a multi-host run in network namespaces.

usage: pipeline_test.py TEST --paliflow PATH --worker PATH      (TEST: e2e embedded faults restart pub
poison netns). Exit 0 pass, 1 fail, 77 skipped. Every process started here is killed on the way out,
whatever happens."""
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from pftest import (PROCS, Fail, case_parser, check, connect_handshaken, free_port, kill9, netns_add,  # noqa: E402
                    read_records, run_case, start, wait_exit, wait_for)

def make_inputs(root, n_good=30, extra=True):
    """Files with known contents; returns {path: kind} with kind 'good' or 'bad'."""
    files = {}
    os.makedirs(os.path.join(root, "in", "sub", "deeper"))
    for i in range(n_good):
        sub = ["", "sub", os.path.join("sub", "deeper")][i % 3]
        p = os.path.join(root, "in", sub, "img%03d.jpg" % i)
        with open(p, "wb") as f:
            f.write(hashlib.sha256(b"%d" % i).digest() * (2 + i % 5))
        files[p] = "good"
    if extra:
        p = os.path.join(root, "in", "bad.jpg")
        with open(p, "wb") as f:
            f.write(b"BAD: not an image")
        files[p] = "bad"
        p = os.path.join(root, "in", "empty.png")
        open(p, "wb").close()
        files[p] = "bad"
        p = os.path.join(root, "in", "dangling.jpg")
        os.symlink("/nonexistent/image.jpg", p)
        files[p] = "bad"
        p = os.path.join(root, "in", "sub", "dup_of_img000.jpg")   # same bytes as img000: its own record
        shutil.copy(os.path.join(root, "in", "img000.jpg"), p)
        files[p] = "good"
        p = os.path.join(root, "in", "sub", "flaky.jpg")
        with open(p, "wb") as f:
            f.write(b"FLAKY but fine the second time")
        files[p] = "good"
        os.symlink(os.path.join(root, "in"), os.path.join(root, "in", "sub", "deeper", "loop"))  # a loop
    return files


def expected_text(path):
    b = open(path, "rb").read()
    rgb = (b * (8 // len(b) + 1))[:8]
    return "test: %s len=%d" % (rgb.hex(), len(b))


def verify(out, files, db=None, detect=False):
    recs = read_records(out)
    paths = [r["path"] for r in recs]
    dups = sorted(set(p for p in paths if paths.count(p) > 1))
    check(not dups, "duplicate records for %s" % dups[:5])
    missing = sorted(set(files) - set(paths))
    check(not missing, "no record for %d files, e.g. %s" % (len(missing), missing[:5]))
    extra = sorted(set(paths) - set(files))
    check(not extra, "records for unknown paths %s" % extra[:5])
    keys = {}
    for r in recs:
        kind = files[r["path"]]
        for k in ("path", "key", "task"):
            check(k in r, "record without %s: %s" % (k, r))
        if kind == "bad":
            check("error" in r and "stage" in r["error"] and "message" in r["error"],
                  "bad file without an error record: %s" % r)
        else:
            check("error" not in r, "good file got an error: %s" % r)
            if detect:
                check(len(r.get("boxes", [])) == 2 and r["boxes"][0]["label"] == "cat", "boxes: %s" % r)
            else:
                check(r["text"] == expected_text(r["path"]), "wrong text for %s: %s" % (r["path"], r["text"]))
            check(r["workers"].get("preprocess") and r["workers"].get("inference"), "worker ids: %s" % r)
        keys.setdefault(r["key"], []).append(r["path"])
    if db:
        con = sqlite3.connect(db)
        states = dict(con.execute("SELECT state, count(*) FROM items GROUP BY state").fetchall())
        con.close()
        good = sum(1 for k in files.values() if k == "good")
        check(states.get(2, 0) == good and states.get(3, 0) == len(files) - good and
              not states.get(0) and not states.get(1), "job store states %s" % states)
    return recs


def wait_records(out, n, timeout):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if len(read_records(out)) >= n:
                return
        except (Fail, ValueError):
            pass
        time.sleep(0.05)
    raise Fail("fewer than %d records after %d s" % (n, timeout))


# These tests are about the pipeline's machinery, not its security: plain tcp, allowed explicitly
# (tests/fleet covers CURVE).
HB = ["--heartbeat", "0.2", "--heartbeat-timeout", "1.5", "--insecure"]
# For a job in which no peer is meant to be lost (nobody is killed): the timeout only bounds a hang. A live
# peer can go quiet for more than 1.5 s on a loaded machine (a Python peer was seen silent 1.7 s) and be dropped.
PATIENT_HB = ["--heartbeat", "0.2", "--heartbeat-timeout", "120", "--insecure"]


class Job:
    def __init__(self, a, d, prod_ep, sink_ep, pub_ep=None, task="caption en", bind_prod=None, bind_sink=None,
                 hb=HB):
        self.a, self.d = a, d
        self.prod_ep, self.sink_ep, self.pub_ep = prod_ep, sink_ep, pub_ep
        self.bind_prod = bind_prod or prod_ep
        self.bind_sink = bind_sink or sink_ep
        self.out = os.path.join(d, "out.jsonl")
        self.db = os.path.join(d, "job.sqlite")
        self.task = task
        self.hb = list(hb)   # the heartbeat options (and --insecure) of every process started here
        self.n = 0

    def log(self, name):
        self.n += 1
        return os.path.join(self.d, "%02d_%s.log" % (self.n, name))

    def producer(self, extra=(), netns=None):
        cmd = [self.a.paliflow, "producer", "--bind", self.bind_prod, "--db", self.db, "--task", self.task,
               "--image-size", "8", "--custom-image-size", "--progress", "lines", "--progress-interval", "1",
               "--ack-timeout", "5", "--max-attempts", "3"] + self.hb + list(extra) + [os.path.join(self.d, "in")]
        return start(cmd, self.log("producer"), netns)

    def sink(self, netns=None):
        cmd = [self.a.paliflow, "sink", "--bind", self.bind_sink, "--producer", self.prod_ep.replace("*", "127.0.0.1"),
               "--out", self.out, "--batch", "8", "--flush-ms", "20"] + self.hb
        if self.pub_ep:
            cmd += ["--publish", self.pub_ep]
        return start(cmd, self.log("sink"), netns)

    def worker(self, role, extra=(), netns=None, prod=None, sink=None):
        cmd = [self.a.worker, role, "--producer", prod or self.prod_ep, "--sink", sink or self.sink_ep] + self.hb + \
              ["--drain-timeout", "5"] + list(extra)
        return start(cmd, self.log(role), netns)


def t_e2e(a, d):
    """ipc endpoints; 2 preprocess workers, 1 inference worker; bad files; duplicates; a symlink loop."""
    files = make_inputs(d)
    j = Job(a, d, "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d)
    j.sink()
    p = j.producer()
    for _ in range(2):
        j.worker("preprocess", ["--threads", "2", "--exit-when-done"])
    j.worker("inference", ["--max-batch", "4", "--exit-when-done"])
    check(wait_exit(p, 60, "producer") == 0, "producer exit status %s" % p.returncode)
    verify(j.out, files, j.db)
    for w in PROCS:
        if "preprocess" in w.log or "inference" in w.log:
            check(wait_exit(w, 20, "worker") == 0, "a worker did not exit 0 (%s)" % w.log)
    # rerun on the finished job: nothing to do, exits 0, output unchanged
    before = open(j.out, "rb").read()
    p2 = j.producer()
    check(wait_exit(p2, 30, "producer rerun") == 0, "rerun exit status")
    check(open(j.out, "rb").read() == before, "rerun changed the output")
    # the job store edited by hand (two done items queued again with the sqlite3 shell): the counts it keeps are
    # off; the producer notices, counts again, redoes the two and finishes (the sink already holds their records)
    con = sqlite3.connect(j.db)
    con.execute("UPDATE items SET state = 0, out_end = NULL WHERE id IN (SELECT id FROM items WHERE state = 2 "
                "ORDER BY id LIMIT 2)")
    con.commit()
    con.close()
    p3 = j.producer()
    j.worker("preprocess", ["--exit-when-done"])
    j.worker("inference", ["--exit-when-done"])
    check(wait_exit(p3, 60, "producer after a hand edit") == 0, "exit status after a hand edit %s" % p3.returncode)
    check("item counts were wrong" in open(p3.log, errors="replace").read(), "the wrong counts were not noticed")
    check(open(j.out, "rb").read() == before, "redoing the edited items changed the output")
    verify(j.out, files, j.db)


def t_embedded(a, d):
    """The embedded runner (threads + inproc) with the test stages; detect prompt -> boxes; resume."""
    files = make_inputs(d)
    out = os.path.join(d, "out.jsonl")
    cmd = [a.worker, "embedded", "--task", "detect cat ; dog", "--out", out, "--image-size", "8",
           "--db", os.path.join(d, "job.sqlite"), os.path.join(d, "in")]
    p = start(cmd, os.path.join(d, "embedded.log"))
    check(wait_exit(p, 60, "embedded run") == 0, "embedded exit status %s" % p.returncode)
    recs = verify(out, files, os.path.join(d, "job.sqlite"), detect=True)
    r = next(r for r in recs if "boxes" in r)
    w, h = r["image"]["width"], r["image"]["height"]
    b = r["boxes"][0]
    check(abs(b["y0"] - 100 / 1023 * h) < 1e-6 and abs(b["x1"] - 400 / 1023 * w) < 1e-6, "box mapping %s" % r)
    check(r["boxes"][1]["x1"] == w and r["boxes"][1]["y1"] == h, "full-image box %s" % r)
    # a model that takes another image size than --image-size: refused before anything starts (issue 18; it
    # used to answer every item with an error record)
    out2 = os.path.join(d, "out2.jsonl")
    cmd = [a.worker, "embedded", "--task", "ocr", "--out", out2, "--image-size", "8", "--model-size", "16",
           "--db", os.path.join(d, "job2.sqlite"), os.path.join(d, "in")]
    p = start(cmd, os.path.join(d, "embedded2.log"))
    check(wait_exit(p, 60, "embedded run 2") != 0, "embedded 2: a size mismatch was not refused")
    log2 = open(os.path.join(d, "embedded2.log"), errors="replace").read()
    check("--image-size 8, but the model takes 16 px" in log2, "embedded 2: no reason given: %s" % log2[-500:])
    check(not read_records(out2), "embedded 2: records written despite the refusal")


def t_faults(a, d):
    """kill -9 a preprocess worker and an inference worker mid-job; replacements finish it."""
    files = make_inputs(d, n_good=60)
    j = Job(a, d, "tcp://127.0.0.1:%d" % free_port(), "tcp://127.0.0.1:%d" % free_port())
    j.sink()
    p = j.producer()
    # the first preprocess worker hangs after 30 items: the job cannot end before the kill, however late a
    # loaded machine lets it come (with only a delay per item it was a race against the kill)
    pre = j.worker("preprocess", ["--delay-ms", "40", "--threads", "2", "--hang-after", "30"])
    inf = j.worker("inference", ["--delay-ms", "15", "--max-batch", "4"])
    wait_records(j.out, 12, 60)
    kill9(pre)
    kill9(inf)
    n_at_kill = len(read_records(j.out))
    check(n_at_kill < len(files), "the job finished before the kill (%d records)" % n_at_kill)
    time.sleep(0.5)
    j.worker("preprocess", ["--delay-ms", "5", "--threads", "2", "--exit-when-done"])
    j.worker("inference", ["--delay-ms", "5", "--exit-when-done"])
    check(wait_exit(p, 90, "producer") == 0, "producer exit status %s" % p.returncode)
    verify(j.out, files, j.db)
    log = open(p.log).read()
    check("items back in the queue" in log, "the producer never requeued the dead workers' items")
    # one summary line per lost worker, none per item (issue 18: a worker holding 232 items gave 232 lines)
    check(not re.search(r"worker \S+ (silent|left|is unreachable).*; retrying", log),
          "a line per requeued item of a lost worker")


def t_restart(a, d):
    """kill -9 and restart the producer, then the sink: the job resumes, one record per file."""
    files = make_inputs(d, n_good=60)
    j = Job(a, d, "tcp://127.0.0.1:%d" % free_port(), "tcp://127.0.0.1:%d" % free_port())
    sink = j.sink()
    p = j.producer()
    j.worker("preprocess", ["--delay-ms", "30", "--threads", "2", "--exit-when-done"])
    j.worker("inference", ["--delay-ms", "10", "--exit-when-done"])
    wait_records(j.out, 10, 60)
    kill9(p)
    time.sleep(1.0)
    p = j.producer()
    wait_records(j.out, 30, 60)
    # what the workers finished for the killed run arrives first (its instance): dropped without a warning
    stale = [ln for ln in open(p.log, errors="replace").read().splitlines()
             if "WARN" in ln and "did not say hello" in ln and re.search(r"refused (tensor|done|nack) ", ln)]
    check(not stale, "the restarted producer warned about the previous run's messages: %s" % stale[:2])
    kill9(sink)
    time.sleep(0.5)
    sink = j.sink()
    check(wait_exit(p, 120, "producer") == 0, "producer exit status %s" % p.returncode)
    verify(j.out, files, j.db)
    # a torn last line (sink killed mid-write) is cut on restart and the item rewritten once
    recs = read_records(j.out)
    kill9(sink)
    with open(j.out, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    with open(j.out, "wb") as f:
        f.writelines(lines[:-1])
        f.write(lines[-1][: len(lines[-1]) // 2])
    con = sqlite3.connect(j.db)
    con.execute("UPDATE items SET state = 0 WHERE path = ?", (recs[-1]["path"],))
    con.commit()
    con.close()
    j.sink()
    p = j.producer()
    j.worker("preprocess", ["--exit-when-done"])
    j.worker("inference", ["--exit-when-done"])
    check(wait_exit(p, 60, "producer (torn line)") == 0, "producer exit status")
    verify(j.out, files, j.db)


def t_pub(a, d):
    """A subscriber on the sink's PUB socket receives every record (msgpack maps)."""
    try:
        import msgpack
        import zmq
    except ImportError:
        print("SKIP: python3-zmq / python3-msgpack not installed")
        sys.exit(77)
    files = make_inputs(d)
    pub = "tcp://127.0.0.1:%d" % free_port()
    j = Job(a, d, "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d, pub_ep=pub)
    j.sink()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.MAXMSGSIZE, 64 << 20)
    # subscribed before the first record: the sink is up and our subscription follows the handshake
    connect_handshaken(sub, pub, 60, "the subscriber's handshake with the sink")
    p = j.producer()
    j.worker("preprocess", ["--exit-when-done"])
    j.worker("inference", ["--exit-when-done"])
    got = []
    t0 = time.time()
    while len(got) < len(files) and time.time() - t0 < 60:
        if sub.poll(200):
            got.append(msgpack.unpackb(sub.recv(), raw=False))
    check(wait_exit(p, 60, "producer") == 0, "producer exit status")
    recs = verify(j.out, files, j.db)
    check(len(got) == len(recs), "subscriber got %d records, the file has %d" % (len(got), len(recs)))
    check(sorted((r["path"], r["key"]) for r in got) == sorted((r["path"], r["key"]) for r in recs),
          "published records differ from the file")
    check(all(r["v"] == 1 and r["type"] == "record" for r in got), "envelope fields")
    sub.close(0)
    ctx.term()


def t_poison(a, d):
    """An item that crashes every worker that touches it becomes an error record after N attempts; the
    supervisor here restarts crashed workers, like systemd would."""
    files = make_inputs(d, n_good=6, extra=False)
    p_crash = os.path.join(d, "in", "crash.jpg")
    with open(p_crash, "wb") as f:
        f.write(b"CRASH on purpose")
    files[p_crash] = "bad"
    j = Job(a, d, "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d)
    j.sink()
    p = j.producer(["--max-attempts", "2"])
    pre = j.worker("preprocess", ["--exit-when-done"])
    j.worker("inference", ["--exit-when-done"])
    restarts = 0
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < 60:
        if pre.poll() is not None and pre.returncode != 0:
            restarts += 1
            pre = j.worker("preprocess", ["--exit-when-done"])
        time.sleep(0.1)
    check(wait_exit(p, 5, "producer") == 0, "producer exit status %s" % p.returncode)
    recs = verify(j.out, files, j.db)
    r = next(r for r in recs if r["path"] == p_crash)
    check("gave up after 2 attempts" in r["error"]["message"], "poison record: %s" % r)
    check(restarts >= 2, "expected the poison item to crash 2 workers, saw %d" % restarts)


def t_netns(a, d):
    """Producer and sink in one network namespace, workers in two others (veth links), joining after the
    job started. The sink starts once both preprocess workers have joined (no sink, no work handed out): the
    first hand-out then goes round both, so each namespace's worker does work however late its process started
    (with the sink up first, one that started late on a loaded machine found the job already done)."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        print("SKIP: the multi-host test needs root and iproute2 (ip netns); CI runs it as root")
        sys.exit(77)
    tag = "%d" % (os.getpid() % 100000)
    hub, w1, w2 = "pfh" + tag, "pfa" + tag, "pfb" + tag
    netns_add((hub, w1, w2))
    # Test-only addresses inside namespaces this test creates (never routed anywhere else).
    links = [(w1, "10.231.1.1", "10.231.1.2", "va" + tag), (w2, "10.231.2.1", "10.231.2.2", "vb" + tag)]
    sh = lambda *c: subprocess.run(list(c), check=True, capture_output=True)
    sh("ip", "-n", hub, "link", "set", "lo", "up")
    for ns, hub_ip, ip, veth in links:
        sh("ip", "link", "add", veth + "h", "netns", hub, "type", "veth", "peer", "name", veth + "w", "netns", ns)
        sh("ip", "-n", hub, "addr", "add", hub_ip + "/24", "dev", veth + "h")
        sh("ip", "-n", ns, "addr", "add", ip + "/24", "dev", veth + "w")
        sh("ip", "-n", hub, "link", "set", veth + "h", "up")
        sh("ip", "-n", ns, "link", "set", veth + "w", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    files = make_inputs(d, n_good=40)
    j = Job(a, d, "tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002", bind_prod="tcp://*:7001",
            bind_sink="tcp://*:7002")
    p = j.producer(netns=hub)
    wait_for(lambda: "scan complete" in open(p.log, errors="replace").read(), 60, "the producer's scan")
    check(p.poll() is None, "producer exited early")   # the job is running before anyone joins
    for ns, hub_ip, ip, veth in links:
        pe, se = "tcp://%s:7001" % hub_ip, "tcp://%s:7002" % hub_ip
        j.worker("preprocess", ["--delay-ms", "10", "--exit-when-done", "--name", "pre-" + ns], netns=ns,
                 prod=pe, sink=se)
        j.worker("inference", ["--exit-when-done", "--name", "inf-" + ns], netns=ns, prod=pe, sink=se)
    for ns in (w1, w2):
        wait_for(lambda: "preprocess pre-%s joined" % ns in open(p.log, errors="replace").read(), 60,
                 "pre-%s to join" % ns)
    j.sink(netns=hub)
    check(wait_exit(p, 90, "producer") == 0, "producer exit status %s" % p.returncode)
    recs = verify(j.out, files, j.db)
    used = set(r["workers"].get("preprocess") for r in recs if "error" not in r)
    check(used == {"pre-" + w1, "pre-" + w2}, "expected both namespaces' workers to work, got %s" % used)


TESTS = {"e2e": t_e2e, "embedded": t_embedded, "faults": t_faults, "restart": t_restart, "pub": t_pub,
         "poison": t_poison, "netns": t_netns}


def main():
    a = case_parser(TESTS).parse_args()
    return run_case(a.test, "pf_%s_" % a.test, lambda d: TESTS[a.test](a, d), a.keep)

if __name__ == "__main__":
    sys.exit(main())
