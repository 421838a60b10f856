#!/usr/bin/env python3
"""Fleet tests (issue 10): CURVE on the wire, metrics, graceful drain, SIGHUP reloads, keygen, job reports.
Real producer and sink processes (build/paliflow) with workers running the test stages (test_worker).

usage: fleet_test.py TEST --paliflow PATH --worker PATH      (TEST: keygen embedded curve wire metrics drain reload)
Exit 0 pass, 1 fail, 77 skipped. Every process started here is killed on the way out."""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pipeline"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from pipeline_test import make_inputs, verify  # noqa: E402
from pftest import (FLEET_MODULES, PROCS, case_parser, check, connect_handshaken, free_port, kill9,  # noqa: E402
                    missing_modules, read_records, run_case, start, wait_exit, wait_for)

# Every Fleet's peers by default (no fleet case but policy's `charge` waits for a silent peer to be dropped, and
# it says how long): the timeout only bounds a hang. It was 1.5 s, and on a loaded machine a live process (a
# Python peer, a relay, a real worker) can go quiet for longer; dropped, it is refused as an unknown peer and
# its items are charged an attempt, which the counts these cases check (attempts, refusals, metrics) do not
# expect.
PATIENT_HB = ["--heartbeat", "0.2", "--heartbeat-timeout", "120"]


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw)


def keygen(a, path, name):
    r = run([a.paliflow, "keygen", "--out", path, "--name", name])
    check(r.returncode == 0, "keygen %s: %s" % (path, r.stderr))
    return r.stdout.strip()


class Keys:
    """hub (producer + sink), w1 (allowed worker), sub (allowed subscriber), bad (not allowed)."""

    def __init__(self, a, d):
        self.dir = os.path.join(d, "keys")
        self.allow = os.path.join(d, "allow")
        os.makedirs(self.dir)
        os.makedirs(self.allow)
        self.pub = {}
        for name in ("hub", "w1", "w2", "sub", "bad"):
            self.pub[name] = keygen(a, self.path(name), name)
        for name in ("w1", "sub"):
            with open(self.path(name), "rb") as src, open(os.path.join(self.allow, name + ".key"), "wb") as dst:
                dst.write(src.read())

    def path(self, name, secret=False):
        return os.path.join(self.dir, name + ".key" + ("_secret" if secret else ""))

    def server(self):
        return ["--curve-server-key", self.path("hub", True), "--curve-allow", self.allow]

    def client(self, name, server="hub"):
        return ["--curve-client-key", self.path(name, True), "--curve-server-public", self.path(server)]


class Fleet:
    def __init__(self, a, d, prod_ep, sink_ep, server_args=(), pub_ep=None, bind_prod=None, bind_sink=None,
                 hb=PATIENT_HB):
        self.a, self.d = a, d
        self.hb = list(hb)   # the heartbeat options of every process started here
        self.prod_ep, self.sink_ep, self.pub_ep = prod_ep, sink_ep, pub_ep
        self.bind_prod, self.bind_sink = bind_prod or prod_ep, bind_sink or sink_ep
        self.server_args = list(server_args)
        self.out = os.path.join(d, "out.jsonl")
        self.db = os.path.join(d, "job.sqlite")
        self.report = os.path.join(d, "report.json")
        self.n = 0

    def log(self, name):
        self.n += 1
        return os.path.join(self.d, "%02d_%s.log" % (self.n, name))

    def producer(self, extra=(), inputs=None):
        # --task is repeatable (one item per task, issue 19): the default only when the caller gives none
        task = [] if "--task" in extra else ["--task", "caption en"]
        cmd = [self.a.paliflow, "producer", "--bind", self.bind_prod, "--db", self.db] + task + [
               "--image-size", "8", "--custom-image-size", "--progress", "lines", "--progress-interval", "1", "--ack-timeout", "5",
               "--max-attempts", "3", "--report", self.report] + self.hb + self.server_args + list(extra) + \
              [inputs or os.path.join(self.d, "in")]
        return start(cmd, self.log("producer"))

    def sink(self, extra=(), tuned=True):
        cmd = [self.a.paliflow, "sink", "--bind", self.bind_sink, "--producer", self.prod_ep, "--out", self.out] + \
              (["--batch", "8", "--flush-ms", "20"] + self.hb if tuned else []) + self.server_args + list(extra)
        if self.pub_ep:
            cmd += ["--publish", self.pub_ep]
        return start(cmd, self.log("sink"))

    def worker(self, role, extra=(), prod=None, sink=None):
        cmd = [self.a.worker, role, "--producer", prod or self.prod_ep, "--sink", sink or self.sink_ep] + self.hb + \
              ["--drain-timeout", "10"] + list(extra)
        return start(cmd, self.log(role))


