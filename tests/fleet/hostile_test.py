#!/usr/bin/env python3
"""Hostile peers (issue 21, "who may say what"): a rogue that is allowed to connect (plain tcp with --insecure,
or an allowed CURVE key) joins as an inference worker, takes items, and then forges what only others may say:
acknowledgements (only the sink may), a done/tensor for an item it no longer holds (only the lease holder
may), a result for a real item leased to someone else, records for paths not in the job (/etc/passwd). A peer
that never said hello sends an acknowledgement too. Every forgery must be refused, counted in
paliflow_refused_messages_total and logged with the sender's address (and CURVE key), while the job
completes with exactly one correct record per file and the producer exits 0.

usage: hostile_test.py MODE --paliflow PATH --worker PATH     (MODE: insecure curve clean; clean: no rogue,
2000 items at full speed, nothing refused). Exit 0 pass, 1 fail, 77 skipped."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pipeline"))
import fleet_test as ft  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from pipeline_test import make_inputs, verify  # noqa: E402
from pftest import (FLEET_MODULES, PROCS, case_parser, check, free_port, missing_modules, run_case,  # noqa: E402
                    wait_exit, wait_for)


class Rogue:
    """A peer speaking the protocol by hand (pyzmq + msgpack), as an allowed but malicious inference worker."""

    def __init__(self, ctx, name, prod_ep, sink_ep, curve=None):
        import zmq
        self.zmq, self.name = zmq, name
        self.prod = self._socket(ctx, prod_ep, curve)
        self.sink = self._socket(ctx, sink_ep, curve)   # named like its producer connection, as workers do
        self.instance = None
        self.items = []
        self.last_hb = 0

    def _socket(self, ctx, ep, curve):
        s = ctx.socket(self.zmq.DEALER)
        s.setsockopt(self.zmq.ROUTING_ID, self.name.encode())
        s.setsockopt(self.zmq.LINGER, 1000)
        if curve:
            s.curve_publickey, s.curve_secretkey, s.curve_serverkey = curve
        s.connect(ep)
        return s

    def send(self, sock, **m):
        import msgpack
        m["v"] = 1
        sock.send(msgpack.packb(m, use_bin_type=True))

    def pump(self, seconds, until=None):
        """Heartbeat (so the producer keeps us) and take what the producer sends, for SECONDS or until UNTIL()."""
        import msgpack
        t0 = time.time()
        while time.time() - t0 < seconds:
            if until and until():
                return True
            if time.time() - self.last_hb > 0.2:
                self.send(self.prod, type="hb", name=self.name, instance=self.instance)
                self.last_hb = time.time()
            if self.prod.poll(20):
                m = msgpack.unpackb(self.prod.recv(), raw=False)
                if m.get("type") == "welcome":
                    self.instance = m["instance"]
                elif m.get("type") == "item":
                    self.items.append({k: m[k] for k in ("id", "key", "path")})
        return bool(until and until())


def records_text(out):
    return open(out, "rb").read().decode(errors="replace") if os.path.exists(out) else ""


def t_hostile(a, d, curve):
    import zmq
    import zmq.auth
    files = make_inputs(d, n_good=24)
    pp, sp = free_port(), free_port()
    mports = {"producer": free_port(), "sink": free_port()}
    server_args, client = ["--insecure"], lambda name: ["--insecure"]
    rogue_curve, rogue_key = None, None
    if curve:
        k = ft.Keys(a, d)   # hub: producer + sink; w1 (real workers) and w2 (the rogue) are both allowed
        with open(k.path("w2"), "rb") as src, open(os.path.join(k.allow, "w2.key"), "wb") as dst:
            dst.write(src.read())
        server_args, client = k.server(), k.client
        pub, sec = zmq.auth.load_certificate(k.path("w2", True))
        srv, _ = zmq.auth.load_certificate(k.path("hub"))
        rogue_curve, rogue_key = (pub, sec, srv), k.pub["w2"]
    who = "(address 127.0.0.1, key %s)" % (rogue_key or "none")   # how the logs name the rogue
    # No peer is meant to be lost here (the rogue says bye): a rogue dropped for a stall on a loaded machine would
    # have its forgeries refused as an unknown peer's, not for what they forge
    f = ft.Fleet(a, d, "tcp://127.0.0.1:%d" % pp, "tcp://127.0.0.1:%d" % sp, server_args=server_args,
                 hb=ft.PATIENT_HB)
    sink = f.sink(["--metrics", "127.0.0.1:%d" % mports["sink"]])
    prod = f.producer(["--stay", "--metrics", "127.0.0.1:%d" % mports["producer"]])
    f.worker("preprocess", ["--threads", "2", "--exit-when-done", "--name", "pre-real"] + client("w1"))

    ctx = zmq.Context()
    rogue = Rogue(ctx, "rogue-inf", f.prod_ep, f.sink_ep, rogue_curve)
    rogue.send(rogue.prod, type="hello", role="inference", name=rogue.name, host="evil", pid=1, capacity=3)
    check(rogue.pump(20, lambda: rogue.instance), "the rogue was not welcomed")
    rogue.send(rogue.prod, type="credit", credit=3, instance=rogue.instance)
    # all 3 credits used: nothing handed back to it can come back to it (it returns no credit)
    check(rogue.pump(30, lambda: len(rogue.items) >= 3), "the rogue got %d items" % len(rogue.items))
    A, B = rogue.items[0], rogue.items[1]

    # 1. a peer that never said hello acknowledges A; the rogue (a worker) acknowledges A and B
    nobody = Rogue(ctx, "nobody", f.prod_ep, f.sink_ep, rogue_curve)
    rogue.pump(0.01)   # the rogue keeps its heartbeat going throughout
    nobody.send(nobody.prod, type="ack", acks=[[A["id"], A["key"], True]])
    rogue.send(rogue.prod, type="ack", acks=[[A["id"], A["key"], True], [B["id"], B["key"], True]])
    rogue.pump(0.3)
    if curve:   # 1b. with CURVE the sink's role is bound to its key: an allowed worker key cannot claim it
        fake = Rogue(ctx, "fake-sink", f.prod_ep, f.sink_ep, rogue_curve)
        rogue.pump(0.01)
        fake.send(fake.prod, type="hello", role="sink", name="fake-sink", host="evil", pid=1, leases=True)
        welcomed, t0 = False, time.time()
        while not welcomed and time.time() - t0 < 1.0:
            welcomed = fake.pump(0.1, lambda: fake.instance)
            rogue.pump(0.01)
        check(not welcomed, "a worker key was welcomed as the sink")
        fake.send(fake.prod, type="ack", acks=[[A["id"], A["key"], True]])
        fake.pump(0.3)
        fake.prod.close(0)
        fake.sink.close(0)
    # 2. B is handed back (legitimately); then the rogue, no longer its holder, says B is done and sends a tensor
    rogue.send(rogue.prod, type="nack", id=B["id"], key=B["key"], credit=0, instance=rogue.instance,
               stage="inference", message="handing back", handback=True)
    rogue.pump(0.3)
    rogue.send(rogue.prod, type="done", id=B["id"], key=B["key"], credit=0, instance=rogue.instance)
    rogue.send(rogue.prod, type="tensor", id=B["id"], key=B["key"], credit=0, instance=rogue.instance,
               image_size=8, width=8, height=8, data=bytes(8 * 8 * 3))
    # 3. records: a fake result for B (a real item, not leased to the rogue any more), a result for a path that
    #    is not in the job, an error record for A (leased to the rogue) with a foreign path
    task = {"prompt": "caption en", "max_new_tokens": 64}
    rogue.send(rogue.sink, type="result", id=B["id"], key=B["key"], path=B["path"], task=task, text="FORGED",
               ids=[1, 2, 3], stopped_by_eos=True, width=8, height=8, workers={"inference": rogue.name})
    rogue.send(rogue.sink, type="result", id=999999, key="0" * 32 + "-" + "0" * 16, path="/etc/passwd", task=task,
               text="FORGED", ids=[1], stopped_by_eos=True, workers={"inference": rogue.name})
    rogue.send(rogue.sink, type="error", id=A["id"], key=A["key"], path="/etc/passwd", task=task,
               stage="inference", message="FORGED", workers={"inference": rogue.name})
    rogue.pump(0.5)
    # 4. everything it holds goes back, and it leaves; the real inference worker does the job
    for it in rogue.items:
        rogue.send(rogue.prod, type="nack", id=it["id"], key=it["key"], credit=0, instance=rogue.instance,
                   stage="inference", message="leaving", handback=True)
    rogue.send(rogue.prod, type="bye", name=rogue.name)
    rogue.pump(0.3)
    f.worker("inference", ["--exit-when-done", "--name", "inf-real"] + client("w1"))

    wait_for(lambda: "staying up (--stay)" in ft.logtext(prod), 90, "the job to complete")
    def refused(m, component, type_, reason):
        return m.get(("paliflow_refused_messages_total", frozenset({"component": component, "type": type_,
                                                                     "reason": reason}.items())), 0)

    def sink_refused_results():
        sm, _ = ft.parse_metrics(ft.scrape(mports["sink"])[1])
        return refused(sm, "sink", "result", "no_lease") + refused(sm, "sink", "result", "not_holder")

    # records a note could still make right (no lease, another holder) wait 5 s for one before they are refused
    wait_for(lambda: sink_refused_results() >= 2, 30, "the sink to refuse both fake results")
    pm, _ = ft.parse_metrics(ft.scrape(mports["producer"])[1])
    sm, _ = ft.parse_metrics(ft.scrape(mports["sink"])[1])

    check(refused(pm, "producer", "ack", "unknown_peer") >= 1, "ack from a peer that never said hello not counted")
    check(refused(pm, "producer", "ack", "not_sink") >= 1, "forged ack from a worker not counted")
    if curve:
        check(refused(pm, "producer", "hello", "not_sink_key") >= 1, "hello as the sink with a worker key not counted")
        check("refused hello from routing id fake-sink %s: hello as the sink with a key that is not the sink's" % who
              in ft.logtext(prod), "producer log lacks the refused fake sink")
    check(refused(pm, "producer", "done", "not_holder") + refused(pm, "producer", "done", "unknown_item") >= 1,
          "done from a non-holder not counted")
    check(refused(pm, "producer", "tensor", "not_holder") + refused(pm, "producer", "tensor", "unknown_item") >= 1,
          "tensor from a non-holder not counted")
    check(refused(sm, "sink", "result", "no_lease") + refused(sm, "sink", "result", "not_holder") >= 2,
          "fake results not counted: %s" % {k: v for k, v in sm.items() if "refused" in k[0]})
    check(refused(sm, "sink", "error", "wrong_path") >= 1, "error record with a foreign path not counted")
    sink_refused = sum(v for (n, _), v in sm.items() if n == "paliflow_refused_messages_total")
    check(sink_refused == 3, "the sink refused %d records, the rogue sent 3 (a real worker's record refused?)" %
          sink_refused)

    os.kill(prod.pid, signal.SIGTERM)
    check(wait_exit(prod, 30, "producer") == 0, "producer exit status %s" % prod.returncode)
    os.kill(sink.pid, signal.SIGTERM)
    check(wait_exit(sink, 30, "sink") == 0, "sink exit status %s" % sink.returncode)
    for s in (rogue.prod, rogue.sink, nobody.prod, nobody.sink):
        s.close(0)
    ctx.term()

    verify(f.out, files, f.db)   # one correct record per file, nothing else; the job store agrees
    text = records_text(f.out)
    check("FORGED" not in text and "/etc/passwd" not in text, "a forged record reached the output")

    plog, slog = ft.logtext(prod), ft.logtext(sink)
    for line in ("refused ack from routing id nobody %s: from a peer that did not say hello [unknown_peer]" % who,
                 "refused ack from inference rogue-inf, routing id rogue-inf %s" % who):
        check(line in plog, "producer log lacks %r" % line)
    check("refused done from inference rogue-inf" in plog and "refused tensor from inference rogue-inf" in plog,
          "producer log lacks the refused done/tensor")
    check("refused result from routing id rogue-inf %s" % who in slog and "[no_lease]" in slog,
          "sink log lacks the refused results")
    check("refused error from routing id rogue-inf %s: item %d is %s, the record says /etc/passwd [wrong_path]" %
          (who, A["id"], A["path"]) in slog, "sink log lacks the refused foreign path")


def t_clean(a, d):
    """No hostile peer, many small items as fast as the test stages go: nothing may be refused. A record that
    overtakes the producer's note of its lease (common under load) must wait for it, not be refused."""
    n = 2000
    os.makedirs(os.path.join(d, "in"))
    files = {}
    for i in range(n):
        p = os.path.join(d, "in", "f%05d.jpg" % i)
        with open(p, "wb") as fh:
            fh.write(os.urandom(48))
        files[p] = "good"
    # a real worker dropped for a stall on a loaded machine would have its next messages refused (unknown peer)
    f = ft.Fleet(a, d, "tcp://127.0.0.1:%d" % free_port(), "tcp://127.0.0.1:%d" % free_port(),
                 server_args=["--insecure"], hb=ft.PATIENT_HB)
    sink = f.sink()
    prod = f.producer(["--ack-timeout", "60"])
    f.worker("preprocess", ["--threads", "2", "--credit", "64", "--exit-when-done", "--insecure"])
    f.worker("inference", ["--max-batch", "16", "--credit", "64", "--exit-when-done", "--insecure"])
    check(wait_exit(prod, 180, "producer") == 0, "producer exit status %s" % prod.returncode)
    os.kill(sink.pid, signal.SIGTERM)
    check(wait_exit(sink, 30, "sink") == 0, "sink exit status %s" % sink.returncode)
    verify(f.out, files, f.db)
    for p in PROCS:
        text = ft.logtext(p)
        check(": refused " not in text, "a refusal without a hostile peer in %s: %s" %
              (p.log, [line for line in text.splitlines() if ": refused " in line][:3]))
    check("%d records written, 0 duplicates dropped, 0 messages refused" % n in ft.logtext(sink), "sink summary")


def main():
    a = case_parser(["insecure", "curve", "clean"], "mode").parse_args()
    skip = missing_modules(FLEET_MODULES)
    if skip:
        print(skip)
        return 77
    def body(d):
        if a.mode == "clean":
            t_clean(a, d)
        else:
            t_hostile(a, d, a.mode == "curve")
    return run_case("hostile " + a.mode, "pf_hostile_%s_" % a.mode, body, a.keep, tail=20)

if __name__ == "__main__":
    sys.exit(main())
