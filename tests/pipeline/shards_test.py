#!/usr/bin/env python3
"""Archive shards as input (issue 19): `paliflow run` end to end on a tiny random checkpoint over tar and zip.

usage: shards_test.py TEST --paliflow PATH --tokenizer FILE --images DIR       TEST:
  tar       - a WebDataset tar (and the same as .tar.gz): one record per image member, each with "archive"
              (shard, member, key, entry) and its sample's .json (parsed) and .txt under "extra"; other members
              skipped; a rerun adds nothing.
  zip       - a folder holding a zip (images in a subfolder), a tar whose name is not UTF-8 and a loose image:
              the scan finds the shards and lists them; one record per image.
  hostile   - shards with a path-traversal name, an absolute name, a symlink, a hard link, a device, a
              duplicate name, a control byte, a non-UTF-8 name, a member over the 48 MiB limit (plain and
              gzipped), a truncated shard, a damaged header, random bytes named .tar: each refused with an
              error record naming shard#member (or the shard) and the reason; the good members succeed; exit 3.
  manifest  - manifest lines naming members (SHARD#MEMBER) with their own prompts and columns, a line naming
              a whole shard, and --list lines naming members.
  resume    - kill -9 of a run over a tar mid-job, then the same command: exactly one record per member.
Exit 0 pass, 1 fail, 77 skipped."""
import base64
import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from datasets_test import HANG, case_main, summary  # noqa: E402  (the run helpers of the datasets tests)
from pftest import check  # noqa: E402
from pftest import read_records as records  # noqa: E402


def img(env, i):
    with open(os.path.join(env.photos, env.names[i % len(env.names)]), "rb") as f:
        return f.read()


def add(t, name, data=b"", **kw):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    for k, v in kw.items():
        setattr(ti, k, v)
    t.addfile(ti, io.BytesIO(data) if data else None)


def wds_tar(env, path, mode="w"):
    """Three samples: 000001 (jpg + json + txt), 000002 (png, no siblings), 000003 (jpg + txt + cls)."""
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as t:
        add(t, "000001.jpg", img(env, 0))
        add(t, "000001.json", b'{"caption": "a man", "n": 1}')
        add(t, "000001.txt", "h\u00e9llo".encode())
        add(t, "sub", type=tarfile.DIRTYPE)
        add(t, "000002.png", img(env, 2) if env.names[2].endswith(".png") else img(env, 1))
        add(t, "000003.txt", b"third")   # before its image: WebDataset groups by key, not by order
        add(t, "000003.jpg", img(env, 1))
        add(t, "000003.cls", b"7")


def by_member(recs):
    out = {}
    for r in recs:
        check(r["path"] not in out, "two records for %s" % r["path"])
        out[r["path"]] = r
    return out


def t_tar(env):
    for name, mode in (("shard.tar", "w"), ("shard.tar.gz", "w:gz")):
        shard = os.path.join(env.d, name)
        wds_tar(env, shard, mode)
        out = os.path.join(env.d, name + ".jsonl")
        err = env.run(["--task", "caption en", "--out", out, shard])
        recs = by_member(records(out))
        want = {shard + "#000001.jpg", shard + "#000002.png", shard + "#000003.jpg"}
        check(set(recs) == want, "%s: records %s, want %s" % (name, sorted(recs), sorted(want)))
        check(summary(err) == (3, 3, 0), "%s: summary %s" % (name, err[-300:]))
        r1, r2, r3 = (recs[shard + m] for m in ("#000001.jpg", "#000002.png", "#000003.jpg"))
        check(all("error" not in r and r.get("text") is not None for r in (r1, r2, r3)), "errors: %s" % recs)
        check(r1["archive"] == {"shard": shard, "member": "000001.jpg", "key": "000001", "entry": 0},
              "archive field: %s" % r1["archive"])
        check(r1["extra"] == {"json": {"caption": "a man", "n": 1}, "txt": "h\u00e9llo"}, "extra: %s" % r1)
        check("extra" not in r2, "000002 has no siblings: %s" % r2)
        check(r3["extra"] == {"txt": "third"} and r3["archive"]["entry"] == 6, "000003: %s" % r3)
        env.run(["--task", "caption en", "--out", out, shard])
        check(len(records(out)) == 3, "%s: a rerun added records" % name)


