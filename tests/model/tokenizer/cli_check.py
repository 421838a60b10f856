#!/usr/bin/env python3
"""CLI-level check of `paliflow tokenize` against the golden tokenizer files (issue 3 interface).

usage: cli_check.py PALIFLOW GOLDEN_TOKENIZER_DIR [--quick]

Runs every case of cases.jsonl, decode_cases.jsonl, processor_cases.jsonl and variant_cases.jsonl (the
latter against a flipped copy of tokenizer.json written to a temporary directory) through the binary,
compares the parsed outputs exactly, and checks the line protocol (one output line per input line, error
lines for bad input, escapes such as \\u0000 and surrogate pairs). Exit 0 only if everything matches.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

OUT_KEYS = ("input_ids", "token_type_ids", "labels", "attention_mask")


def run(prog, tokenizer, args, lines):
    data = "".join(line + "\n" for line in lines).encode()
    p = subprocess.run([prog, "tokenize", "--tokenizer", tokenizer] + args, input=data, capture_output=True)
    out = p.stdout.decode().splitlines()
    if len(out) != len(lines):
        raise SystemExit(f"{args}: {len(lines)} input lines but {len(out)} output lines "
                         f"(exit {p.returncode}, stderr: {p.stderr.decode()[:500]})")
    return [json.loads(o) for o in out], p.returncode


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


class Report:
    def __init__(self):
        self.bad = 0

    def check(self, name, ok, detail=""):
        if not ok:
            self.bad += 1
            if self.bad <= 20:
                print(f"MISMATCH {name}: {detail}"[:2000])


def main():
    prog, gdir = sys.argv[1], sys.argv[2]
    tok = os.path.join(gdir, "tokenizer.json")
    r = Report()

    cases = load(os.path.join(gdir, "cases.jsonl"))
    outs, _ = run(prog, tok, [], [json.dumps({"text": c["text"]}) for c in cases])
    for i, (c, o) in enumerate(zip(cases, outs)):
        r.check(f"cases[{i}] {c['kind']}", o.get("ids") == c["ids"], f"{o} != {c['ids']} text={c['text'][:80]!r}")
    print(f"encode: {len(cases)} cases")

    dec = load(os.path.join(gdir, "decode_cases.jsonl"))
    for skip in (False, True):
        sel = [c for c in dec if c["skip_special"] == skip]
        outs, _ = run(prog, tok, ["--decode"] + (["--skip-special"] if skip else []),
                      [json.dumps({"ids": c["ids"]}) for c in sel])
        for i, (c, o) in enumerate(zip(sel, outs)):
            r.check(f"decode skip={skip} [{i}] {c['kind']}", o.get("text") == c["text"],
                    f"{o.get('text')!r} != {c['text']!r}")
    print(f"decode: {len(dec)} cases")

    proc = load(os.path.join(gdir, "processor_cases.jsonl"))
    lines = [json.dumps({k: v for k, v in c.items() if k not in OUT_KEYS}) for c in proc]
    outs, _ = run(prog, tok, ["--processor"], lines)
    for i, (c, o) in enumerate(zip(proc, outs)):
        for k in OUT_KEYS:
            if k in c:
                r.check(f"processor[{i}].{k}", o.get(k) == c[k], f"{str(o.get(k))[:300]} != {str(c[k])[:300]}")
    print(f"processor: {len(proc)} cases")

    if "--quick" not in sys.argv:
        var = load(os.path.join(gdir, "variant_cases.jsonl"))
        with open(tok, encoding="utf-8") as f:
            t = json.load(f)
        flipped = 0
        for a in t["added_tokens"]:
            if re.fullmatch(r"<loc\d{4}>|<seg\d{3}>", a["content"]):
                a["normalized"] = not a["normalized"]
                flipped += 1
        r.check("variant flip", flipped == 1152, f"flipped {flipped}")
        with tempfile.TemporaryDirectory() as d:
            vpath = os.path.join(d, "tokenizer.json")
            with open(vpath, "w", encoding="utf-8") as f:
                json.dump(t, f)  # ensure_ascii: \u escapes and surrogate pairs everywhere
            outs, _ = run(prog, vpath, [], [json.dumps({"text": c["text"]}) for c in var])
        for i, (c, o) in enumerate(zip(var, outs)):
            r.check(f"variant[{i}]", o.get("ids") == c["ids"], f"{o} != {c['ids']} text={c['text'][:80]!r}")
        print(f"variant: {len(var)} cases")

    # line protocol: bad lines give error lines in place, escapes round-trip
    lines = ['{"text": "a\\u0000b"}', "not json", '{"text": "\\ud83d\\ude00 ok"}', "", '{"nope": 1}',
             '{"text": "\\ud800"}', '{"text": "x"}']
    outs, rc = run(prog, tok, [], lines)
    r.check("protocol exit status", rc == 1, f"exit {rc}")
    for i in (1, 3, 4, 5):
        r.check(f"protocol error line {i}", "error" in outs[i], str(outs[i]))
    for i in (0, 2, 6):
        r.check(f"protocol ok line {i}", "ids" in outs[i], str(outs[i]))
    ids0 = outs[0]["ids"]
    outs2, _ = run(prog, tok, ["--decode"], [json.dumps({"ids": ids0}), json.dumps({"ids": outs[2]["ids"]}),
                                             '{"ids": [-1]}', '{"ids": [2, 99999999, 1]}'])
    r.check("nul round trip", outs2[0].get("text") == "a\u0000b", str(outs2[0]))
    r.check("surrogate round trip", outs2[1].get("text") == "\U0001F600 ok", str(outs2[1]))
    r.check("negative id is an error", "error" in outs2[2], str(outs2[2]))
    r.check("unknown ids dropped", outs2[3].get("text") == "<bos><eos>", str(outs2[3]))

    if r.bad:
        print(f"FAILED: {r.bad} mismatches")
        return 1
    print("ALL MATCH")
    return 0


if __name__ == "__main__":
    sys.exit(main())