def logtext(p):
    return open(p.log, errors="replace").read()


# ---------------------------------------------------------------------------------------------------------

def t_keygen(a, d):
    """keygen writes czmq-compatible certificates with safe permissions, never overwrites by accident."""
    base = os.path.join(d, "node.key")
    pub = keygen(a, base, "node-b")
    check(len(pub) == 40, "public key printed: %r" % pub)
    st_pub, st_sec = os.stat(base), os.stat(base + "_secret")
    check(st_sec.st_mode & 0o777 == 0o600, "secret file mode %o" % (st_sec.st_mode & 0o777))
    check(st_pub.st_mode & 0o777 == 0o644, "public file mode %o" % (st_pub.st_mode & 0o777))
    text_pub, text_sec = open(base).read(), open(base + "_secret").read()
    check("secret-key" not in text_pub and pub in text_pub and 'name = "node-b"' in text_pub, "public cert:\n" + text_pub)
    check("secret-key" in text_sec and pub in text_sec, "secret cert:\n" + text_sec)
    r = run([a.paliflow, "keygen", "--out", base])
    check(r.returncode == 2 and "exists" in r.stderr, "overwrite refused: %s" % r.stderr)
    check(open(base + "_secret").read() == text_sec, "secret file changed by a refused keygen")
    r = run([a.paliflow, "keygen", "--show", base + "_secret"])
    check(r.returncode == 0 and r.stdout.strip() == pub, "--show: %s %s" % (r.stdout, r.stderr))
    try:
        import zmq.auth
        p2, s2 = zmq.auth.load_certificate(base + "_secret")
        check(p2.decode() == pub and s2 and zmq.curve_public(s2).decode() == pub, "pyzmq reads our certificate")
    except ImportError:
        pass
    umask = os.umask(0)   # a permissive umask must not leak into the secret file's mode
    try:
        r = run([a.paliflow, "keygen", "--out", base, "--force"])
    finally:
        os.umask(umask)
    check(r.returncode == 0 and r.stdout.strip() != pub, "--force makes a new pair")
    check(os.stat(base + "_secret").st_mode & 0o777 == 0o600, "secret mode under umask 0")


