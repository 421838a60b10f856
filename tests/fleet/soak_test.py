#!/usr/bin/env python3
"""Multi-node soak test (opt-in: cmake -DPALIFLOW_SOAK_TESTS=ON, ctest -L soak; needs root for ip netns).

Three network namespaces joined by veth links stand for three machines: the hub (producer + sink) and two
worker nodes, each running preprocess and inference workers (the test stages), CURVE on every connection.
While the job runs, workers are killed (-9) and restarted at random times, and one worker node's link is
taken down for longer than the heartbeat timeout, then brought back. At the end: every item has exactly one
record (none lost, none doubled), the producer's and sink's metrics agree with the file, and the producer's
and sink's resident memory did not keep growing. The figures go to stdout (and --figures FILE as JSON).

usage: soak_test.py --paliflow PATH --worker PATH [--items N] [--seed S] [--figures FILE]
(PALIFLOW_SOAK_ITEMS / PALIFLOW_SOAK_SEED in the environment set the defaults.)"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pipeline"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import pipeline_test as pt  # noqa: E402  (the pipeline harness: Job, inputs, record checks)
from pftest import (CLEANUP_DIRS, PROCS, Fail, check, cleanup, kill9, netns_add,  # noqa: E402
                    no_sanitizer_report, read_records, start, wait_exit)

HB = ["--heartbeat", "0.5", "--heartbeat-timeout", "3"]


def sh(*cmd):
    r = subprocess.run(list(cmd), capture_output=True, text=True)
    if r.returncode != 0:
        raise Fail("%s: %s" % (" ".join(cmd), r.stderr.strip()))
    return r.stdout


def rss_kb(pid):
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def scrape_in(ns, port):
    """Prometheus text from a metrics endpoint inside namespace NS (parsed with prometheus_client)."""
    code = ("import urllib.request,sys;sys.stdout.write(urllib.request.urlopen("
            "'http://127.0.0.1:%d/metrics',timeout=5).read().decode())" % port)
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=20)
    if r.returncode != 0:
        raise Fail("scrape %s:%d: %s" % (ns, port, r.stderr.strip()[-300:]))
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(r.stdout):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(m, name, **labels):
    key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
    check(key in m, "metric %s%s missing" % (name, labels))
    return m[key]


def make_items(root, n, rng):
    files = {}
    for i in range(n):
        d = os.path.join(root, "in", "d%03d" % (i // 200))
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, "img%05d.jpg" % i)
        if i % 97 == 13:
            data, kind = b"BAD image %d" % i, "bad"
        elif i % 89 == 7:
            data, kind = b"FLAKY %d" % i + bytes(rng.randrange(256) for _ in range(40)), "good"
        else:
            data, kind = bytes(rng.randrange(256) for _ in range(64 + i % 200)), "good"
        with open(p, "wb") as f:
            f.write(data)
        files[p] = kind
    return files


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--paliflow", required=True)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--items", type=int, default=int(os.environ.get("PALIFLOW_SOAK_ITEMS", "12000")))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("PALIFLOW_SOAK_SEED", "0")) or None)
    ap.add_argument("--figures", help="also write the figures here (JSON)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("ip"):
        print("SKIP: the soak test needs root and iproute2 (ip netns)")
        return 77
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        print("SKIP: python3-prometheus-client not installed")
        return 77
    seed = a.seed or int(time.time())
    rng = random.Random(seed)
    d = tempfile.mkdtemp(prefix="pf_soak_")
    t_start = time.time()
    try:
        figures = run(a, d, rng, seed)
    except Fail as e:
        print("FAIL soak: %s (seed %d, folder %s kept)" % (e, seed, d))
        for p in PROCS[-12:]:
            if os.path.exists(p.log):
                print("---- %s (last lines)" % p.log)
                print("".join(open(p.log, errors="replace").readlines()[-10:]))
        cleanup()
        return 1
    figures["wall_seconds"] = round(time.time() - t_start, 1)
    print("soak figures: " + json.dumps(figures, indent=2))
    if a.figures:
        with open(a.figures, "w") as f:
            json.dump(figures, f, indent=2)
    if not a.keep:
        CLEANUP_DIRS.append(d)
    print("PASS soak (%d items, %d kills, %.0f s)" % (figures["items"], figures["kills"], figures["job_seconds"]))
    return 0


def run(a, d, rng, seed):
    tag = "%d" % (os.getpid() % 100000)
    hub, na, nb = "pfsh" + tag, "pfsa" + tag, "pfsb" + tag
    netns_add((hub, na, nb))
    # test-only addresses inside namespaces this test creates
    links = {na: ("10.231.21.1", "10.231.21.2", "sa" + tag), nb: ("10.231.22.1", "10.231.22.2", "sb" + tag)}
    sh("ip", "-n", hub, "link", "set", "lo", "up")
    for ns, (hub_ip, ip, veth) in links.items():
        sh("ip", "link", "add", veth + "h", "netns", hub, "type", "veth", "peer", "name", veth + "w", "netns", ns)
        sh("ip", "-n", hub, "addr", "add", hub_ip + "/24", "dev", veth + "h")
        sh("ip", "-n", ns, "addr", "add", ip + "/24", "dev", veth + "w")
        sh("ip", "-n", hub, "link", "set", veth + "h", "up")
        sh("ip", "-n", ns, "link", "set", veth + "w", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    files = make_items(d, a.items, rng)
    n_bad = sum(1 for k in files.values() if k == "bad")
    # keys: the hub's pair, one pair per worker node
    keys = os.path.join(d, "keys")
    allow = os.path.join(d, "allow")
    os.makedirs(keys)
    os.makedirs(allow)
    for name in ("hub", "node-a", "node-b"):
        sh(a.paliflow, "keygen", "--out", os.path.join(keys, name + ".key"), "--name", name)
    for name in ("node-a", "node-b"):
        shutil.copy(os.path.join(keys, name + ".key"), os.path.join(allow, name + ".key"))
    server = ["--curve-server-key", os.path.join(keys, "hub.key_secret"), "--curve-allow", allow]
    out, db, report = os.path.join(d, "out.jsonl"), os.path.join(d, "job.sqlite"), os.path.join(d, "report.json")
    logn = [0]

    def log(name):
        logn[0] += 1
        return os.path.join(d, "%03d_%s.log" % (logn[0], name))

    def in_ns(ns, cmd, name):
        return start(cmd, log(name), netns=ns)

    sink = in_ns(hub, [a.paliflow, "sink", "--bind", "tcp://0.0.0.0:7102", "--producer", "tcp://127.0.0.1:7101",
                       "--out", out, "--batch", "32", "--flush-ms", "20", "--metrics", "127.0.0.1:9101"] + HB + server,
                 "sink")
    prod = in_ns(hub, [a.paliflow, "producer", "--bind", "tcp://0.0.0.0:7101", "--db", db, "--task", "caption en",
                       "--image-size", "8", "--custom-image-size", "--progress", "lines", "--progress-interval", "5",
                       "--max-attempts", "5",
                       "--ack-timeout", "10", "--preprocess-lease", "30", "--inference-lease", "60",
                       "--report", report, "--stay", "--metrics", "127.0.0.1:9100",
                       os.path.join(d, "in")] + HB + server, "producer")
    # workers: node a runs 2 preprocess + 1 inference, node b 1 preprocess + 2 inference
    plan = [(na, "preprocess"), (na, "preprocess"), (na, "inference"), (nb, "preprocess"), (nb, "inference"),
            (nb, "inference")]
    gen = [0]
    slots = []

    def start_worker(ns, role):
        hub_ip = links[ns][0]
        node = "node-a" if ns == na else "node-b"
        gen[0] += 1
        name = "%s-%s-%d" % (node, role[:3], gen[0])
        extra = ["--delay-ms", "40", "--threads", "1"] if role == "preprocess" else \
            ["--delay-ms", "30", "--steps", "4", "--max-batch", "4"]
        cmd = [a.worker, role, "--producer", "tcp://%s:7101" % hub_ip, "--sink", "tcp://%s:7102" % hub_ip,
               "--name", name, "--drain-timeout", "5",
               "--curve-client-key", os.path.join(keys, node + ".key_secret"),
               "--curve-server-public", os.path.join(keys, "hub.key")] + HB + extra
        return in_ns(ns, cmd, name)

    for ns, role in plan:
        slots.append({"ns": ns, "role": role, "proc": start_worker(ns, role), "down_until": 0})
    t0 = time.time()
    kills, link_drops, restarts = 0, 0, 0
    rss = {"producer": [], "sink": []}
    next_kill = t0 + rng.uniform(3, 8)
    drop_done, link_up_at, dropped_ns = False, 0, None
    last_sample = last_count = 0
    done = 0
    job_seconds = None
    while True:
        now = time.time()
        check(now - t0 < 1500, "the job did not finish in 25 minutes")
        check(prod.poll() is None, "the producer exited (%s)" % prod.returncode)
        check(sink.poll() is None, "the sink exited (%s)" % sink.returncode)
        if now - last_sample >= 2:
            last_sample = now
            for name, p in (("producer", prod), ("sink", sink)):
                v = rss_kb(p.pid)
                if v:
                    rss[name].append((round(now - t0, 1), v))
        text = open(prod.log, errors="replace").read()
        if "staying up (--stay)" in text:
            job_seconds = now - t0
            break
        if now - last_count >= 1:
            last_count = now
            try:
                done = len(read_records(out))
            except (Fail, ValueError):   # a batch being written right now
                pass
        # one worker node loses its link for longer than the heartbeat timeout, once, at ~30 %
        if not drop_done and done >= 0.3 * len(files):
            dropped_ns = rng.choice([na, nb])
            sh("ip", "-n", hub, "link", "set", links[dropped_ns][2] + "h", "down")
            link_up_at = now + 12
            drop_done = True
            link_drops += 1
            print("t=%.0fs: link of %s down for 12 s (%d records)" % (now - t0, dropped_ns, done), flush=True)
        if link_up_at and now >= link_up_at:
            sh("ip", "-n", hub, "link", "set", links[dropped_ns][2] + "h", "up")
            link_up_at = 0
            print("t=%.0fs: link of %s up" % (now - t0, dropped_ns), flush=True)
        # kill -9 a random worker now and then; restart it after a pause (like systemd's Restart=always)
        if now >= next_kill and done < 0.95 * len(files):
            s = rng.choice([s for s in slots if s["down_until"] == 0])
            kill9(s["proc"])
            s["down_until"] = now + rng.uniform(0.5, 4)
            kills += 1
            next_kill = now + rng.uniform(3, 8)
        for s in slots:
            if s["down_until"] and now >= s["down_until"]:
                s["proc"] = start_worker(s["ns"], s["role"])
                s["down_until"] = 0
                restarts += 1
        time.sleep(0.2)
    # the job is complete: read the producer's and sink's final counters, then stop everything gracefully
    time.sleep(1.0)
    pm = scrape_in(hub, 9100)
    smx = scrape_in(hub, 9101)
    recs = read_records(out)
    paths = [r["path"] for r in recs]
    dup_records = len(paths) - len(set(paths))
    lost = sorted(set(files) - set(paths))
    extra = sorted(set(paths) - set(files))
    check(dup_records == 0, "%d duplicate records in the output" % dup_records)
    check(not lost, "%d items without a record, e.g. %s" % (len(lost), lost[:3]))
    check(not extra, "records for unknown paths %s" % extra[:3])
    pt.verify(out, files, db)
    results = [r for r in recs if "error" not in r]
    errors = [r for r in recs if "error" in r]
    check(len(errors) == n_bad, "%d error records for %d bad files" % (len(errors), n_bad))
    check(metric(pm, "paliflow_producer_items", state="done") == len(results), "producer done gauge vs file")
    check(metric(pm, "paliflow_producer_items", state="failed") == len(errors), "producer failed gauge vs file")
    check(metric(pm, "paliflow_producer_finished_total", outcome="done") == len(results), "producer finished_total")
    check(metric(smx, "paliflow_sink_records_in_file") == len(recs), "sink records_in_file vs file")
    check(metric(smx, "paliflow_sink_records_total", kind="result") == len(results), "sink result records")
    check(metric(smx, "paliflow_sink_records_total", kind="error") == len(errors), "sink error records")
    rep = json.load(open(report))
    check(rep["items"]["done"] == len(results) and rep["items"]["failed"] == len(errors), "report vs file")
    # memory: the producer's and sink's resident sets level off (last quarter vs first quarter, after warm-up)
    growth = {}
    for name, samples in rss.items():
        check(len(samples) >= 8, "too few RSS samples of the %s" % name)
        vals = [v for _, v in samples]
        q = max(1, len(vals) // 4)
        first, last = max(vals[q:2 * q]), max(vals[-q:])
        growth[name] = {"early_max_kb": first, "late_max_kb": last, "max_kb": max(vals)}
        check(last <= first * 1.5 + 16384, "%s RSS grew from %d kB to %d kB" % (name, first, last))
    for s in slots:
        if s["proc"].poll() is None:
            os.kill(s["proc"].pid, signal.SIGTERM)
    os.kill(prod.pid, signal.SIGTERM)
    os.kill(sink.pid, signal.SIGTERM)
    for p in [prod, sink] + [s["proc"] for s in slots]:
        check(wait_exit(p, 20, p.log) == 0, "%s exited %s on SIGTERM" % (p.log, p.returncode))
    for p in PROCS:
        no_sanitizer_report(open(p.log, errors="replace").read(), p.log)
    refusals = sum(open(p.log, errors="replace").read().count("refused a connection") for p in (prod, sink))
    return {
        "seed": seed, "items": len(files), "bad_items": n_bad, "records": len(recs), "results": len(results),
        "error_records": len(errors), "duplicates_in_output": dup_records, "lost": len(lost),
        "kills": kills, "restarts": restarts, "link_drops": link_drops, "job_seconds": round(job_seconds, 1),
        "items_per_second": round(len(files) / job_seconds, 1),
        "redeliveries_deduplicated_by_sink": metric(smx, "paliflow_sink_duplicates_total"),
        "requeued": rep["retries"]["requeued"], "leases_expired": rep["retries"]["leases_expired"],
        "handed_back": rep["retries"]["handed_back"], "workers_lost": {k: v["lost"] for k, v in rep["workers"].items()},
        "curve_refusals_logged": refusals, "rss": growth,
    }


if __name__ == "__main__":
    sys.exit(main())