def t_zip(env):
    folder = os.path.join(env.d, "data")
    os.makedirs(folder)
    with zipfile.ZipFile(os.path.join(folder, "shard.zip"), "w") as z:
        z.writestr("imgs/a.jpg", img(env, 0))
        z.writestr("imgs/a.json", '{"label": "astronaut"}')
        z.writestr("imgs/b.jpg", img(env, 1))
        z.writestr("readme.md", "not an image")
    with open(os.path.join(folder, "loose.jpg"), "wb") as f:
        f.write(img(env, 2))
    with tarfile.open(os.path.join(folder.encode(), b"caf\xe9.tar"), "w") as t:   # a shard name not UTF-8
        add(t, "x.jpg", img(env, 0))
    out = os.path.join(env.d, "z.jsonl")
    err = env.run(["--task", "caption en", "--out", out, folder])
    recs = by_member(records(out))
    zp = os.path.join(folder, "shard.zip")
    latin = [r for r in recs.values() if "path_b64" in r]
    check(len(latin) == 1 and base64.b64decode(latin[0]["path_b64"]) == folder.encode() + b"/caf\xe9.tar#x.jpg"
          and "error" not in latin[0] and latin[0]["archive"]["shard"] == folder + "/caf\\xe9.tar",
          "the shard whose name is not UTF-8: %s" % latin)
    recs = {p: r for p, r in recs.items() if "path_b64" not in r}
    want = {zp + "#imgs/a.jpg", zp + "#imgs/b.jpg", os.path.join(folder, "loose.jpg")}
    check(set(recs) == want, "records %s, want %s" % (sorted(recs), sorted(want)))
    check(not any("error" in r for r in recs.values()), "errors: %s" % recs)
    check(recs[zp + "#imgs/a.jpg"]["extra"] == {"json": {"label": "astronaut"}}, "zip sibling: %s" % recs)
    check(recs[zp + "#imgs/a.jpg"]["archive"]["key"] == "imgs/a", "zip key: %s" % recs)
    check(summary(err) == (4, 4, 0), "summary: %s" % err[-300:])


