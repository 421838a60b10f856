#!/usr/bin/env python3
"""examples/consume_records.py against a live sink, as its docstring tells a user to run it (issue 16).

usage: consume_records_test.py plain|curve|refused --paliflow BIN --tokenizer FILE --source DIR

A real pipeline on this machine: producer, sink (--publish), one preprocess and one inference worker,
all `paliflow` processes, the model a tiny random checkpoint made here by `make-random-checkpoint --tiny`,
the inputs the sample images in examples/images plus a broken file (an error record), a .JPG (the
include globs match in any case) and a file no include glob takes.
  plain  producer and sink on ipc://, the PUB socket on tcp://127.0.0.1 with --insecure
  curve  every endpoint on tcp://127.0.0.1 with CURVE (paliflow keygen): the consumer runs with
         --client-key/--server-public and its public key in the sink's --curve-allow
  refused a CURVE sink and a consumer whose key is not on its --curve-allow: the consumer must say so on
         stderr (once, naming its public key) instead of waiting silently, and keep running.
Two consumers run with the Python this test runs under (Debian's python3 with python3-zmq and
python3-msgpack): one prints lines, one --jsonl. Both must exit 0 by themselves after --count N records,
print every record the sink wrote to its JSON-lines file (same paths, keys and texts, the broken file as
"PATH: ERROR (stage) message"), and write nothing to stderr. The producer's log must carry the scan's
summary line. Exit 0 pass, 1 fail, 77 skipped (no tokenizer.json, or python3-zmq/msgpack missing)."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
# the shared process helpers: started processes killed at exit, Fail/check, free_port below the ephemeral range
from pftest import Fail, check, free_port, run_case, start, tiny_checkpoint, wait_for  # noqa: E402


def connections_to(port):
    """How many TCP connections on this machine to 127.0.0.1:PORT are ESTABLISHED (/proc/net/tcp)."""
    n = 0
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[2].upper() == "0100007F:%04X" % port and cols[3] == "01":
                    n += 1
    except OSError:
        pass
    return n


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    check(r.returncode == 0, "%s: exit %d: %s" % (" ".join(cmd[:3]), r.returncode, r.stderr.strip()[-500:]))
    return r


def describe(rec):
    """What the consumer prints for a record (its docstring's format), from the sink's JSON line."""
    if "error" in rec:
        return "%s: ERROR (%s) %s" % (rec["path"], rec["error"]["stage"], rec["error"]["message"])
    boxes = "".join(" [%s %.0f,%.0f-%.0f,%.0f]" % (b["label"], b["x0"], b["y0"], b["x1"], b["y1"])
                    for b in rec.get("boxes", []))
    return "%s: %s%s" % (rec["path"], rec["text"], boxes)


def test(a, mode, d):
    import msgpack
    import zmq
    print("python %s, pyzmq %s (libzmq %s), msgpack %s" % (sys.version.split()[0], zmq.__version__,
                                                           zmq.zmq_version(), ".".join(map(str, msgpack.version))))
    # the inputs: the shipped sample images, one renamed .JPG, a broken .jpg, a text file no glob takes
    src = os.path.join(a.source, "examples", "images")
    inp = os.path.join(d, "in")
    os.makedirs(inp)
    images = sorted(f for f in os.listdir(src) if f.endswith((".jpg", ".png")))
    check(len(images) >= 3, "examples/images holds %d images" % len(images))
    for f in images[1:]:
        shutil.copy(os.path.join(src, f), inp)
    shutil.copy(os.path.join(src, images[0]), os.path.join(inp, "UPPER_CASE.JPG"))
    with open(os.path.join(inp, "broken.jpg"), "wb") as f:
        f.write(b"not an image at all")
    with open(os.path.join(inp, "notes.txt"), "w") as f:
        f.write("not taken: no include glob matches it\n")
    n_items = len(images) + 1
    model = os.path.join(d, "model")
    tiny_checkpoint(a.paliflow, model, seed=0)

    out = os.path.join(d, "out.jsonl")
    hb = ["--heartbeat", "0.2", "--heartbeat-timeout", "5"]
    pub_port = free_port()
    pub = "tcp://127.0.0.1:%d" % pub_port
    consumer_keys = []
    if mode == "plain":
        prod, sink = "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d
        server, client = ["--insecure"], []
    else:
        prod, sink = "tcp://127.0.0.1:%d" % free_port(), "tcp://127.0.0.1:%d" % free_port()
        keys, allow = os.path.join(d, "keys"), os.path.join(d, "allow")
        os.makedirs(keys)
        os.makedirs(allow)
        for name in ("hub", "worker", "consumer"):
            run([a.paliflow, "keygen", "--out", os.path.join(keys, name + ".key"), "--name", name])
        for name in ("worker", "consumer"):
            shutil.copy(os.path.join(keys, name + ".key"), allow)
        server = ["--curve-server-key", os.path.join(keys, "hub.key_secret"), "--curve-allow", allow]
        client = ["--curve-client-key", os.path.join(keys, "worker.key_secret"),
                  "--curve-server-public", os.path.join(keys, "hub.key")]
        consumer_keys = ["--client-key", os.path.join(keys, "consumer.key_secret"),
                         "--server-public", os.path.join(keys, "hub.key")]
    start([a.paliflow, "sink", "--bind", sink, "--producer", prod, "--publish", pub, "--out", out,
           "--batch", "4", "--flush-ms", "20"] + hb + server, os.path.join(d, "sink.log"))
    # the consumers, as the docstring says: started before the job (PUB/SUB drops what is published before
    # a subscription arrives)
    consumer = os.path.join(a.source, "examples", "consume_records.py")
    cons = []
    for fmt in ([], ["--jsonl"]):
        name = "consumer" + "".join(fmt).replace("--", "_")
        c = start([sys.executable, consumer, pub, "--count", str(n_items)] + fmt + consumer_keys,
                  os.path.join(d, name + ".err"), stdout=open(os.path.join(d, name + ".out"), "wb"))
        c.out = os.path.join(d, name + ".out")
        cons.append(c)
    def consumers_connected():
        for c in cons:
            check(c.poll() is None, "%s exited early (%s): %s" % (c.out, c.returncode, open(c.log).read()[-1500:]))
        return connections_to(pub_port) >= len(cons)

    # both TCP connections up; the subscription follows the (CURVE) handshake right after, and the first
    # record cannot come before the inference worker has loaded the model
    wait_for(consumers_connected, 30, "the consumers to connect")
    time.sleep(1.0)
    consumers_connected()
    p = start([a.paliflow, "producer", "--bind", prod, "--db", os.path.join(d, "job.sqlite"), "--task",
               "caption en", "--max-new-tokens", "6", "--image-size", "224", "--progress", "lines",
               "--include", "*.jpg", "--include", "*.png"] + hb + server + [inp], os.path.join(d, "producer.log"))
    start([a.paliflow, "preprocess-worker", "--producer", prod, "--sink", sink, "--threads", "1",
           "--exit-when-done"] + hb + client, os.path.join(d, "preprocess.log"))
    start([a.paliflow, "inference-worker", "--producer", prod, "--sink", sink, "--model", model, "--tokenizer",
           a.tokenizer, "--max-batch", "4", "--exit-when-done"] + hb + client, os.path.join(d, "inference.log"))
    try:
        rc = p.wait(timeout=240)
    except subprocess.TimeoutExpired:
        raise Fail("the producer did not finish in 240 s")
    check(rc == 0, "producer exit status %d" % rc)
    for c in cons:
        try:
            c.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise Fail("%s did not exit after the job (got %d of %d records): %s" % (
                c.out, len(open(c.out).read().splitlines()), n_items, open(c.log).read()[-1000:]))
        err = open(c.log, errors="replace").read()
        check(c.returncode == 0 and not err.strip(), "%s: exit %d, stderr %r" % (c.out, c.returncode, err[-1000:]))
    recs = [json.loads(l) for l in open(out) if l.strip()]
    check(len(recs) == n_items, "the sink wrote %d records, want %d" % (len(recs), n_items))
    check(sorted(os.path.basename(r["path"]) for r in recs) == sorted(images[1:] + ["UPPER_CASE.JPG", "broken.jpg"]),
          "records for %s" % sorted(r["path"] for r in recs))
    bad = [r for r in recs if "error" in r]
    check(len(bad) == 1 and bad[0]["path"].endswith("broken.jpg"), "error records: %s" % bad)
    # the line consumer: one record per line, as the sink wrote them (same order: written, then published)
    got = open(cons[0].out, encoding="utf-8").read()
    want = "".join(describe(r) + "\n" for r in recs)
    check(got == want, "the consumer printed\n%s\nthe sink wrote\n%s" % (got, want))
    check("broken.jpg: ERROR (preprocess) " in got, "no error line for broken.jpg: %r" % got)
    # the --jsonl consumer: the same records, field for field (the publication carries "v" and "type" too)
    pubs = [json.loads(l) for l in open(cons[1].out, encoding="utf-8")]
    check(len(pubs) == n_items and all(r.get("v") == 1 and r.get("type") == "record" for r in pubs),
          "--jsonl consumer: %d records, envelope %s" % (len(pubs), [(r.get("v"), r.get("type")) for r in pubs]))
    for rp, rf in zip(pubs, recs):
        for k in ("path", "key", "text", "ids", "error"):
            check(rp.get(k) == rf.get(k), "--jsonl consumer: field %s differs: %r vs the file's %r" % (
                k, rp.get(k), rf.get(k)))
    log = open(os.path.join(d, "producer.log"), errors="replace").read()
    check("INFO scan: %d files taken; skipped: 1 matching no include glob (*.jpg *.png)" % n_items in log,
          "the producer's log has no scan summary line for %d files taken and notes.txt skipped" % n_items)
    print("consumer output:\n" + got)


def test_refused(a, d):
    keys, allow = os.path.join(d, "keys"), os.path.join(d, "allow")
    os.makedirs(keys)
    os.makedirs(allow)
    for name in ("hub", "allowed", "stranger"):
        run([a.paliflow, "keygen", "--out", os.path.join(keys, name + ".key"), "--name", name])
    shutil.copy(os.path.join(keys, "allowed.key"), allow)
    stranger = run([a.paliflow, "keygen", "--show", os.path.join(keys, "stranger.key")]).stdout.strip()
    pub = "tcp://127.0.0.1:%d" % free_port()
    start([a.paliflow, "sink", "--bind", "tcp://127.0.0.1:%d" % free_port(), "--producer",
           "tcp://127.0.0.1:%d" % free_port(), "--publish", pub, "--out", os.path.join(d, "out.jsonl"),
           "--curve-server-key", os.path.join(keys, "hub.key_secret"), "--curve-allow", allow],
          os.path.join(d, "sink.log"))
    consumer = os.path.join(a.source, "examples", "consume_records.py")
    c = start([sys.executable, consumer, pub, "--client-key", os.path.join(keys, "stranger.key_secret"),
               "--server-public", os.path.join(keys, "hub.key")], os.path.join(d, "consumer.err"),
              stdout=open(os.path.join(d, "consumer.out"), "wb"))

    def said():
        check(c.poll() is None, "the consumer exited (%s): %s" % (c.returncode, open(c.log).read()[-1500:]))
        return "refused our CURVE key" in open(c.log, errors="replace").read()
    wait_for(said, 60, "the consumer to say its key was refused")
    err = open(c.log, errors="replace").read()
    check(err.count("refused our CURVE key") == 1 and stranger in err and "--curve-allow" in err,
          "the consumer's refusal line: %r" % err)
    wait_for(lambda: "is not in the allow-list" in open(os.path.join(d, "sink.log"), errors="replace").read(), 30,
             "the sink to log the refusal")
    time.sleep(1.0)   # it keeps retrying, and says it once
    check(c.poll() is None and open(c.log, errors="replace").read().count("refused") == 1,
          "after a retry: %r" % open(c.log, errors="replace").read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("plain", "curve", "refused"))
    ap.add_argument("--paliflow", required=True)
    ap.add_argument("--tokenizer", required=True, help="PaliGemma's tokenizer.json")
    ap.add_argument("--source", required=True, help="the repository (examples/ is read from it)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    a = ap.parse_args()
    try:
        import msgpack  # noqa: F401
        import zmq  # noqa: F401
    except ImportError as e:
        print("SKIP: %s (Debian packages python3-zmq, python3-msgpack; in .ci/packages)" % e)
        return 77
    if not os.path.isfile(a.tokenizer):
        print("SKIP: no tokenizer.json at %s (the inference worker needs PaliGemma's)" % a.tokenizer)
        return 77
    # run_case: a sanitizer report in any log of the folder fails the test; on failure every log's tail
    body = (lambda d: test_refused(a, d)) if a.mode == "refused" else (lambda d: test(a, a.mode, d))
    return run_case("consume_records %s" % a.mode, "pf_consume_%s_" % a.mode, body,
                    a.keep, tail=12, logs_in_folder=True)

if __name__ == "__main__":
    sys.exit(main())
