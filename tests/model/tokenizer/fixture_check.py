#!/usr/bin/env python3
"""The tokenizer the build unpacks from fixtures/ (what the demo uses in a plain clone) is PaliGemma's and loads.

usage: fixture_check.py PALIFLOW TOKENIZER_JSON

Needs no golden data: it checks properties the PaliGemma vocabulary defines (the ids of <loc>, <seg>, <image>,
<bos>, "\\n"), that decoding gives back what was encoded (byte fallback included), and the processor's prompt
layout (image tokens, <bos>, prompt, "\\n"). The golden suite (tokenizer_cli, test_tokenizer_golden) checks the
tokenizer itself exhaustively against the reference implementation.
"""
import json
import os
import subprocess
import sys


def tokenize(prog, tok, args, lines):
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    p = subprocess.run([prog, "tokenize", "--tokenizer", tok] + args, input=data, capture_output=True, timeout=300)
    if p.returncode != 0:
        sys.exit(f"paliflow tokenize {' '.join(args)} exited {p.returncode}: {p.stderr.decode()[-1000:]}")
    out = [json.loads(o) for o in p.stdout.decode().splitlines()]
    if len(out) != len(lines):
        sys.exit(f"{len(lines)} lines in, {len(out)} out")
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    prog, tok = sys.argv[1], sys.argv[2]
    if not os.path.isfile(tok):
        sys.exit(f"{tok}: missing (the build unpacks it from fixtures/paligemma-tokenizer.tar.xz)")
    bad = []

    specials = "<loc0000><loc1023><seg000><seg127><image>"
    [got] = tokenize(prog, tok, [], [{"text": specials}])
    if got.get("ids") != [256000, 257023, 257024, 257151, 257152]:
        bad.append(f"{specials}: ids {got}")

    texts = ["a photo of a cat", "Grüße, 世界 🙂 \t x", "  leading and trailing  ", "\n", "caption en\n",
             "detect cat ; dog", "\u0000 control \u001f", "x" * 3000]
    enc = tokenize(prog, tok, [], [{"text": t} for t in texts])
    if enc[3].get("ids") != [108]:
        bad.append(f"newline: {enc[3]} (Gemma's '\\n' is 108)")
    dec = tokenize(prog, tok, ["--decode"], [{"ids": e.get("ids", [])} for e in enc])
    for t, e, d in zip(texts, enc, dec):
        if not e.get("ids") or d.get("text") != t:
            bad.append(f"round trip {t[:40]!r}: ids {str(e)[:200]} -> {str(d)[:200]}")

    [proc] = tokenize(prog, tok, ["--processor"],
                      [{"prompt": "caption en", "suffix": None, "image_seq_len": 4, "num_images": 1}])
    ids = proc.get("input_ids") or []
    # image tokens, <bos> (2), the prompt's ids, "\n" (108): PaliGemmaProcessor's layout
    if ids[:5] != [257152] * 4 + [2] or ids[5:-1] != enc[4]["ids"][:-1] or ids[-1:] != [108]:
        bad.append(f"processor layout: {proc}")

    for b in bad:
        print("MISMATCH", b)
    if bad:
        sys.exit(1)
    print(f"tokenizer fixture {tok}: ok ({len(texts)} round trips, specials, processor layout)")


if __name__ == "__main__":
    main()
