"""pftest - what every process-level test (tests/*/*.py) shares: processes started in their own session and
killed on the way out whatever happens, a test's temporary folder and its verdict (run_case), sanitizer
scans of logs, free tcp ports, JSONL records, and the tiny random checkpoint a test makes for itself.

A test script puts this folder on sys.path and imports what it uses:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
    from pftest import Fail, check, run_case, start  # noqa: E402
Exit statuses follow ctest's conventions here: 0 pass, 1 fail, 77 skipped (SKIP_RETURN_CODE 77).
"""
import argparse
import atexit
import importlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PROCS = []          # every process start() made: killed by cleanup(), logs scanned by run_case
NETNS = []          # network namespaces a test made (deleted by cleanup)
CLEANUP_DIRS = []   # folders removed at exit (a passing test's temporary folder)


def cleanup():
    """Kill every started process group, wait for them, delete namespaces and folders. Runs at exit too."""
    for p in PROCS:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
    for p in PROCS:
        try:
            p.wait(timeout=5)
        except Exception:
            pass
    for ns in NETNS:
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
    for d in CLEANUP_DIRS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(cleanup)
# ctest's timeout sends SIGTERM: exit through atexit so that no process outlives the test
signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def start(cmd, log, netns=None, stdout=None):
    """CMD in its own session, stderr (and stdout, unless STDOUT) appended to LOG; killed at exit (cleanup)."""
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    f = open(log, "ab")
    env = dict(os.environ, PALIFLOW_LOG=os.environ.get("PALIFLOW_LOG", "info"))
    p = subprocess.Popen(cmd, stdout=stdout or f, stderr=f, start_new_session=True, env=env)
    p.log = log
    PROCS.append(p)
    return p