def t_hostile(env):
    d = env.d
    ev = os.path.join(d, "evil.tar")
    big = b"\0" * (49 << 20)   # over run's 48 MiB per-image limit
    with tarfile.open(ev, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as t:
        add(t, "good1.jpg", img(env, 0))
        add(t, "../escape.jpg", img(env, 0))
        add(t, "/etc/abs.jpg", img(env, 0))
        add(t, "sub/../../up.jpg", img(env, 0))
        add(t, "link.jpg", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add(t, "hard.jpg", type=tarfile.LNKTYPE, linkname="good1.jpg")
        add(t, "dev.jpg", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        add(t, "fifo.jpg", type=tarfile.FIFOTYPE)
        add(t, "dup.jpg", img(env, 1))
        add(t, "dup.jpg", img(env, 1))
        add(t, "ctl\x01.jpg", img(env, 0))
        add(t, "caf\u00e9.jpg", img(env, 0))   # latin-1 bytes: not UTF-8
        add(t, "big.jpg", big)
        add(t, "good2.jpg", img(env, 1))
    gz = os.path.join(d, "bomb.tar.gz")
    with tarfile.open(gz, "w:gz") as t:   # 49 MiB of zeros in ~50 KB: refused from its header, never held
        add(t, "zeros.jpg", big)
        add(t, "after.jpg", img(env, 2))
    # truncated inside the last member's bytes
    tr = os.path.join(d, "cut.tar")
    with tarfile.open(tr, "w") as t:
        add(t, "c1.jpg", img(env, 0))
        add(t, "c2.jpg", img(env, 1))
    raw = open(tr, "rb").read()
    n2 = len(img(env, 1))
    with open(tr, "wb") as f:   # end blocks gone and c2's data cut in half
        f.write(raw[:raw.rfind(img(env, 1)[:64]) + n2 // 2])
    # a damaged third header (checksum no longer matches) after two good members
    dm = os.path.join(d, "damaged.tar")
    with tarfile.open(dm, "w") as t:
        add(t, "d1.jpg", img(env, 0))
        add(t, "d2.jpg", img(env, 1))
        add(t, "d3.jpg", img(env, 2))
    raw = bytearray(open(dm, "rb").read())
    h3 = 512 + ((len(img(env, 0)) + 511) // 512) * 512 + 512 + ((len(img(env, 1)) + 511) // 512) * 512
    raw[h3:h3 + 100] = b"\xff" * 100
    open(dm, "wb").write(raw)
    junk = os.path.join(d, "junk.tar")
    random.seed(19)
    open(junk, "wb").write(bytes(random.getrandbits(8) for _ in range(3000)))
    zp = os.path.join(d, "evil.zip")
    with zipfile.ZipFile(zp, "w") as z:
        z.writestr("ok.jpg", img(env, 2))
        z.writestr("../../zip_escape.jpg", img(env, 0))
        z.writestr("..\\win.jpg", img(env, 0))   # a Windows separator
        zl = zipfile.ZipInfo("zlink.jpg")
        zl.create_system = 3                    # unix: the type lives in the central directory's attributes
        zl.external_attr = 0o120777 << 16       # a symlink
        z.writestr(zl, "/etc/passwd")
    out = os.path.join(d, "h.jsonl")
    err = env.run(["--task", "caption en", "--out", out, ev, gz, tr, dm, junk, zp], want_rc=3)
    recs = records(out)
    paths = [r["path"] for r in recs]
    check(len(paths) == len(set(paths)), "a path twice: %s" % sorted(paths))
    got = {r["path"]: r for r in recs}
    ok = {ev + "#good1.jpg", ev + "#good2.jpg", ev + "#dup.jpg", gz + "#after.jpg", tr + "#c1.jpg", dm + "#d1.jpg", dm + "#d2.jpg",
          zp + "#ok.jpg"}
    for p in ok:
        check(p in got and "error" not in got[p], "good member %s: %s" % (p, got.get(p)))
    want_err = {
        ev + "#../escape.jpg": "path traversal", ev + "#/etc/abs.jpg": "absolute", ev + "#sub/../../up.jpg":
        "path traversal", ev + "#link.jpg": "symbolic link", ev + "#hard.jpg": "hard link", ev + "#dev.jpg":
        "device", ev + "#fifo.jpg": "fifo", ev + "#dup.jpg (duplicate: member 9)": "duplicate member name", ev + "#ctl\\x01.jpg":
        "control character", ev + "#caf\\xe9.jpg": "not UTF-8", ev + "#big.jpg": "over the limit",
        gz + "#zeros.jpg": "over the limit", tr + "#c2.jpg": "truncated", tr: "truncated or corrupt shard after 2", dm: "truncated or corrupt shard after 2",
        junk: "not a readable tar or zip shard", zp + "#../../zip_escape.jpg": "path traversal",
        zp + "#../win.jpg": "path traversal", zp + "#zlink.jpg": "symbolic link"}   # libarchive's zip reader turns a Windows "\\" into "/"
    for p, why in want_err.items():
        r = got.get(p)
        check(r is not None and "error" in r, "no error record for %s (records: %s)" % (p, sorted(got)))
        msg = r["error"]["message"]
        check(why in msg, "%s: error %r does not say %r" % (p, msg, why))
        check(r["archive"]["shard"] in p and "refused" not in r["archive"], "%s: archive %s" % (p, r["archive"]))
    extra = set(got) - ok - set(want_err)
    check(not extra, "unexpected records: %s" % sorted(extra))
    check("AddressSanitizer" not in err, err)
    # a rerun over the same shards: nothing redone, nothing written twice
    env.run(["--task", "caption en", "--out", out, ev, gz, tr, dm, junk, zp], want_rc=3)
    check(len(records(out)) == len(recs), "a rerun added records")


def t_manifest(env):
    shard = os.path.join(env.d, "m.tar")
    wds_tar(env, shard)
    man = os.path.join(env.d, "items.jsonl")
    with open(man, "w") as f:
        f.write(json.dumps({"path": "m.tar#000002.png", "prompt": "answer en what is this?", "id": "q2",
                            "split": "val"}) + "\n")
        f.write(json.dumps({"path": "m.tar#000001.jpg", "prompt": ["caption en", "ocr"], "id": "q1"}) + "\n")
        f.write(json.dumps({"path": "m.tar#nope.jpg", "id": "missing"}) + "\n")
        f.write(json.dumps({"path": "m.tar", "prompt": "detect cat", "batch": 7}) + "\n")
    out = os.path.join(env.d, "m.jsonl")
    env.run(["--task", "caption en", "--out", out, "--manifest", man], want_rc=3)
    recs = records(out)
    keyed = {(r["path"], r["task"]): r for r in recs}
    check(len(keyed) == len(recs), "a record twice: %s" % [(r["path"], r["task"]) for r in recs])
    r = keyed.get((shard + "#000002.png", "answer en what is this?"))
    check(r and "error" not in r and r["id"] == "q2" and r["extra"] == {"split": "val"} and
          r["archive"] == {"shard": shard, "member": "000002.png"}, "member line: %s" % r)
    for task in ("caption en", "ocr"):
        r = keyed.get((shard + "#000001.jpg", task))
        check(r and "error" not in r and r["id"] == "q1", "prompt list %s: %s" % (task, r))
    r = keyed.get((shard + "#nope.jpg", "caption en"))
    check(r and "no member of that name" in r["error"]["message"], "missing member: %s" % r)
    for m in ("000001.jpg", "000002.png", "000003.jpg"):
        r = keyed.get((shard + "#" + m, "detect cat"))
        check(r and "error" not in r and r["extra"]["batch"] == 7, "whole-shard line %s: %s" % (m, r))
    check(keyed[(shard + "#000001.jpg", "detect cat")]["extra"]["json"] == {"caption": "a man", "n": 1},
          "siblings beside the line's columns: %s" % keyed[(shard + "#000001.jpg", "detect cat")])
    check(len(recs) == 7, "records: %s" % sorted(keyed))
    # --list lines naming members and a shard
    lst = os.path.join(env.d, "list.txt")
    with open(lst, "w") as f:
        f.write(shard + "#000003.jpg\n" + shard + "#000001.jpg\n")
    out2 = os.path.join(env.d, "l.jsonl")
    err = env.run(["--task", "caption en", "--out", out2, "--list", lst])
    got = sorted(r["path"] for r in records(out2))
    check(got == [shard + "#000001.jpg", shard + "#000003.jpg"], "--list members: %s" % got)
    check(summary(err) == (2, 2, 0), "--list summary: %s" % err[-300:])


def t_resume(env):
    shard = os.path.join(env.d, "big.tar")
    n = 150
    with tarfile.open(shard, "w") as t:
        for i in range(n):
            add(t, "%06d.jpg" % i, img(env, i))
            add(t, "%06d.txt" % i, b"sample %d" % i)
    out = os.path.join(env.d, "k.jsonl")
    cmd = [env.a.paliflow, "run", "--model", env.ckpt, "--tokenizer", env.a.tokenizer, "--max-new-tokens", "2",
           "--progress", "off", "--max-batch", "1", "--task", "caption en", "--out", out, shard]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.time()
    try:
        while time.time() - t0 < HANG:   # kill once a few records are on disk
            if os.path.exists(out) and len(records(out)) >= 3 or p.poll() is not None:
                break
            time.sleep(0.01)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    before = len(records(out))
    check(before < n, "the run ended before it could be killed (%d records)" % before)
    err = env.run(["--task", "caption en", "--max-batch", "1", "--out", out, shard])
    recs = records(out)
    paths = [r["path"] for r in recs]
    check(len(paths) == n and len(set(paths)) == n, "after the resume: %d records, %d distinct (want %d)"
          % (len(paths), len(set(paths)), n))
    check(all("error" not in r for r in recs), "errors after the resume")
    check(all(r["extra"]["txt"] == "sample %d" % int(r["archive"]["member"][:6]) for r in recs), "siblings")
    print("killed after %d records; the resume wrote %d" % (before, n - before))
    check(summary(err)[0] == n, "summary: %s" % err[-300:])


TESTS = {"tar": t_tar, "zip": t_zip, "hostile": t_hostile, "manifest": t_manifest, "resume": t_resume}


def main():
    return case_main(TESTS, "pf_shards_")


if __name__ == "__main__":
    sys.exit(main())