def t_curve(a, d):
    """CURVE everywhere: allowed keys work, an unknown key is refused (and logged on both sides), plain
    clients get nothing; tcp without keys is refused at startup unless --insecure."""
    import msgpack
    import zmq
    import zmq.auth
    files = make_inputs(d, n_good=20)
    k = Keys(a, d)
    pp, sp, pub = free_port(), free_port(), free_port()
    f = Fleet(a, d, "tcp://127.0.0.1:%d" % pp, "tcp://127.0.0.1:%d" % sp, server_args=k.server(),
              pub_ep="tcp://127.0.0.1:%d" % pub)
    sink = f.sink()
    ctx = zmq.Context()
    subs = {}
    for name in ("sub", "bad", "plain"):
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.setsockopt(zmq.MAXMSGSIZE, 64 << 20)
        if name != "plain":
            s.curve_publickey, s.curve_secretkey = zmq.auth.load_certificate(k.path(name, True))
            s.curve_serverkey, _ = zmq.auth.load_certificate(k.path("hub"))
        if name == "sub":   # subscribed before the first record (the others are refused: no handshake)
            connect_handshaken(s, f.pub_ep, 60, "the allowed subscriber's CURVE handshake")
        else:
            s.connect(f.pub_ep)
        subs[name] = s
    prod = f.producer()
    bad = f.worker("preprocess", ["--name", "intruder"] + k.client("bad"))
    # refused by the producer and the sink before the real workers start: the job cannot be over (its logs
    # final) before a process that started late on a loaded machine has tried
    bad_key = k.pub["bad"]
    refusal = "refused a connection from 127.0.0.1: CURVE client key %s is not in the allow-list" % bad_key
    for p in (prod, sink):
        wait_for(lambda: refusal in logtext(p), 60, "the refusal of the unknown key in %s" % p.log)
    wait_for(lambda: "refused our CURVE key" in logtext(bad), 60, "the refused worker to say why")
    f.worker("preprocess", ["--threads", "2", "--exit-when-done", "--name", "pre-w1"] + k.client("w1"))
    f.worker("inference", ["--exit-when-done", "--name", "inf-w1"] + k.client("w1"))
    got = {name: [] for name in subs}
    t0 = time.time()
    while time.time() - t0 < 60 and (prod.poll() is None or len(got["sub"]) < len(files)):
        for name, s in subs.items():
            while s.poll(10):
                got[name].append(msgpack.unpackb(s.recv(), raw=False))
        if len(got["sub"]) >= len(files) and prod.poll() is not None:
            break
    check(wait_exit(prod, 30, "producer") == 0, "producer exit status %s" % prod.returncode)
    recs = verify(f.out, files, f.db)
    check(all(r["workers"].get("preprocess") == "pre-w1" for r in recs if "error" not in r), "records from pre-w1")
    time.sleep(0.3)
    for name, s in subs.items():
        while s.poll(10):
            got[name].append(msgpack.unpackb(s.recv(), raw=False))
        s.close(0)
    ctx.term()
    check(len(got["sub"]) == len(recs), "allowed subscriber got %d of %d records" % (len(got["sub"]), len(recs)))
    check(not got["bad"] and not got["plain"], "refused subscribers got records: bad %d plain %d" %
          (len(got["bad"]), len(got["plain"])))
    check(bad.poll() is None, "the refused worker should keep retrying (it exited %s)" % bad.returncode)
    kill9(bad)
    for p in (prod, sink):
        check("intruder" not in logtext(p), "the refused worker reached %s" % p.log)
    # a client with an allowed key but the wrong server key never gets in
    wrong = f.worker("preprocess", ["--name", "wrongserver"] + k.client("w1", server="bad"))
    time.sleep(1.0)
    kill9(wrong)
    check("wrongserver" not in logtext(prod), "a client with the wrong server key joined")
    # startup rules: network endpoints need keys or --insecure; keys must be complete and real
    tcp = "tcp://127.0.0.1:%d" % free_port()
    cases = [
        ([a.paliflow, "producer", "--bind", tcp, "--db", f.db, os.path.join(d, "in")], "--insecure"),
        ([a.paliflow, "sink", "--bind", tcp, "--producer", tcp, "--out", f.out], "--insecure"),
        ([a.worker, "preprocess", "--producer", tcp, "--sink", tcp], "--insecure"),
        ([a.paliflow, "producer", "--bind", tcp, "--db", f.db, "--curve-server-key", k.path("hub", True)],
         "needs --curve-allow"),
        ([a.paliflow, "producer", "--bind", tcp, "--db", f.db, "--curve-server-key", k.path("hub"),
          "--curve-allow", k.allow], "no secret-key"),
        ([a.worker, "preprocess", "--producer", tcp, "--sink", tcp, "--curve-client-key", k.path("w1", True)],
         "needs --curve-server-public"),
        ([a.worker, "preprocess", "--producer", tcp, "--sink", tcp, "--curve-client-key", k.path("w1", True),
          "--curve-server-public", "not-a-key"], "not-a-key"),
    ]
    for cmd, want in cases:
        r = run(cmd)
        check(r.returncode == 2 and want in r.stderr, "%s: exit %d, wanted a message with %r: %s" %
              (" ".join(cmd[1:3]), r.returncode, want, r.stderr.strip()[-300:]))