def kill9(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except OSError:
        pass
    p.wait(timeout=10)


def wait_for(pred, timeout, what):
    """Poll PRED every 50 ms until it holds; Fail naming WHAT after TIMEOUT seconds."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return
        time.sleep(0.05)
    raise Fail("timed out after %d s waiting for %s" % (timeout, what))


def connect_handshaken(sock, ep, timeout, what):
    """Connect the ZeroMQ socket SOCK to EP and wait until its handshake with the peer is done (with CURVE, the
    key exchange too). A SUB socket sends its subscription right after it, so a publisher started later does
    not drop the first records for want of it (a sleep guessed how long that takes; a loaded machine took
    longer, or started the publisher late)."""
    import zmq
    from zmq.utils.monitor import recv_monitor_message
    mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)   # before the connect: no event missed
    try:
        sock.connect(ep)
        t0 = time.time()
        while time.time() - t0 < timeout:
            if mon.poll(100) and recv_monitor_message(mon)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return
        raise Fail("timed out after %d s waiting for %s" % (timeout, what))
    finally:
        sock.disable_monitor()
        mon.close(0)


def netns_add(names):
    """Create the network namespaces NAMES (root); cleanup() deletes them."""
    for ns in names:
        r = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
        check(r.returncode == 0, "cannot create network namespace %s: %s" % (ns, r.stderr.strip()))
        NETNS.append(ns)


def wait_exit(p, timeout, what):
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Fail("%s did not finish within %d s (log %s)" % (what, timeout, p.log))


_ports_given = set()


def free_port():
    """A port to bind on 127.0.0.1, below the kernel's ephemeral range: a port the kernel hands out for bind(0)
    is also one it may give to some other test's outgoing connection (ZeroMQ clients connect from ephemeral
    ports) before our server binds it ("Address already in use")."""
    lo = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(max(1024, lo - 12000), lo)
        if port in _ports_given:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _ports_given.add(port)
        return port
    raise Fail("no free port below %d" % lo)


def read_records(out, torn_ok=False):
    """The JSON records of a JSONL output (none when it does not exist yet). A last line without its newline
    is a torn write: a failure, or (TORN_OK, for an output still being written) left out."""
    recs = []
    if not os.path.exists(out):
        return recs
    with open(out, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                check(torn_ok, "torn line in the output: %r" % line[:80])
                continue
            recs.append(json.loads(line))
    return recs


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")


def no_sanitizer_report(text, label):
    """A run that is expected to fail exits non-zero anyway: a sanitizer report in it must not pass unseen."""
    for mark in SANITIZER_MARKS:
        check(mark not in text, "%s: sanitizer report: %s" % (label, text[text.find(mark):][:1500]))


def tiny_checkpoint(paliflow, dest, seed, like="paligemma-3b-pt-224"):
    """A tiny random checkpoint at DEST made by `paliflow make-random-checkpoint --tiny` (no golden data
    needed: the tests that run the real stages on it check the machinery, not the model's answers)."""
    r = subprocess.run([paliflow, "make-random-checkpoint", "--like", like, "--tiny", "--quiet", "--seed",
                        str(seed), dest], capture_output=True, text=True)
    check(r.returncode == 0, "make-random-checkpoint %s: exit %d: %s" % (dest, r.returncode, r.stderr[-1500:]))
    return dest


def case_parser(choices, name="test", worker=True):
    """The command line of a process test: NAME (one of CHOICES) --paliflow PATH [--worker PATH (test_worker)]
    [--keep]; the caller adds its own options and parses."""
    ap = argparse.ArgumentParser()
    ap.add_argument(name, choices=sorted(choices))
    ap.add_argument("--paliflow", required=True)
    if worker:
        ap.add_argument("--worker", required=True)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    return ap


FLEET_MODULES = {"zmq": "python3-zmq", "msgpack": "python3-msgpack", "prometheus_client": "python3-prometheus-client"}


def missing_modules(modules):
    """A SKIP line for the first of MODULES ({module: Debian package}) that does not import, else None."""
    for mod, package in modules.items():
        try:
            importlib.import_module(mod)
        except ImportError as e:
            return "SKIP: %s (%s: .ci/packages)" % (e, package)
    return None


def run_case(label, prefix, body, keep=False, tail=15, skip=(), cleanup_on_pass=False, logs_in_folder=False):
    """The life of one process-level test: BODY(d) runs in a new temporary folder d (name starting with PREFIX);
    a sanitizer report in any started process's log fails it (even a killed one's); on failure the last TAIL
    lines of every log (with LOGS_IN_FOLDER, also every *.log / *.err file in d) are printed and the folder
    kept. Exceptions in SKIP end it as skipped (77). Returns the exit status."""
    d = tempfile.mkdtemp(prefix=prefix)
    t0 = time.time()

    def logs():
        paths = [p.log for p in PROCS]
        if logs_in_folder and os.path.isdir(d):
            paths += [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith((".log", ".err"))]
        return [p for i, p in enumerate(paths) if p not in paths[:i] and os.path.exists(p)]

    try:
        body(d)
        for path in logs():
            no_sanitizer_report(open(path, errors="replace").read(), path)
    except skip as e:
        print("SKIP %s: %s" % (label, e))
        cleanup()
        return 77
    except Fail as e:
        print("FAIL %s: %s (folder %s kept)" % (label, e, d))
        for path in logs():
            print("---- %s (last lines)" % path)
            print("".join(open(path, errors="replace").readlines()[-tail:]))
        cleanup()
        return 1
    if cleanup_on_pass:
        cleanup()
    if not keep:
        CLEANUP_DIRS.append(d)
    print("PASS %s (%.1f s)" % (label, time.time() - t0))
    return 0


class Findings:
    """The failures of a check that goes on after one (a lint-like test: every problem of one run listed, not
    only the first): check/fail record a message, report() prints them all and gives the exit status."""

    def __init__(self):
        self.messages = []

    def check(self, cond, msg):
        if not cond:
            self.messages.append(msg)
        return cond

    def fail(self, msg):
        self.messages.append(msg)

    def report(self, label, passed=""):
        """FAIL LABEL and every message (exit status 1), or PASS LABEL and PASSED (0)."""
        if self.messages:
            print("FAIL %s:\n  %s" % (label, "\n  ".join(self.messages)))
            return 1
        print("PASS %s%s" % (label, ": " + passed if passed else ""))
        return 0
