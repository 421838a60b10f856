#!/usr/bin/env python3
"""`paliflow run` (and `sink`) with bad, busy or damaged outputs (issue 21), on a tiny random checkpoint.

usage: failfast_test.py TEST --paliflow PATH --tokenizer FILE --images DIR       TEST:
  outputs    - every bad output ends the run with a non-zero exit and a message naming the path and the
               reason: missing folder, folder, /dev/null, /dev/full, /dev/stdout piped, a FIFO, a read-only
               filesystem, an immutable file, a full 2 MB tmpfs (at start and mid-run), a --publish bind
               error; the standalone sink refuses the same. Before this, several of them hung forever.
  lock       - a second run (or sink) on the output of a running one, or on its job store, is refused by
               name; the running one still writes one record per file; locks die with a kill -9.
  reconcile  - the output deleted, its last line removed or torn, cut mid-file, a line removed inside:
               a rerun redoes the missing records (one record per file, the summary counts what the file
               holds); the job store deleted: no second record.

Each run gets a hang guard of HANG seconds (the old behaviour was to wait forever); the time each refusal
took is printed, not judged. Cases that need root (mount, chattr) are skipped without it.
Exit 0 pass, 1 fail, 77 skipped."""
import argparse
import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HANG = 120
GOOD_IMAGES = ["chelsea.jpg", "camera.jpg", "astronaut.jpg", "coffee.jpg", "horse.png"]   # examples/images
MOUNTS = []
PROCS = []   # started here with Popen (some stopped with SIGSTOP): cleanup() below, not pftest's

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from pftest import Fail, check, no_sanitizer_report, read_records, tiny_checkpoint  # noqa: E402


class Env:
    def __init__(self, a, d):
        self.a, self.d = a, d
        self.ckpt = os.path.join(d, "ckpt")
        tiny_checkpoint(a.paliflow, self.ckpt, seed=21)
        self.tok = a.tokenizer
        self.inputs = os.path.join(d, "in")
        os.makedirs(self.inputs)
        for name in GOOD_IMAGES:
            shutil.copy(os.path.join(a.images, name), self.inputs)
        self.files = sorted(os.path.join(self.inputs, n) for n in GOOD_IMAGES)

    def many(self, n):
        """N distinct files (copies of one image): a run long enough to fill a small disk."""
        folder = os.path.join(self.d, "many%d" % n)
        if not os.path.isdir(folder):
            os.makedirs(folder)
            src = os.path.join(self.a.images, "chelsea.jpg")
            for i in range(n):
                shutil.copy(src, os.path.join(folder, "c%04d.jpg" % i))
        return folder

    def cmd(self, out, inputs=None, extra=()):
        return [self.a.paliflow, "run", "--model", self.ckpt, "--tokenizer", self.tok, "--task", "caption en",
                "--max-new-tokens", "3", "--progress", "off", "--out", out] + list(extra) + [inputs or self.inputs]

    def run(self, out, inputs=None, extra=(), stdout=subprocess.PIPE):
        """(rc, stderr, seconds) of a run; a run still going after HANG seconds is a failure (a hang)."""
        t0 = time.time()
        try:
            p = subprocess.run(self.cmd(out, inputs, extra), stdout=stdout, stderr=subprocess.PIPE,
                               timeout=HANG)
        except subprocess.TimeoutExpired:
            raise Fail("run --out %s still running after %d s (hangs)" % (out, HANG))
        err = p.stderr.decode(errors="replace")
        no_sanitizer_report(err, "run --out %s" % out)
        return p.returncode, err, time.time() - t0


def last_line(text):
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else ""


def expect_refused(env, label, out, want, extra=(), inputs=None, named=None):
    """A run on OUT exits non-zero with a message naming OUT (or NAMED) and containing WANT."""
    rc, err, secs = env.run(out, inputs=inputs, extra=extra)
    msg = last_line(err)
    named = named or out
    print("  %-28s rc=%d %.1f s: %s" % (label, rc, secs, msg))
    check(rc != 0, "%s: exit status 0 (stderr: %s)" % (label, err[-800:]))
    check(named in msg and want in msg, "%s: the message does not name %s and '%s': %s" % (label, named, want, msg))


