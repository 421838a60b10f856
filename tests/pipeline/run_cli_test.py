#!/usr/bin/env python3
"""`paliflow run` as a user meets it, with a tiny random checkpoint: exit codes (all done 0, done with
failures 3, all failed 3, usage 2, interrupted 130), hidden files skipped (and taken with --include-hidden),
one WARN line per failed file with its path once and no INFO chatter, and on an 80-column pseudo-terminal a
bar that never reaches the last column, log lines that never start in the middle of a bar, and an
interrupted job's last bar with its true count; then a rerun resumes it."""
import argparse
import fcntl
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from pftest import Fail, check, read_records, tiny_checkpoint  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--paliflow", required=True)
    ap.add_argument("--tokenizer", required=True, help="PaliGemma's tokenizer.json (the build's fixture)")
    ap.add_argument("--images", required=True, help="the sample images (examples/images)")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="pf_runcli_")
    ckpt = os.path.join(d, "ckpt")
    tiny_checkpoint(a.paliflow, ckpt, seed=7)
    base = [a.paliflow, "run", "--model", ckpt, "--tokenizer", a.tokenizer, "--task", "caption en",
            "--max-new-tokens", "3"]
    env = dict(os.environ)
    env.pop("PALIFLOW_LOG", None)   # the default level is under test
    good = [os.path.join(a.images, n) for n in ("camera.jpg", "astronaut.jpg", "chelsea.jpg")]

    def run(name, args, folder):
        out = os.path.join(d, name + ".jsonl")
        p = subprocess.run(base + ["--progress", "off", "--out", out] + args + [folder], capture_output=True,
                           text=True, timeout=300, env=env)
        return p, out

    try:
        ok = os.path.join(d, "ok")
        os.makedirs(os.path.join(ok, ".git"))
        for s in good:
            shutil.copy(s, ok)
        for h in (".DS_Store", "._camera.jpg", os.path.join(".git", "x.jpg")):
            with open(os.path.join(ok, h), "wb") as f:
                f.write(b"\0\5\26\7 not an image")
        # all done: 0; the hidden files are neither items nor error records
        p, out = run("ok", [], ok)
        check(p.returncode == 0, "all done: exit %d, stderr %s" % (p.returncode, p.stderr))
        recs = read_records(out)
        check(len(recs) == 3 and all("text" in r for r in recs), "all done: records %s" % recs)
        check("(3 hidden skipped)" in p.stderr, "hidden count not in the summary: %s" % p.stderr)
        check(" INFO " not in p.stderr, "INFO lines at the default level: %s" % p.stderr)
        # --include-hidden: they are items (and fail as images): done with failures
        p, out = run("hidden", ["--include-hidden"], ok)
        check(p.returncode == 3, "include-hidden: exit %d" % p.returncode)
        check(len(read_records(out)) == 6, "include-hidden: %d records" % len(read_records(out)))
        # some failed: 3, one WARN per failed file naming its path once
        some = os.path.join(d, "some")
        shutil.copytree(ok, some)
        with open(os.path.join(some, "bad.jpg"), "wb") as f:
            f.write(b"BAD: not an image")
        open(os.path.join(some, "empty.png"), "wb").close()
        p, out = run("some", [], some)
        check(p.returncode == 3, "some failed: exit %d, stderr %s" % (p.returncode, p.stderr))
        check(len(read_records(out)) == 5, "some failed: %d records" % len(read_records(out)))
        # (the random checkpoint adds its own "RANDOM weights" warning from the model: not a per-file line)
        warns = [l for l in p.stderr.splitlines() if " WARN " in l and "RANDOM weights" not in l]
        check(len(warns) == 2, "want 2 WARN lines (one per failed file), got %s" % p.stderr)
        for name in ("bad.jpg", "empty.png"):
            w = [l for l in warns if name in l]
            check(len(w) == 1 and w[0].count(os.path.join(some, name)) == 1,
                  "%s: want one WARN line with its path once: %s" % (name, w))
        check(" INFO " not in p.stderr, "INFO lines at the default level: %s" % p.stderr)
        # all failed: 3 (not 0), and said so
        bad = os.path.join(d, "bad")
        os.makedirs(bad)
        for i in range(3):
            with open(os.path.join(bad, "b%d.jpg" % i), "wb") as f:
                f.write(b"nope %d" % i)
        p, out = run("bad", [], bad)
        check(p.returncode == 3, "all failed: exit %d" % p.returncode)
        check("every file failed" in p.stderr, "all failed not said: %s" % p.stderr)
        # every item fails in inference (image size the model does not take): never 0
        p, out = run("size", ["--image-size", "448"], ok)
        check(p.returncode != 0, "--image-size mismatch exits 0")
        # usage: 2
        p = subprocess.run(base[:-4] + ["--out", os.path.join(d, "u.jsonl"), ok], capture_output=True, text=True,
                           env=env)
        check(p.returncode == 2, "missing --task: exit %d" % p.returncode)
        p = subprocess.run(base + ["--progress", "sometimes", "--out", os.path.join(d, "u.jsonl"), ok],
                           capture_output=True, text=True, env=env)
        check(p.returncode == 2, "bad --progress: exit %d" % p.returncode)
        h = subprocess.run([a.paliflow, "run", "--help"], capture_output=True, text=True)
        check(h.returncode == 0 and "130" in h.stdout and "Exit status" in h.stdout, "exit codes not in --help")

        # interrupted on an 80-column terminal
        many = os.path.join(d, "many")
        os.makedirs(many)
        for i in range(600):
            os.link(os.path.join(ok, "camera.jpg"), os.path.join(many, "img%04d.jpg" % i))
        with open(os.path.join(many, "broken.jpg"), "wb") as f:
            f.write(b"broken")
        out = os.path.join(d, "many.jsonl")
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        cmd = base[:-1] + ["30", "--out", out, many]
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, env=env)
        os.close(slave)
        text = b""
        sent = False
        t_end = time.time() + 300
        while time.time() < t_end:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                text += chunk
            if not sent and len(read_records(out, torn_ok=True)) >= 150:
                p.send_signal(signal.SIGINT)
                sent = True
            if p.poll() is not None and not r:
                break
        rc = p.wait(timeout=60)
        os.close(master)
        check(sent, "the job ended before it could be interrupted")
        check(rc == 130, "interrupted: exit %d" % rc)
        screen = text.decode("utf-8", "replace")
        bars = []
        for seg in re.split(r"[\r\n]+", screen):
            seg = seg.replace("\x1b[K", "")
            if not seg:
                continue
            if seg.startswith("["):
                bars.append(seg)
                check(len(seg) <= 79, "bar of %d columns in 80: %r" % (len(seg), seg))
            else:   # a log line or the summary: starts at column 0, never glued to a bar
                check(re.match(r"^(\d{4}-\d\d-\d\dT|paliflow run: )", seg), "log text in a bar's line: %r" % seg)
        check(len(bars) >= 2, "no bar drawn: %r" % screen[-2000:])
        check(re.search(r"\d items/s, ETA \d", screen), "no ETA or rate in the bar: %r" % bars[-3:])
        m = re.search(r"interrupted at (\d+) of (\d+) files", screen)
        check(m is not None, "no interrupted summary: %r" % screen[-500:])
        n, total = int(m.group(1)), int(m.group(2))
        check(n < total == 601, "interrupted at %d of %d" % (n, total))
        last = bars[-1]
        check("stopped" in last and ("%d/%d" % (n, total)) in last, "last bar %r, want %d/%d stopped" % (last, n, total))
        fill = last[1:last.index("]")]
        check(fill.count("#") < len(fill), "an interrupted job drew a full bar: %r" % last)
        print("80-column bars (last 3):")
        for b in bars[-3:]:
            print("  |" + b + "|")
        # resume: the rest, each file once
        p = subprocess.run(cmd[:-1] + ["--progress", "off", many], capture_output=True, text=True, timeout=600, env=env)
        check(p.returncode == 3, "resume: exit %d %s" % (p.returncode, p.stderr[-500:]))
        paths = [r["path"] for r in read_records(out)]
        check(len(paths) == 601 and len(set(paths)) == 601, "resume: %d records, %d paths" % (len(paths), len(set(paths))))
    except Fail as e:
        print("FAIL: %s (folder %s kept)" % (e, d))
        return 1
    shutil.rmtree(d, ignore_errors=True)
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
