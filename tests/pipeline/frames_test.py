#!/usr/bin/env python3
"""Data frames against peers of both kinds (PROTOCOL.md, "Data frames"): a real producer and sink, workers
that speak the protocol by hand (pyzmq + msgpack) as an older build (no `data_frames` in their hello) and as a
newer one, and test_worker inference workers with and without --single-frames.

Checked: an older peer gets every item in one frame with `data` in the map, and its one-frame tensors are
taken; a newer peer gets every item as [map][data] (the map says `data_frame`, holds no `data`), hears
`data_frames` in its welcome, and its two-frame tensors are taken; every record is right (its text is made from
the tensor bytes that went through the producer).

usage: frames_test.py mixed --paliflow PATH --worker PATH [--keep]. Exit 0 pass, 1 fail, 77 skipped."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from pftest import (PROCS, FLEET_MODULES, Fail, case_parser, check, missing_modules, run_case,  # noqa: E402
                    wait_exit)
from pipeline_test import PATIENT_HB, Job, make_inputs, verify  # noqa: E402

SIZE = 8   # the job's image size (pipeline_test.Job: --image-size 8 --custom-image-size)


class Peer:
    """A worker speaking the protocol by hand. FRAMES: it says `data_frames` (a newer build) or not (an older
    one). A preprocess peer answers every item with a tensor made as test_worker's stage makes it (the file's
    bytes repeated), after HOLD seconds (so that items spread over the peers); an inference peer checks its items
    and hands them back (then leaves, after LEAVE_AFTER of them), so that test_worker makes their records."""

    def __init__(self, ctx, name, role, prod_ep, frames, hold=0.05, leave_after=None):
        import zmq
        self.zmq, self.name, self.role, self.frames = zmq, name, role, frames
        self.hold, self.leave_after = hold, leave_after
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, name.encode())
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.connect(prod_ep)
        self.instance = None
        self.welcome_frames = None
        self.seen, self.errors, self.pending = 0, [], []
        self.last_hb = self.last_hello = 0.0
        self.hello_seq = 0
        self.gone = False

    def send(self, m, data=None):
        import msgpack
        m["v"] = 1
        m["name"] = self.name
        parts = [msgpack.packb(m, use_bin_type=True)]
        if data is not None:
            parts.append(data)
        self.sock.send_multipart(parts)

    def hello(self):
        self.hello_seq += 1
        m = {"type": "hello", "role": self.role, "host": "test", "pid": os.getpid(), "capacity": 1,
             "hello_seq": self.hello_seq}
        if self.role == "inference":
            m["image_size"] = SIZE
        if self.frames:
            m["data_frames"] = True
        self.send(m)
        self.last_hello = time.time()

    def item_bytes(self, parts, m):
        """The item's bytes, after checking that they came in the form this peer asked for."""
        if self.frames:
            if len(parts) != 2 or m.get("data_frame") is not True or "data" in m:
                self.errors.append("want [map][data] with data_frame, got %d frame(s), keys %s" %
                                   (len(parts), sorted(m)))
                return None
            return parts[1]
        if len(parts) != 1 or "data" not in m or "data_frame" in m:
            self.errors.append("want one frame with data, got %d frame(s), keys %s" % (len(parts), sorted(m)))
            return None
        return m["data"]

    def on_item(self, parts, m):
        data = self.item_bytes(parts, m)
        self.seen += 1
        if self.role == "inference":
            if data is not None and len(data) != SIZE * SIZE * 3:
                self.errors.append("tensor of %d bytes" % len(data))
            leaving = self.leave_after and self.seen >= self.leave_after
            self.send({"type": "nack", "id": m["id"], "key": m["key"], "stage": "inference", "handback": True,
                       "message": "test peer hands it back", "credit": 0 if leaving else 1,
                       "instance": self.instance})
            if leaving:
                self.send({"type": "bye"})
                self.gone = True
            return
        if data is None:
            return
        self.pending.append((time.time() + self.hold, m, bytes(data)))

    def tensor(self, m, b):
        n = SIZE * SIZE * 3
        rgb = (b * (n // len(b) + 1))[:n]
        t = {"type": "tensor", "id": m["id"], "key": m["key"], "image_size": SIZE, "width": len(b),
             "height": 1 + len(b) % 7, "credit": 1, "instance": self.instance, "timings": {"preprocess_s": 0.001},
             "workers": {"preprocess": self.name}}
        if self.frames and self.welcome_frames:   # only to a producer that said it takes them
            t["data_frame"] = True
            self.send(t, rgb)
        else:
            t["data"] = rgb
            self.send(t)

    def pump(self):
        import msgpack
        if self.gone:
            return
        now = time.time()
        if self.instance is None and now - self.last_hello > 0.2:
            self.hello()
        if self.instance and now - self.last_hb > 0.2:
            self.send({"type": "hb", "instance": self.instance})
            self.last_hb = now
        while self.pending and self.pending[0][0] <= now:
            _, m, b = self.pending.pop(0)
            self.tensor(m, b)
        while self.sock.poll(0):
            parts = self.sock.recv_multipart()
            m = msgpack.unpackb(parts[0], raw=False)
            t = m.get("type")
            if t == "welcome" and self.instance is None:
                self.instance = m["instance"]
                self.welcome_frames = m.get("data_frames")
                self.send({"type": "credit", "credit": 1, "instance": self.instance})
            elif t == "item":
                self.on_item(parts, m)


def t_mixed(a, d):
    """Older and newer preprocess peers (by hand), an older inference peer (by hand, hands its items back),
    test_worker inference workers with and without --single-frames: every record right, every item in the form
    its receiver asked for."""
    skip = missing_modules(FLEET_MODULES)
    if skip:
        print(skip)
        raise SystemExit(77)
    import zmq
    files = make_inputs(d, n_good=16, extra=False)
    # no peer is meant to be lost: the Python peers (one process) silent over a stall of 1.5 s would both be
    # dropped, and they are the only preprocess workers
    j = Job(a, d, "ipc://%s/prod.sock" % d, "ipc://%s/sink.sock" % d, hb=PATIENT_HB)
    ctx = zmq.Context()
    peers = [Peer(ctx, "old-pre", "preprocess", j.prod_ep, False), Peer(ctx, "new-pre", "preprocess", j.prod_ep, True),
             Peer(ctx, "old-inf", "inference", j.prod_ep, False, leave_after=2)]
    try:
        j.sink()
        prod = j.producer()
        # The peers (capacity 1 each, hellos repeated until welcomed) take the first items; the older inference
        # peer is the only inference worker until it has handed back its items and left, so it gets some.
        t0 = time.time()
        while time.time() - t0 < 30 and not (peers[2].gone and peers[0].seen and peers[1].seen):
            for p in peers:
                p.pump()
            time.sleep(0.005)
        if not peers[2].gone:
            raise Fail("the peers got too few items in 30 s (seen: %s)" % [p.seen for p in peers])
        j.worker("inference", ["--max-batch", "4", "--exit-when-done"])
        j.worker("inference", ["--max-batch", "4", "--exit-when-done", "--single-frames"])
        t0 = time.time()
        while prod.poll() is None and time.time() - t0 < 60 and not any(p.errors for p in peers):
            for p in peers:
                p.pump()
            time.sleep(0.005)
        for p in peers:   # what a peer saw wrong is the cause of a producer that did not finish
            check(not p.errors, "%s: %s" % (p.name, p.errors[:3]))
        check(wait_exit(prod, 5, "producer") == 0, "producer exit status %s" % prod.returncode)
    finally:
        for p in peers:
            p.sock.close()
        ctx.term()
    for p in peers:
        check(p.seen > 0, "%s got no item" % p.name)
    check(peers[1].welcome_frames is True and peers[0].welcome_frames is True,
          "the welcome does not say data_frames: %s" % [p.welcome_frames for p in peers])
    recs = verify(j.out, files, j.db)
    by = {}
    for r in recs:
        by[r["workers"]["preprocess"]] = by.get(r["workers"]["preprocess"], 0) + 1
    check(by.get("old-pre") and by.get("new-pre"), "records by preprocess peer: %s" % by)


TESTS = {"mixed": t_mixed}


def main():
    a = case_parser(TESTS).parse_args()
    return run_case(a.test, "pf_frames_%s_" % a.test, lambda d: TESTS[a.test](a, d), a.keep)


if __name__ == "__main__":
    sys.exit(main())
