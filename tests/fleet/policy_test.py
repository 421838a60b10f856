#!/usr/bin/env python3
"""The hub's failure policy under a real fleet (issue 18). Real producer and sink (build/paliflow), workers
running the test stages (test_worker) and fake workers speaking the protocol by hand (pyzmq + msgpack).

  hoard       workers that say hello long before the producer starts (and again while it restarts) never
              hold more than their capacity: a real worker (capacity 2, hello every 0.05 s for 3 s) and a
              naive fake that answers every queued welcome with full credit (an older worker's behaviour).
  quarantine  --path-only with relative inputs: a worker that cannot see the files (its own mount
              namespace) is quarantined once, costing the items nothing; a worker whose failures keep
              succeeding elsewhere is quarantined after 3; a worker in another folder reads the canonical
              path; every file gets its result.
  backoff     a worker that fails every item: attempts are spaced by the backoff (0.4 s x 2^(n-1), jitter
              0.5-1.5x) and each item ends as an error record after --max-attempts.
  mismatch    an inference worker whose model takes another image size gets no item (quarantined at hello);
              `producer --image-size 300` is refused.
  replaced    --path-only: a worker that cannot open a file that was replaced (unlink and create) after the
              item was handed out is not quarantined (the item is charged); one that cannot open a file that
              is unchanged is.
  charge      a batched `start` (PROTOCOL.md, "Batched start and done") from a worker that then dies (falls
              silent, as after kill -9): exactly the entries it holds, with their keys, are charged an
              attempt; an entry for another worker's item and one with a wrong key are refused, each on its
              own, and the other worker's item is not marked started.

usage: policy_test.py MODE --paliflow PATH --worker PATH. Exit 0 pass, 1 fail, 77 skipped."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pipeline"))
import fleet_test as ft  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from pipeline_test import make_inputs, verify  # noqa: E402
from pftest import (FLEET_MODULES, PROCS, case_parser, check, free_port, kill9, missing_modules,  # noqa: E402
                    read_records, run_case, wait_exit, wait_for)

INSECURE = ["--insecure"]
# Only `charge` is about noticing a lost peer; the other cases give every peer ft.PATIENT_HB, a heartbeat timeout
# that only bounds a hang. A peer dropped for a stall on a loaded machine has its items charged an attempt (backoff
# counts them), gets them again under the same instance (hoard counts them) or loses its strikes (quarantine).


class Fake:
    """A worker by hand. credit: 'naive' answers every welcome with full credit (what workers did before
    hello numbers); items: 'hold' keeps them unanswered, 'nack' gives each back at once as a failure."""

    def __init__(self, ctx, name, prod_ep, role="preprocess", capacity=3, items="hold"):
        import zmq
        self.zmq, self.name, self.role, self.capacity, self.mode = zmq, name, role, capacity, items
        self.prod = ctx.socket(zmq.DEALER)
        self.prod.setsockopt(zmq.ROUTING_ID, name.encode())
        self.prod.setsockopt(zmq.LINGER, 0)
        self.prod.connect(prod_ep)
        self.instance = None
        self.got = {}          # producer instance -> item messages received from it
        self.arrivals = []     # (time, id, attempt)
        self.welcomes = 0
        self.last_hb = 0
        self.keys = {}         # item id -> key
        self.items = {}        # item id -> the item message

    def send(self, **m):
        import msgpack
        m["v"] = 1
        m.setdefault("name", self.name)
        self.prod.send(msgpack.packb(m, use_bin_type=True))

    def hello(self):
        self.send(type="hello", role=self.role, host="fake", pid=os.getpid(), capacity=self.capacity)

    def held_max(self):
        return max([len(v) for v in self.got.values()] or [0])

    def pump(self, seconds, until=None, also=()):
        """Talk to the producer for SECONDS or until UNTIL(); the fakes in ALSO keep talking meanwhile (one left
        silent for the producer's heartbeat timeout is dropped)."""
        t0 = time.time()
        while time.time() - t0 < seconds:
            if until and until():
                return True
            for other in also:
                other.step(0)
            self.step(20)
        return bool(until and until())

    def step(self, wait_ms):
        """A heartbeat when one is due, then the next message from the producer (waiting up to WAIT_MS)."""
        import msgpack
        if self.instance and time.time() - self.last_hb > 0.1:
            self.send(type="hb", instance=self.instance)
            self.last_hb = time.time()
        if self.prod.poll(wait_ms):
            m = msgpack.unpackb(self.prod.recv(), raw=False)
            t = m.get("type")
            if t == "welcome":
                self.welcomes += 1
                self.instance = m["instance"]
                self.send(type="credit", credit=self.capacity, instance=self.instance)   # naive: every time
            elif t in ("reset", "hb") and m.get("instance") != self.instance:
                self.instance = None
                self.hello()
            elif t == "item":
                self.got.setdefault(m.get("instance"), []).append(m["id"])
                self.keys[m["id"]] = m["key"]
                self.items[m["id"]] = m
                self.arrivals.append((time.time(), m["id"], m.get("attempt", 0)))
                check(len(self.got[m.get("instance")]) <= self.capacity,
                      "fake %s holds %d items, capacity %d" % (self.name, len(self.got[m.get("instance")]),
                                                               self.capacity))
                if self.mode == "nack":
                    self.send(type="nack", id=m["id"], key=m["key"], credit=1, instance=self.instance,
                              stage=self.role, message="fake failure")
                    self.got[m.get("instance")].remove(m["id"])


def held(port):
    code, text = ft.scrape(port)
    check(code == 200, "worker metrics: HTTP %s" % code)
    m, _ = ft.parse_metrics(text)
    return ft.mval(m, "paliflow_worker_items_held", role="preprocess")


def t_hoard(a, d):
    import zmq
    make_inputs(d, n_good=40, extra=False)
    f = ft.Fleet(a, d, "tcp://127.0.0.1:%d" % free_port(), "tcp://127.0.0.1:%d" % free_port(), server_args=INSECURE,
                 hb=ft.PATIENT_HB)
    ctx = zmq.Context()
    fake = Fake(ctx, "fake-naive", f.prod_ep, capacity=3)
    for _ in range(50):   # 50 hellos queued in its socket, as a worker left waiting 50 s would have
        fake.hello()
    wport = free_port()
    # capacity 2 (--threads 1); items take 10 min: whatever it receives, it holds until the end
    f.worker("preprocess", INSECURE + ["--threads", "1", "--delay-ms", "600000", "--name", "early",
                                       "--heartbeat", "0.05", "--heartbeat-timeout", "0.5",
                                       "--metrics", "127.0.0.1:%d" % wport])
    time.sleep(3)   # ~60 hellos queued in the real worker's socket
    f.sink()
    pport = free_port()
    prod = f.producer(["--stay", "--metrics", "127.0.0.1:%d" % pport])
    peak = 0

    def sample():
        nonlocal peak
        h = held(wport)
        peak = max(peak, h)
        check(h <= 2, "the real worker holds %s items, capacity 2" % h)
        return h

    def watch(seconds):
        """Keep the fake talking and sample the real worker for SECONDS (never stops early)."""
        fake.pump(seconds, lambda: sample() < 0)

    check(fake.pump(30, lambda: fake.instance and sample() == 2 and fake.held_max() == 3),
          "the workers were not given work (fake %d, real %s)" % (fake.held_max(), sample()))
    watch(3)   # long enough for every queued hello and credit to arrive: nothing more comes
    check(fake.held_max() == 3 and sample() == 2, "after the queued hellos: fake %d, real %s" %
          (fake.held_max(), sample()))
    check(fake.welcomes >= 2, "the fake's queued hellos were not answered (%d welcomes)" % fake.welcomes)
    first = fake.instance
    # the producer restarts: both workers say hello again and again while it is down
    kill9(prod)
    t0 = time.time()
    while time.time() - t0 < 2:
        fake.hello()
        fake.pump(0.05)
    fake.instance = None
    prod = f.producer(["--stay", "--metrics", "127.0.0.1:%d" % pport])
    check(fake.pump(30, lambda: fake.instance not in (None, first) and len(fake.got.get(fake.instance, [])) == 3),
          "the fake got no work from the restarted producer")
    check(fake.pump(30, lambda: "early joined" in ft.logtext(prod)), "the real worker did not join the restarted "
          "producer")
    watch(3)
    check(len(fake.got[fake.instance]) == 3, "after the restart the fake holds %d" % len(fake.got[fake.instance]))
    check(sample() <= 2 and peak <= 2, "the real worker held %s" % peak)
    prod.send_signal(signal.SIGTERM)
    wait_exit(prod, 30, "producer")


def start_in(cwd, cmd, log, pre=()):
    """A process started in folder CWD (relative paths are resolved there), optionally through PRE."""
    f = open(log, "ab")
    env = dict(os.environ, PALIFLOW_LOG="info")
    p = subprocess.Popen(list(pre) + cmd, stdout=f, stderr=f, start_new_session=True, env=env, cwd=cwd)
    p.log = log
    PROCS.append(p)
    return p


def t_quarantine(a, d):
    import zmq
    files = make_inputs(d, n_good=30, extra=False)
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        raise Skip("unshare -rm (a mount namespace for the worker that lacks the files) is not permitted here")
    # ft.PATIENT_HB: with 1.5 s the Python fake, stalled 1.7 s on a loaded machine, was dropped before the good
    # worker started, and its strikes went with it
    f = ft.Fleet(a, d, "tcp://127.0.0.1:%d" % free_port(), "tcp://127.0.0.1:%d" % free_port(), server_args=INSECURE,
                 hb=ft.PATIENT_HB)
    f.sink()
    pport = free_port()
    cmd = [a.paliflow, "producer", "--bind", f.prod_ep, "--db", f.db, "--task", "caption en", "--image-size", "8",
           "--custom-image-size", "--path-only", "--max-attempts", "20", "--retry-backoff", "0.05",
           "--ack-timeout", "5", "--progress", "lines", "--metrics", "127.0.0.1:%d" % pport] + f.hb + \
          INSECURE + ["in"]   # relative: workers elsewhere could not read it as such
    prod = start_in(d, cmd, f.log("producer"))
    worker = [a.worker, "preprocess", "--producer", f.prod_ep, "--sink", f.sink_ep] + f.hb + INSECURE
    # 1. a worker whose host lacks the files (the images' folder hidden by a mount): quarantined, items free
    hide = "mount -t tmpfs none %s && exec \"$@\"" % os.path.join(d, "in")
    start_in("/", worker + ["--name", "blind", "--exit-when-done"], f.log("blind"),
             pre=["unshare", "-rm", "sh", "-c", hide, "sh"])
    f.worker("inference", INSECURE + ["--exit-when-done"])
    wait_for(lambda: "preprocess worker blind quarantined" in ft.logtext(prod), 60, "the blind worker's quarantine")
    time.sleep(0.5)
    check(not read_records(f.out), "records written while only the blind worker preprocessed")
    # 2. a worker that fails what succeeds elsewhere: alone with the work until it has failed 3 items (with the
    # good worker already there it could get fewer before the job ended: no strike 3, no quarantine to check)
    ctx = zmq.Context()
    fake = Fake(ctx, "failer", f.prod_ep, capacity=1, items="nack")
    fake.hello()
    failed = lambda: len({i for _, i, _ in fake.arrivals})
    check(fake.pump(60, lambda: failed() >= 3), "the failing worker got %d items, want 3" % failed())
    check(not read_records(f.out), "records written while only the failing worker preprocessed")
    # 3. a good worker in another folder ("/"): the failer's items succeed there, a strike each
    start_in("/", worker + ["--name", "good", "--threads", "2", "--exit-when-done"], f.log("good"))
    fake.pump(120, lambda: prod.poll() is not None)
    check(wait_exit(prod, 60, "producer") == 0, "producer exit status %s" % prod.returncode)
    os.chdir(d)   # the records keep the paths as found: relative to the producer's folder
    recs = verify(f.out, {os.path.relpath(p, d): k for p, k in files.items()}, f.db)
    check(all("error" not in r for r in recs), "error records: %s" % [r for r in recs if "error" in r][:2])
    log = ft.logtext(prod)
    check(log.count("worker blind quarantined") == 1, "the blind worker's quarantine not logged exactly once")
    check(log.count("worker failer quarantined: 3 items it failed succeeded on other workers") == 1,
          "the failing worker was not quarantined once after 3 strikes")
    check(log.count("worker failer gone") == 0, "the failing worker was dropped")
    check("retrying" not in "".join(l for l in log.splitlines() if "blind" in l),
          "the blind worker's failures were charged to the items")
    db = sqlite3.connect(f.db)
    charged = db.execute("SELECT COUNT(*) FROM items WHERE error LIKE '%No such file%'").fetchone()[0]
    check(charged == 0, "%d items charged an attempt for the blind worker's missing files" % charged)
    db.close()


def t_backoff(a, d):
    import zmq
    files = make_inputs(d, n_good=3, extra=False)
    f = ft.Fleet(a, d, "tcp://127.0.0.1:%d" % free_port(), "tcp://127.0.0.1:%d" % free_port(), server_args=INSECURE,
                 hb=ft.PATIENT_HB)
    f.sink()
    prod = f.producer(["--retry-backoff", "0.4"])
    ctx = zmq.Context()
    fake = Fake(ctx, "failer", f.prod_ep, capacity=3, items="nack")
    fake.hello()
    fake.pump(120, lambda: prod.poll() is not None)
    check(wait_exit(prod, 30, "producer") == 0, "producer exit status %s" % prod.returncode)
    recs = read_records(f.out)
    check(len(recs) == len(files), "%d records for %d files" % (len(recs), len(files)))
    check(all("gave up after 3 attempts" in r.get("error", {}).get("message", "") for r in recs),
          "not error records after 3 attempts: %s" % recs[:1])
    by_id = {}
    for t, i, att in fake.arrivals:
        by_id.setdefault(i, []).append((att, t))
    check(len(by_id) == len(files), "the fake saw %d items" % len(by_id))
    for i, arr in by_id.items():
        arr.sort()
        check([att for att, _ in arr] == [0, 1, 2], "item %d attempts %s" % (i, arr))
        # the backoff before attempt n is 0.4 x 2^(n-1) s times a jitter of at least 0.5: lower bounds only
        for n in (1, 2):
            gap = arr[n][1] - arr[n - 1][1]
            check(gap >= 0.5 * 0.4 * 2 ** (n - 1) - 0.01, "item %d: attempt %d came %.3f s after the last" %
                  (i, n, gap))


def t_mismatch(a, d):
    files = make_inputs(d, n_good=12, extra=False)
    r = subprocess.run([a.paliflow, "producer", "--bind", "ipc://%s/x" % d, "--db", os.path.join(d, "x.sqlite"),
                        "--task", "caption en", "--image-size", "300", os.path.join(d, "in")],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 2 and "--image-size 300: PaliGemma takes 224, 448 or 896" in r.stderr,
          "--image-size 300 not refused: %s %s" % (r.returncode, r.stderr))
    check(not os.path.exists(os.path.join(d, "x.sqlite")), "a job store was made for a refused image size")
    f = ft.Fleet(a, d, "tcp://127.0.0.1:%d" % free_port(), "tcp://127.0.0.1:%d" % free_port(), server_args=INSECURE,
                 hb=ft.PATIENT_HB)
    f.sink()
    pport = free_port()
    prod = f.producer(["--metrics", "127.0.0.1:%d" % pport])   # an 8 px job (--custom-image-size)
    f.worker("preprocess", INSECURE + ["--exit-when-done"])
    wrong = f.worker("inference", INSECURE + ["--model-size", "16", "--name", "wrong-model"])
    wait_for(lambda: "inference worker wrong-model quarantined: its model takes 16 px images, the job is for 8 px"
                in ft.logtext(prod), 30, "the wrong model's quarantine")
    time.sleep(1)
    check(not read_records(f.out), "records written with only the wrong model")
    m, _ = ft.parse_metrics(ft.scrape(pport)[1])
    check(ft.mval(m, "paliflow_producer_workers_quarantined", role="inference") == 1, "quarantine gauge")
    check(ft.mval(m, "paliflow_producer_quarantined_total", role="inference") == 1, "quarantine counter")
    f.worker("inference", INSECURE + ["--model-size", "8", "--exit-when-done", "--name", "right-model"])
    check(wait_exit(prod, 60, "producer") == 0, "producer exit status %s" % prod.returncode)
    recs = verify(f.out, files, f.db)
    check(all(r["workers"]["inference"] == "right-model" for r in recs), "an item went to the wrong model")
    check("px but the model takes" not in ft.logtext(wrong), "the wrong model received an item")


def t_replaced(a, d):
    import zmq
    make_inputs(d, n_good=4, extra=False)
    f = ft.Fleet(a, d, "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d, hb=ft.PATIENT_HB)
    f.sink()
    prod = f.producer(["--path-only", "--max-attempts", "5", "--retry-backoff", "0.05"])
    ctx = zmq.Context()
    fake = Fake(ctx, "viewer", f.prod_ep, capacity=1)
    fake.hello()
    log = lambda: ft.logtext(prod)

    def take():
        """The item the fake holds (at most one; waiting for it): its message."""
        check(fake.pump(30, lambda: fake.got.get(fake.instance)), "the fake got no item")
        return fake.items[fake.got[fake.instance][0]]

    def cannot_open(m):
        fake.send(type="nack", id=m["id"], key=m["key"], credit=1, instance=fake.instance, stage="preprocess",
                  message="%s: cannot open: No such file or directory" % m["file"], worker_fault=True)
        fake.got[fake.instance].remove(m["id"])

    # 1. the file is replaced (a new inode, as after unlink and create) between the hand-out and the worker's
    #    open: the worker may have looked while it was gone; the item is charged, the worker keeps working
    m = take()
    data = open(m["file"], "rb").read()
    os.unlink(m["file"])
    with open(m["file"], "wb") as fh:
        fh.write(data)
    cannot_open(m)
    retry = "%s: preprocess worker viewer: %s: cannot open" % (m["path"], m["file"])
    check(fake.pump(30, lambda: retry in log() and "retrying (attempt 2 of 5)" in log()),
          "the item of the replaced file was not charged an attempt:\n" + log()[-1500:])
    check("quarantined" not in log(), "the worker was quarantined for a replaced file")
    # 2. the same claim for a file the producer sees unchanged: the worker's view is wrong, it is quarantined
    #    and the item goes back free
    m = take()
    cannot_open(m)
    check(fake.pump(30, lambda: "preprocess worker viewer quarantined" in log()),
          "the worker was not quarantined for an unchanged file:\n" + log()[-1500:])
    prod.send_signal(signal.SIGTERM)
    check(wait_exit(prod, 30, "producer") in (0, 1), "producer exit status %s" % prod.returncode)
    fake.prod.close(0)
    ctx.term()


def t_charge(a, d):
    import zmq
    make_inputs(d, n_good=8, extra=False)
    # The fakes' deaths are noticed by their silence: a 5 s heartbeat timeout, not fleet_test's 1.5 s, which a
    # live Python peer has exceeded on a loaded machine (1.7 s); a fake meant to live keeps talking meanwhile
    f = ft.Fleet(a, d, "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d,
                 hb=["--heartbeat", "0.2", "--heartbeat-timeout", "5"])
    f.sink()
    prod = f.producer(["--stay"])
    ctx = zmq.Context()
    fa = Fake(ctx, "fake-a", f.prod_ep, capacity=3)
    fa.hello()
    check(fa.pump(30, lambda: fa.held_max() == 3), "fake-a got %d items, want 3" % fa.held_max())
    fb = Fake(ctx, "fake-b", f.prod_ep, capacity=3)
    fb.hello()
    check(fb.pump(30, lambda: fb.held_max() == 3, also=[fa]), "fake-b got %d items, want 3" % fb.held_max())
    a_ids = fa.got[fa.instance]
    b0 = fb.got[fb.instance][0]
    wrong = "0" * 32 + "-" + "0" * 16
    # two entries fake-a holds, one it does not (fake-b's), one of its own with a wrong key
    fa.send(type="start", instance=fa.instance, items=[[a_ids[0], fa.keys[a_ids[0]]], [a_ids[1], fa.keys[a_ids[1]]],
                                                       [b0, fb.keys[b0]], [a_ids[2], wrong]])
    log = lambda: ft.logtext(prod)
    check(fb.pump(15, lambda: "[not_holder]" in log() and "[wrong_key]" in log(), also=[fa]),
          "the producer did not refuse the foreign and the wrong-key entries:\n" + log()[-2000:])
    check("item %d " % b0 in log(), "the not_holder refusal does not name item %d" % b0)
    # fake-a dies (nothing more from it, as after kill -9): fake-b keeps talking meanwhile
    fa.prod.close(0)
    gone = "preprocess worker fake-a gone"
    check(fb.pump(30, lambda: gone in log()), "the producer did not notice fake-a's silence")
    line = next(ln for ln in log().splitlines() if gone in ln)
    check("3 items back in the queue (2 of them charged an attempt)" in line,
          "want exactly the 2 started items charged: %s" % line)
    # fake-b's item was not marked started by fake-a's entry: fake-b dies too, having started nothing, so
    # all of its 3 items are charged (the rule for a worker that reported no start), which a stray `started`
    # on item b0 would have made 1
    fb.prod.close(0)
    wait_for(lambda: "preprocess worker fake-b gone" in log(), 30, "fake-b gone")
    line = next(ln for ln in log().splitlines() if "preprocess worker fake-b gone" in ln)
    check("3 items back in the queue (3 of them charged an attempt)" in line, "fake-b: %s" % line)
    prod.send_signal(signal.SIGTERM)
    wait_exit(prod, 30, "producer")
    ctx.term()


class Skip(Exception):
    pass


def main():
    a = case_parser(["hoard", "quarantine", "backoff", "mismatch", "replaced", "charge"], "mode").parse_args()
    a.paliflow, a.worker = os.path.abspath(a.paliflow), os.path.abspath(a.worker)
    skip = missing_modules(FLEET_MODULES)
    if skip:
        print(skip)
        return 77
    tests = {"hoard": t_hoard, "quarantine": t_quarantine, "backoff": t_backoff, "mismatch": t_mismatch,
             "replaced": t_replaced, "charge": t_charge}
    return run_case("policy " + a.mode, "pf_policy_%s_" % a.mode, lambda d: tests[a.mode](a, d), a.keep,
                       tail=25, skip=Skip, cleanup_on_pass=True)

if __name__ == "__main__":
    sys.exit(main())