class Recorder:
    """A TCP relay on 127.0.0.1 that records every byte passing through it, both ways."""

    def __init__(self, target_port):
        self.target = target_port
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while not self.stop.is_set():
            try:
                c, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                c.close()
                continue
            for src, dst in ((c, u), (u, c)):
                threading.Thread(target=self.pump, args=(src, dst), daemon=True).start()

    def pump(self, src, dst):
        src.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            with self.lock:
                self.buf += data
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.stop.set()
        self.ls.close()

    def data(self):
        with self.lock:
            return bytes(self.buf)


MARKER = b"PALIFLOW-PLAINTEXT-MARKER-7f3a"


def wire_run(a, d, secure):
    os.makedirs(os.path.join(d, "in"))
    files = {}
    for i in range(12):
        p = os.path.join(d, "in", "marker%02d.jpg" % i)
        with open(p, "wb") as fh:
            fh.write(MARKER * (20 + i))
        files[p] = "good"
    k = Keys(a, d)
    pp, sp = free_port(), free_port()
    rp, rs = Recorder(pp), Recorder(sp)
    sec = k.server() if secure else ["--insecure"]
    # every byte goes through the Python relays: one stalled on a loaded machine must not get a peer dropped (its
    # items charged, 3 drops an error record), this test is about what is on the wire
    f = Fleet(a, d, "tcp://127.0.0.1:%d" % rp.port, "tcp://127.0.0.1:%d" % rs.port, server_args=sec,
              bind_prod="tcp://127.0.0.1:%d" % pp, bind_sink="tcp://127.0.0.1:%d" % sp, hb=PATIENT_HB)
    f.sink()   # the sink reaches the producer through the recorder too (acks carry keys and paths)
    prod = f.producer(["--task", "caption en " + MARKER.decode()])
    client = k.client("w1") if secure else ["--insecure"]
    f.worker("preprocess", ["--exit-when-done"] + client)
    f.worker("inference", ["--exit-when-done"] + client)
    check(wait_exit(prod, 60, "producer") == 0, "producer exit status %s" % prod.returncode)
    verify(f.out, files, f.db)
    time.sleep(0.3)
    rp.close()
    rs.close()
    return rp.data() + rs.data(), sum(os.path.getsize(p) for p in files)


def t_wire(a, d):
    """No plaintext on the wire: every byte between workers, producer and sink is recorded by a relay; the
    file contents, the prompt and the paths (all holding a marker) never appear. The same job with --insecure
    shows the marker, so the recording would catch a leak."""
    data, payload = wire_run(a, os.path.join(d, "secure"), True)
    check(len(data) > payload, "the relay saw %d bytes, less than the %d bytes of files" % (len(data), payload))
    check(b"CURVE" in data, "no CURVE greeting on the wire")
    check(MARKER not in data and MARKER.hex().encode() not in data and b"marker0" not in data,
          "plaintext payload on the wire with CURVE on")
    for p in list(PROCS):   # the first run's sink is still up
        if p.poll() is None:
            kill9(p)
    data, _ = wire_run(a, os.path.join(d, "plain"), False)
    check(MARKER in data and b"marker0" in data, "control run: the relay did not see the plaintext marker")


