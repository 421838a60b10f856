#!/usr/bin/env python3
"""Print every record the paliflow sink publishes, as it is written.

    sudo apt-get install python3-zmq python3-msgpack      # Debian packages
    paliflow sink ... --publish tcp://*:5557 ...
    python3 examples/consume_records.py tcp://SINK_HOST:5557 [--count N] [--jsonl]
    # a sink with CURVE on (--curve-server-key): this consumer needs its own key pair, allowed by the sink
    # (a key the sink refuses is said once on stderr; the consumer keeps retrying)
    python3 examples/consume_records.py tcp://SINK_HOST:5557 --client-key me.key_secret --server-public hub.key

Each message is one msgpack map: {"v": 1, "type": "record", "path": ..., "key": ..., "task": ...,
"text": ..., "ids": [...], "boxes": [...] (detect prompts), ...} or, for an item that failed,
{"error": {"stage": ..., "message": ...}} instead of "text" (proto/PROTOCOL.md).

PUB/SUB drops what is published before the subscription reaches the sink (ZeroMQ's "slow joiner"):
start the consumer before the job, or read the JSON-lines file for a complete history.
"""
import argparse
import json
import sys

import msgpack
import zmq
import zmq.auth   # reads paliflow's (czmq-style) certificate files. Imported here, not in main(): an import
                  # inside a function makes "zmq" a local name there, unbound before that line runs
import zmq.utils.monitor


def describe(rec):
    """One line for a record: 'PATH: TEXT [label x0,y0-x1,y1]...' or 'PATH: ERROR (stage) message'.
    Fields are read with defaults: a record from a newer sink with fields missing is still printed."""
    path = rec.get("path", "?")
    err = rec.get("error")
    if isinstance(err, dict):
        return "%s: ERROR (%s) %s" % (path, err.get("stage", "?"), err.get("message", ""))
    boxes = ""
    for b in rec.get("boxes") or []:
        try:
            boxes += " [%s %.0f,%.0f-%.0f,%.0f]" % (b["label"], b["x0"], b["y0"], b["x1"], b["y1"])
        except (KeyError, TypeError, ValueError):
            boxes += " [%r]" % (b,)
    return "%s: %s%s" % (path, rec.get("text", ""), boxes)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("endpoint", help="the sink's --publish endpoint, e.g. tcp://localhost:5557")
    ap.add_argument("--count", type=int, default=0, help="exit after N records (0 = run until Ctrl-C)")
    ap.add_argument("--jsonl", action="store_true", help="print each record as one JSON line")
    ap.add_argument("--client-key", help="CURVE: this consumer's secret certificate (paliflow keygen)")
    ap.add_argument("--server-public", help="CURVE: the sink's public certificate")
    a = ap.parse_args()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    if a.client_key or a.server_public:
        if not (a.client_key and a.server_public):
            ap.error("CURVE needs both --client-key and --server-public")
        public, secret = zmq.auth.load_certificate(a.client_key)
        sub.curve_publickey, sub.curve_secretkey = public, secret
        sub.curve_serverkey, _ = zmq.auth.load_certificate(a.server_public)
    sub.setsockopt(zmq.MAXMSGSIZE, 64 << 20)   # bound what a peer can make us buffer
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    # A sink that refuses our CURVE key answers nothing at all: without this the consumer would wait silently
    # forever. ZeroMQ reports the refusal on the socket's monitor; say it once (and keep retrying, as the
    # workers do: the key may be allowed later, by a SIGHUP of the sink).
    mon = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH) if a.client_key else None
    sub.connect(a.endpoint)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    if mon is not None:
        poller.register(mon, zmq.POLLIN)
    refused = False
    n = 0
    try:
        while not a.count or n < a.count:
            ready = dict(poller.poll())
            if mon is not None and mon in ready:
                ev = zmq.utils.monitor.recv_monitor_message(mon)
                if ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH and not refused:
                    refused = True
                    print("%s: the sink refused our CURVE key (ZAP status %s): is this consumer's public key (%s) "
                          "in the sink's --curve-allow? retrying" % (a.endpoint, ev["value"],
                                                                     public.decode()),
                          file=sys.stderr, flush=True)
            if sub not in ready:
                continue
            # MAXMSGSIZE above bounds the frame; unpackb takes no max_buffer_size (that is Unpacker's, for
            # streams): with it Debian's msgpack 1.0.3 raises TypeError
            try:
                rec = msgpack.unpackb(sub.recv(), raw=False)
            except (ValueError, msgpack.UnpackException) as e:
                print("skipped a malformed message: %s" % e, file=sys.stderr, flush=True)
                continue
            if not isinstance(rec, dict) or rec.get("v") != 1 or rec.get("type") != "record":
                continue
            n += 1
            if a.jsonl:
                print(json.dumps(rec, ensure_ascii=False), flush=True)
            else:
                print(describe(rec), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if mon is not None:
            sub.disable_monitor()
            mon.close(0)
        sub.close(0)
        ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