def one_per_file(out, files, label):
    recs = read_records(out)
    count = collections.Counter(r["path"] for r in recs)
    dup = [p for p, n in count.items() if n > 1]
    missing = [p for p in files if p not in count]
    check(not dup and not missing and len(recs) == len(files),
          "%s: %d records for %d files; duplicated %s, missing %s" % (label, len(recs), len(files), dup[:3],
                                                                     missing[:3]))
    return recs


def summary_count(err):
    """'paliflow run: N files, R records, E errors -> ...' -> (N, R, E)."""
    for line in err.splitlines():
        if line.startswith("paliflow run: ") and " files, " in line:
            parts = line.split(": ", 1)[1].split(",")
            return tuple(int(p.split()[0]) for p in parts[:3])
    raise Fail("no summary line in: %s" % err[-500:])


def mount_tmpfs(where, opts):
    os.makedirs(where, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", where], stderr=subprocess.DEVNULL).returncode:
        return False
    MOUNTS.append(where)
    return True


def fill(folder, leave):
    """Fill the filesystem of FOLDER up to LEAVE bytes free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(os.path.join(folder, "filler"), "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def t_outputs(env):
    d = env.d
    expect_refused(env, "missing folder", os.path.join(d, "no", "such", "out.jsonl"), "does not exist")
    expect_refused(env, "a folder", d, "folder")
    expect_refused(env, "/dev/null", "/dev/null", "character device")
    expect_refused(env, "/dev/full", "/dev/full", "character device")
    fifo = os.path.join(d, "fifo")
    os.mkfifo(fifo)
    expect_refused(env, "a FIFO", fifo, "pipe")
    # /dev/stdout piped to a reader: the run must not read (or block on) its own pipe
    t0 = time.time()
    p = subprocess.Popen(env.cmd("/dev/stdout"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=HANG)
    except subprocess.TimeoutExpired:
        p.kill()
        raise Fail("--out /dev/stdout piped: still running after %d s" % HANG)
    no_sanitizer_report(err.decode(errors="replace"), "/dev/stdout")
    msg = last_line(err.decode(errors="replace"))
    print("  %-28s rc=%d %.1f s: %s" % ("/dev/stdout piped", p.returncode, time.time() - t0, msg))
    check(p.returncode != 0 and "/dev/stdout" in msg and "pipe" in msg, "/dev/stdout piped: %s" % msg)

    # the standalone sink refuses the same outputs
    sock = os.path.join(d, "s.sock")
    p = subprocess.run([env.a.paliflow, "sink", "--bind", "ipc://" + sock, "--producer", "ipc://" + sock + ".p",
                        "--out", "/dev/null"], capture_output=True, timeout=HANG)
    no_sanitizer_report(p.stderr.decode(errors="replace"), "sink /dev/null")
    msg = last_line(p.stderr.decode(errors="replace"))
    print("  %-28s rc=%d: %s" % ("sink --out /dev/null", p.returncode, msg))
    check(p.returncode != 0 and "/dev/null" in msg and "character device" in msg, "sink /dev/null: %s" % msg)

    # --publish on a port someone else holds: the sink cannot bind; the run ends with its error
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    pub = "tcp://127.0.0.1:%d" % port
    rc, err, secs = env.run(os.path.join(d, "pub.jsonl"), extra=["--publish", pub, "--insecure"])
    s.close()
    msg = last_line(err)
    print("  %-28s rc=%d %.1f s: %s" % ("--publish bind error", rc, secs, msg))
    check(rc != 0 and pub in msg and "in use" in msg, "--publish bind error: rc %d: %s" % (rc, msg))

    if os.geteuid() != 0:
        print("  (not root: read-only, immutable and full filesystems skipped)")
        return
    ro = os.path.join(d, "ro")
    if mount_tmpfs(ro, "size=1m,ro"):
        expect_refused(env, "read-only filesystem", os.path.join(ro, "out.jsonl"), "Read-only file system")
    imm = os.path.join(d, "immutable.jsonl")
    open(imm, "w").close()
    if subprocess.run(["chattr", "+i", imm], stderr=subprocess.DEVNULL).returncode == 0:
        try:
            expect_refused(env, "immutable file", imm, "cannot write")
        finally:
            subprocess.run(["chattr", "-i", imm])
    full = os.path.join(d, "full")
    if not mount_tmpfs(full, "size=2m"):
        print("  (cannot mount a tmpfs: full filesystems skipped)")
        return
    fill(full, 0)
    expect_refused(env, "full filesystem at start", os.path.join(full, "out.jsonl"), "full")
    # room to start (64 KiB is the least the check asks) but not for 400 records: full mid-run
    os.unlink(os.path.join(full, "filler"))
    left = fill(full, 72 * 1024)
    out = os.path.join(full, "mid.jsonl")
    # the job store elsewhere: the sink's write is what fails (with it on the full disk SQLite says so first)
    expect_refused(env, "full filesystem mid-run (%d KiB)" % (left // 1024), out, "No space left",
                   inputs=env.many(400), extra=["--db", os.path.join(d, "mid.db")])
    recs = read_records(out)   # whole lines only: the failed batch was taken back
    check(0 < len(recs) < 400, "mid-run: %d records" % len(recs))
    # room again: the rerun finishes the job, one record per file
    os.unlink(os.path.join(full, "filler"))
    many = env.many(400)
    rc, err, secs = env.run(out, inputs=many, extra=["--db", os.path.join(d, "mid.db")])
    check(rc == 0, "rerun after the disk filled: rc %d: %s" % (rc, err[-800:]))
    one_per_file(out, sorted(os.path.join(many, n) for n in os.listdir(many)), "rerun after the disk filled")
    print("  %-28s rc=0 %.1f s: %s" % ("rerun with room again", secs, last_line(err)))


def flocked(path):
    """Someone holds a flock on PATH (read from /proc/locks: trying the lock ourselves could make the run's
    own attempt fail at that very moment)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(st.st_ino):
                return True
    return False


def holder_note(lockfile):
    try:
        with open(lockfile) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_locked(out, proc, timeout=HANG):
    """Until PROC (a run on OUT with the default job store OUT.db) holds both of its locks: the output's (taken
    by its sink) and the job store's, OUT.db.lock (taken by its producer, which then writes "pid N on HOST"
    into it). The two are taken separately: the output locked says nothing about the job store (a run frozen
    then let a second run on the same --db take the job store, and finish)."""
    lockfile = out + ".db.lock"
    want = "pid %d on " % proc.pid
    t0 = time.time()
    while time.time() - t0 < timeout:
        check(proc.poll() is None, "the first run ended (rc %s) before it locked %s and %s" % (proc.returncode, out,
                                                                                             lockfile))
        if flocked(out) and flocked(lockfile) and holder_note(lockfile).startswith(want):
            return
        time.sleep(0.02)
    raise Fail("%s and %s never both locked by pid %d (holder note: %r)" % (out, lockfile, proc.pid,
                                                                         holder_note(lockfile)))


def t_lock(env):
    d = env.d
    many = env.many(60)
    files = sorted(os.path.join(many, n) for n in os.listdir(many))
    out = os.path.join(d, "a.jsonl")
    # a running run, frozen (SIGSTOP) while it holds both of its locks: the second run and a sink are refused
    log = open(os.path.join(d, "first.log"), "w+")
    first = subprocess.Popen(env.cmd(out, many), stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    PROCS.append(first)
    wait_locked(out, first)
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        expect_refused(env, "second run, same --out", out, "in use", inputs=many)
        expect_refused(env, "second run, same --db", os.path.join(d, "b.jsonl"), "in use by pid %d" % first.pid,
                       inputs=many, extra=["--db", out + ".db"], named=out + ".db")
        sock = os.path.join(d, "s.sock")
        p = subprocess.run([env.a.paliflow, "sink", "--bind", "ipc://" + sock, "--producer", "ipc://" + sock + ".p",
                            "--out", out], capture_output=True, timeout=HANG)
        no_sanitizer_report(p.stderr.decode(errors="replace"), "sink on a locked output")
        msg = last_line(p.stderr.decode(errors="replace"))
        print("  %-28s rc=%d: %s" % ("sink on the same --out", p.returncode, msg))
        check(p.returncode != 0 and out in msg and "in use" in msg, "sink on a locked output: %s" % msg)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    first.wait(timeout=HANG)
    log.seek(0)
    text = log.read()
    no_sanitizer_report(text, "the first run")
    check(first.returncode == 0, "the first run: rc %d: %s" % (first.returncode, text[-800:]))
    one_per_file(out, files, "the first run after the refusals")

    # kill -9 while holding the locks: the kernel drops them, the next run resumes
    out = os.path.join(d, "k.jsonl")
    victim = subprocess.Popen(env.cmd(out, many), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    PROCS.append(victim)
    wait_locked(out, victim)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    rc, err, secs = env.run(out, many)
    check(rc == 0, "run after kill -9: rc %d: %s" % (rc, err[-800:]))
    one_per_file(out, files, "after kill -9 and a rerun")
    print("  %-28s rc=0 %.1f s" % ("rerun after kill -9", secs))


def t_reconcile(env):
    out = os.path.join(env.d, "r.jsonl")
    rc, err, _ = env.run(out)
    check(rc == 0, "first run: rc %d: %s" % (rc, err[-800:]))
    one_per_file(out, env.files, "first run")
    n = len(env.files)

    def rerun(label, want_log=None):
        rc, err, secs = env.run(out)
        check(rc == 0, "%s: rc %d: %s" % (label, rc, err[-800:]))
        recs = one_per_file(out, env.files, label)
        total, done, failed = summary_count(err)
        check(total == n and done + failed == len(recs), "%s: summary %s for %d records" % (label, (total, done,
                                                                                                 failed), len(recs)))
        if want_log:
            check(want_log in err, "%s: no '%s' in the log" % (label, want_log))
        print("  %-28s rc=0 %.1f s: %s" % (label, secs, last_line(err)))

    os.unlink(out)
    rerun("output deleted", "5 done and 0 failed items have no record")
    with open(out, "rb") as f:
        data = f.read()
    cut = data[:data.rstrip(b"\n").rfind(b"\n") + 1]
    with open(out, "wb") as f:
        f.write(cut)
    rerun("last line removed", "1 done and 0 failed items have no record")
    with open(out, "wb") as f:
        f.write(data[:-40])
    rerun("last line torn", "cutting a torn last line")
    with open(out, "wb") as f:
        f.write(data[:len(data) // 3])   # two lines and a torn third, say
    rerun("cut mid-file")
    # a line removed from inside: the offsets miss it (the size still reaches past it), the count does not
    data = open(out, "rb").read()
    lines = data.splitlines(keepends=True)
    with open(out, "wb") as f:
        f.write(b"".join(lines[:1] + lines[2:]))
    rerun("a line removed inside", "records were removed from inside it")
    # the job store deleted: everything is redone, the output's records are kept and none is written twice
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(out + ".db" + suffix):
            os.unlink(out + ".db" + suffix)
    before = open(out, "rb").read()
    rerun("job store deleted")
    check(open(out, "rb").read() == before, "job store deleted: the output changed")


TESTS = {"outputs": t_outputs, "lock": t_lock, "reconcile": t_reconcile}


def cleanup():
    for p in PROCS:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGCONT)
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait()
    for m in reversed(MOUNTS):
        subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("test", choices=sorted(TESTS))
    ap.add_argument("--paliflow", required=True)
    ap.add_argument("--tokenizer", required=True, help="PaliGemma's tokenizer.json (the build's fixture)")
    ap.add_argument("--images", required=True, help="a folder with the sample images (examples/images)")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="pf_failfast_%s_" % a.test)
    t0 = time.time()
    try:
        env = Env(a, d)
        TESTS[a.test](env)
    except Fail as e:
        print("FAIL %s: %s (folder %s kept)" % (a.test, e, d))
        cleanup()
        return 1
    cleanup()
    shutil.rmtree(d, ignore_errors=True)
    print("PASS %s (%.1f s)" % (a.test, time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