def scrape(port, path="/metrics"):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def parse_metrics(text):
    """{(name, frozenset(labels)): value} via prometheus_client's parser (which also validates the format)."""
    from prometheus_client.parser import text_string_to_metric_families
    out, types = {}, {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out, types


def mval(m, name, **labels):
    key = (name, frozenset((k, str(v)) for k, v in labels.items()))
    check(key in m, "metric %s%s missing" % (name, labels))
    return m[key]


def check_histograms(m):
    """Buckets are cumulative and end at _count."""
    series = {}
    for (name, labels), v in m.items():
        if name.endswith("_bucket"):
            le = dict(labels)["le"]
            rest = frozenset((k, x) for k, x in labels if k != "le")
            series.setdefault((name[:-7], rest), []).append((float(le), v))
    check(series, "no histogram")
    for (base, labels), b in series.items():
        b.sort()
        check(all(b[i][1] <= b[i + 1][1] for i in range(len(b) - 1)), "%s buckets not cumulative" % base)
        check(b[-1][0] == float("inf") and b[-1][1] == m[(base + "_count", labels)], "%s: +Inf != _count" % base)


def t_metrics(a, d):
    """Every role serves Prometheus text; the counters agree with the output file and the job report."""
    files = make_inputs(d, n_good=30)
    ports = {r: free_port() for r in ("producer", "sink", "pre", "inf")}
    f = Fleet(a, d, "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d)
    f.sink(["--metrics", "127.0.0.1:%d" % ports["sink"]])
    # --stay: the producer keeps serving after the job completes, so its final counters can be read
    prod = f.producer(["--metrics", "127.0.0.1:%d" % ports["producer"], "--stay"])
    f.worker("preprocess", ["--threads", "2", "--delay-ms", "20", "--metrics", "127.0.0.1:%d" % ports["pre"]])
    inf = f.worker("inference", ["--max-batch", "4", "--delay-ms", "30", "--metrics", "127.0.0.1:%d" % ports["inf"]])
    # mid-run: the producer's view adds up, and every family is there
    wait_for(lambda: len(read_records(f.out)) >= 5, 30, "first records")
    code, text = scrape(ports["producer"])
    check(code == 200, "producer /metrics status %d" % code)
    m, types = parse_metrics(text)
    states = ["queued", "leased", "ready", "awaiting_ack", "done", "failed"]
    total = sum(mval(m, "paliflow_producer_items", state=s) for s in states)
    check(total == mval(m, "paliflow_producer_job_items"), "producer item states add up to %s, job has %s" %
          (total, mval(m, "paliflow_producer_job_items")))
    samples = {n for (n, _) in m}
    for name in ("paliflow_producer_queue_depth", "paliflow_producer_leased_total", "paliflow_producer_retried_total",
                 "paliflow_producer_leases_expired_total", "paliflow_producer_handed_back_total",
                 "paliflow_producer_finished_total", "paliflow_producer_workers",
                 "paliflow_producer_heartbeat_age_seconds", "paliflow_producer_images_per_second",
                 "paliflow_producer_lease_seconds_count", "process_resident_memory_bytes",
                 "process_cpu_seconds_total"):
        check(name in samples, "producer metrics lack %s" % name)
    check(mval(m, "paliflow_producer_workers", role="inference") == 1, "inference workers gauge")
    check(mval(m, "process_resident_memory_bytes") > 1e6, "resident memory")
    check(types["paliflow_producer_lease_seconds"] == "histogram", "lease_seconds type")
    for port in (ports["pre"], ports["inf"]):
        check(scrape(port, "/healthz")[0] == 200 and scrape(port, "/readyz")[0] == 200, "worker health endpoints")
    check(scrape(ports["producer"], "/nope")[0] == 404, "unknown path")
    # a worker whose producer is not there: live but not ready
    lonely_port = free_port()
    lonely = f.worker("inference", ["--metrics", "127.0.0.1:%d" % lonely_port], prod="ipc://%s/none.sock" % d)
    wait_for(lambda: scrape(lonely_port, "/healthz")[0] == 200 if os.path.exists(lonely.log) and
             "serving" in logtext(lonely) else False, 60, "lonely worker's metrics")
    code, why = scrape(lonely_port, "/readyz")
    check(code == 503 and "not ready" in why, "a worker without a producer is not ready: %d %s" % (code, why))
    wait_for(lambda: "staying up (--stay)" in logtext(prod), 60, "the job to complete")
    check(prod.poll() is None, "producer --stay exited")
    recs = verify(f.out, files, f.db)
    results = [r for r in recs if "error" not in r]
    errors = [r for r in recs if "error" in r]
    time.sleep(0.5)
    pm, _ = parse_metrics(scrape(ports["producer"])[1])
    check(mval(pm, "paliflow_producer_job_complete") == 1, "job_complete gauge")
    check(mval(pm, "paliflow_producer_items", state="done") == len(results) and
          mval(pm, "paliflow_producer_items", state="failed") == len(errors), "producer done/failed vs the file")
    check(mval(pm, "paliflow_producer_finished_total", outcome="done") == len(results) and
          mval(pm, "paliflow_producer_finished_total", outcome="failed") == len(errors), "producer finished_total")
    check(mval(pm, "paliflow_producer_leased_total", stage="inference") >= len(results), "inference leases")
    check(mval(pm, "paliflow_producer_error_records_total", stage="producer") == 1, "the dangling link's record")
    check_histograms(pm)
    sm, _ = parse_metrics(scrape(ports["sink"])[1])
    check(mval(sm, "paliflow_sink_records_in_file") == len(recs), "sink records_in_file %s, file %d" %
          (mval(sm, "paliflow_sink_records_in_file"), len(recs)))
    check(mval(sm, "paliflow_sink_records_total", kind="result") == len(results) and
          mval(sm, "paliflow_sink_records_total", kind="error") == len(errors), "sink records_total by kind")
    check(mval(sm, "paliflow_sink_tokens_total") == sum(len(r["ids"]) for r in results), "sink tokens_total")
    check(mval(sm, "paliflow_stage_seconds_count", stage="inference") == len(results), "stage histogram count")
    check_histograms(sm)
    im, _ = parse_metrics(scrape(ports["inf"])[1])
    check(mval(im, "paliflow_worker_items_total", role="inference", outcome="ok") == len(results),
          "inference worker ok count")
    check(mval(im, "paliflow_worker_tokens_total", role="inference") == sum(len(r["ids"]) for r in results),
          "worker tokens")
    check(mval(im, "paliflow_worker_batch_size_count", role="inference") > 0, "batch size histogram")
    check_histograms(im)
    pm, _ = parse_metrics(scrape(ports["pre"])[1])
    pre_failed = [r for r in errors if r["error"]["stage"] == "preprocess"]
    check(mval(pm, "paliflow_worker_items_total", role="preprocess", outcome="failed") == len(pre_failed),
          "preprocess failed count")
    check(mval(pm, "paliflow_worker_items_total", role="preprocess", outcome="retry") == 1, "the flaky file's retry")
    # the job report agrees with the file
    rep = json.load(open(f.report))
    check(rep["status"] == "complete" and rep["items"]["total"] == len(files), "report status/total: %s" % rep)
    check(rep["items"]["done"] == len(results) and rep["items"]["failed"] == len(errors), "report counts")
    check(rep["errors"]["count"] == len(errors), "report error count")
    reasons = {x["reason"]: x["count"] for x in rep["errors"]["by_reason"]}
    check(sum(reasons.values()) == len(errors), "reasons add up: %s" % reasons)
    check(any(r.startswith("preprocess: test stage") for r in reasons), "preprocess reasons: %s" % reasons)
    check(any(r.startswith("producer: cannot open") for r in reasons), "producer reasons: %s" % reasons)
    check(rep["errors"]["by_stage"].get("preprocess") == len(pre_failed), "by_stage: %s" % rep["errors"])
    check(rep["retries"]["requeued"] >= 1, "the flaky item was requeued: %s" % rep["retries"])
    check(rep["throughput"]["items_per_second"] > 0, "throughput")
    for p in PROCS:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
    for p in PROCS:
        check(wait_exit(p, 20, p.log) == 0, "%s did not exit 0 on SIGTERM" % p.log)
    del inf


def held(port):
    try:
        m, _ = parse_metrics(scrape(port)[1])
    except Exception:
        return 0
    return sum(v for (n, l), v in m.items() if n == "paliflow_worker_items_held")


def stepping(port):
    """Whether a batch is in progress on the worker with metrics on PORT: a decode step began (the batch-size
    histogram is observed as a step starts). Items held are not enough: they may all wait for the compute thread."""
    try:
        m, _ = parse_metrics(scrape(port)[1])
    except Exception:
        return False
    return sum(v for (n, l), v in m.items() if n == "paliflow_worker_batch_size_count") >= 1


def t_drain(a, d):
    """SIGTERM: a worker finishes what it started (or hands it back after --drain-timeout) and exits 0; the
    producer commits and closes its job store (exit 1: interrupted) and resumes; the sink flushes. Nothing
    is lost, nothing doubled, no attempt charged."""
    files = make_inputs(d, n_good=40, extra=False)
    f = Fleet(a, d, "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d)
    sink = f.sink()
    prod = f.producer()
    f.worker("preprocess", ["--threads", "2"])
    port = free_port()
    # credit 6, batch 4: while a batch decodes, two more items wait in the worker
    inf = f.worker("inference", ["--max-batch", "4", "--credit", "6", "--delay-ms", "150", "--steps", "4",
                                 "--metrics", "127.0.0.1:%d" % port])
    wait_for(lambda: held(port) >= 5 and stepping(port), 30, "the inference worker to hold a full batch, decoding")
    os.kill(inf.pid, signal.SIGTERM)
    check(wait_exit(inf, 15, "inference worker (drain)") == 0, "drained worker exit status %s" % inf.returncode)
    text = logtext(inf)
    check("stopping: handed back" in text, "no drain message: %s" % text[-500:])
    # drain timeout: items still decoding when it runs out are handed back, exit 0 all the same
    port2 = free_port()
    inf2 = f.worker("inference", ["--max-batch", "4", "--delay-ms", "400", "--steps", "10", "--drain-timeout", "0.3",
                                  "--metrics", "127.0.0.1:%d" % port2])
    wait_for(lambda: held(port2) >= 4, 30, "the second inference worker to hold a batch")
    os.kill(inf2.pid, signal.SIGTERM)
    check(wait_exit(inf2, 10, "inference worker (drain timeout)") == 0, "exit status %s" % inf2.returncode)
    check("drain timeout: handing back" in logtext(inf2), "no drain-timeout message")
    # the producer: SIGTERM mid-job commits and closes the store cleanly
    os.kill(prod.pid, signal.SIGTERM)
    check(wait_exit(prod, 15, "producer (SIGTERM)") == 1, "interrupted producer exit status %s" % prod.returncode)
    check(not os.path.exists(f.db + "-wal") or os.path.getsize(f.db + "-wal") == 0, "WAL not checkpointed")
    con = sqlite3.connect(f.db)
    check(con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", "job store integrity")
    con.close()
    rep = json.load(open(f.report))
    check(rep["status"] == "interrupted" and rep["retries"]["handed_back"] >= 2, "report after SIGTERM: %s" %
          rep["retries"])
    # the sink: SIGTERM flushes its batch and exits 0, no torn line
    os.kill(sink.pid, signal.SIGTERM)
    check(wait_exit(sink, 15, "sink (SIGTERM)") == 0, "sink exit status %s" % sink.returncode)
    read_records(f.out)   # raises on a torn line
    f.sink()
    prod = f.producer()
    f.worker("inference", ["--max-batch", "4", "--exit-when-done"])
    check(wait_exit(prod, 60, "producer (resumed)") == 0, "resumed producer exit status %s" % prod.returncode)
    recs = verify(f.out, files, f.db)
    check(all(r["attempt"] == 1 for r in recs), "an attempt was charged for a handed-back item: %s" %
          [r["path"] for r in recs if r["attempt"] != 1][:3])
    by_worker = {}
    for r in recs:
        by_worker.setdefault(r["workers"]["inference"], 0)
        by_worker[r["workers"]["inference"]] += 1
    check(len(by_worker) >= 2, "the drained worker's finished batch is in the output: %s" % by_worker)


def t_reload(a, d):
    """SIGHUP: the producer and sink re-read their config files: a worker key added to the allow-list gets
    in without a restart; reloadable settings change (logged); a broken config changes nothing."""
    files = make_inputs(d, n_good=10, extra=False)
    k = Keys(a, d)
    allow = os.path.join(d, "allow.txt")
    with open(allow, "w") as fh:
        fh.write("# allowed workers, one Z85 key per line (a name may follow)\n%s w1\n" % k.pub["w1"])
    pp, sp = free_port(), free_port()
    pconf, sconf = os.path.join(d, "producer.conf"), os.path.join(d, "sink.conf")

    def write_conf(path, extra):
        with open(path, "w") as fh:
            fh.write("curve-server-key = %s\ncurve-allow = %s\n%s" % (k.path("hub", True), allow, extra))

    write_conf(pconf, "preprocess-lease = 120\n")   # (options on the command line win over the file)
    write_conf(sconf, "batch = 8\nflush-ms = 20\n")
    sconf_text = open(sconf).read()
    f = Fleet(a, d, "tcp://127.0.0.1:%d" % pp, "tcp://127.0.0.1:%d" % sp)
    sink = f.sink(["--config", sconf], tuned=False)
    prod = f.producer(["--config", pconf])
    w2 = f.worker("preprocess", ["--name", "late-w2", "--exit-when-done"] + k.client("w2"))
    f.worker("inference", ["--exit-when-done", "--name", "inf-w1"] + k.client("w1"))
    wait_for(lambda: "refused our CURVE key" in logtext(w2), 60, "w2 to be refused")
    check(prod.poll() is None, "producer ended early")
    # a broken config: nothing changes
    open(pconf, "a").write("preprocess-lease = soon\n")
    os.kill(prod.pid, signal.SIGHUP)
    wait_for(lambda: "does not parse (nothing changed)" in logtext(prod), 60, "the broken reload to be refused")
    # allow w2, change a reloadable setting, reload both
    with open(allow, "a") as fh:
        fh.write("%s w2\n" % k.pub["w2"])
    write_conf(pconf, "preprocess-lease = 100\nlog-level = debug\n")
    open(sconf, "w").write(sconf_text + "flush-ms = 30\n")
    os.kill(prod.pid, signal.SIGHUP)
    os.kill(sink.pid, signal.SIGHUP)
    check(wait_exit(prod, 60, "producer") == 0, "producer exit status %s" % prod.returncode)
    verify(f.out, files, f.db)
    text = logtext(prod)
    check("reload: preprocess-lease 120 -> 100" in text, "preprocess-lease reload not logged")
    check("DEBUG" in text, "log-level reload")
    reloaded = text.find("2 client keys (was 1)")
    check(0 <= reloaded < text.find("late-w2 joined"), "w2 joined only after the allow-list reload")
    check("reload: flush-ms 20 -> 30" in logtext(sink) and "2 client keys (was 1)" in logtext(sink), "sink reload")
    check(wait_exit(w2, 20, "w2") == 0, "w2 exit status")


def t_embedded(a, d):
    """The embedded runner (what `paliflow run` uses) writes the job report too, and a rerun of the finished
    job reports it complete with nothing done in that run."""
    files = make_inputs(d, n_good=12)
    out, report, db = os.path.join(d, "out.jsonl"), os.path.join(d, "report.json"), os.path.join(d, "job.sqlite")
    cmd = [a.worker, "embedded", "--task", "caption en", "--out", out, "--image-size", "8", "--db", db,
           "--report", report, os.path.join(d, "in")]
    p = start(cmd, os.path.join(d, "embedded.log"))
    check(wait_exit(p, 60, "embedded run") == 0, "embedded exit status %s" % p.returncode)
    recs = verify(out, files, db)
    rep = json.load(open(report))
    errors = [r for r in recs if "error" in r]
    check(rep["status"] == "complete" and rep["items"]["done"] == len(recs) - len(errors) and
          rep["items"]["failed"] == len(errors) and rep["items"]["done_this_run"] == len(recs) - len(errors),
          "embedded report: %s" % rep["items"])
    p = start(cmd, os.path.join(d, "embedded2.log"))
    check(wait_exit(p, 60, "embedded rerun") == 0, "rerun exit status %s" % p.returncode)
    rep = json.load(open(report))
    check(rep["items"]["done_this_run"] == 0 and rep["items"]["done"] == len(recs) - len(errors),
          "rerun report: %s" % rep["items"])


TESTS = {"keygen": t_keygen, "embedded": t_embedded, "curve": t_curve, "wire": t_wire, "metrics": t_metrics, "drain": t_drain,
         "reload": t_reload}


def main():
    a = case_parser(TESTS).parse_args()
    skip = missing_modules(FLEET_MODULES)
    if skip:
        print(skip)
        return 77
    return run_case(a.test, "pf_fleet_%s_" % a.test, lambda d: TESTS[a.test](a, d), a.keep)

if __name__ == "__main__":
    sys.exit(main())
