#!/usr/bin/env python3
"""Differential check of `paliflow tokenize` against the Rust tokenizers library (manual tool, not ctest).

usage: NODE_PATH=DIR/node_modules oracle_diff.py PALIFLOW TOKENIZER_JSON
  where DIR has `npm install @anush008/tokenizers` (the golden files' oracle: Rust tokenizers 0.22 core).

Builds a seeded corpus (~2900 texts, 1.8 MB: excerpts of files found on a Debian system incl. glibc locale
data, random text in 15 scripts, receipts, JSON, logs, prompt fragments with <loc>/<seg>/<image>/special
tokens, long words and runs), encodes it with both, decodes 3000 random id sequences plus the encodings
with and without --skip-special, then repeats on modified copies of the tokenizer (Prepend+Replace
normalizer with a Strip decoder, lstrip/rstrip and normalized flags on added tokens, no byte fallback
with and without unk fusing, merges as arrays, ignore_merges, no normalizer/decoder). Exit 0 if all match.
"""
import copy, glob, json, os, random, re, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def make_corpus():
    random.seed(7)
    texts = []
    def add(t, kind):
        texts.append({"kind": kind, "text": t})
    # real files on the system
    files = glob.glob('/usr/share/doc/*/copyright')[:150] + glob.glob('/usr/lib/python3*/*.py')[:80] + glob.glob('/usr/share/i18n/locales/*')[:120] + glob.glob('/etc/*.conf')[:40]
    for f in files:
        try:
            data = open(f, 'rb').read()
        except Exception:
            continue
        s = data.decode('utf-8', errors='replace')
        if 'locales' in f:
            s = re.sub(r'<U([0-9A-Fa-f]{4,6})>', lambda m: chr(int(m.group(1), 16)) if not 0xD800 <= int(m.group(1),16) <= 0xDFFF else '?', s)
        for _ in range(3):
            a = random.randrange(max(1, len(s)))
            add(s[a:a + random.choice([20, 200, 2000, 8000])], 'file')
    # scripts
    ranges = {'cyr': (0x400, 0x4FF), 'greek': (0x370, 0x3FF), 'arab': (0x600, 0x6FF), 'heb': (0x590, 0x5FF), 'deva': (0x900, 0x97F),
              'thai': (0xE00, 0xE7F), 'cjk': (0x4E00, 0x9FFF), 'hangul': (0xAC00, 0xD7A3), 'emoji': (0x1F300, 0x1FAFF), 'math': (0x1D400, 0x1D7FF),
              'latin_ext': (0x100, 0x24F), 'comb': (0x300, 0x36F), 'misc': (0x2000, 0x2BFF), 'pua': (0xE000, 0xE0FF), 'astral': (0x10000, 0x10FFFF)}
    for k, (lo, hi) in ranges.items():
        for _ in range(30):
            words = []
            for _ in range(random.randint(1, 40)):
                w = ''.join(chr(random.randint(lo, hi)) for _ in range(random.randint(1, 8)))
                w = ''.join(c for c in w if not 0xD800 <= ord(c) <= 0xDFFF)
                words.append(w)
            add(random.choice([' ', '  ', '\n', '', '\t', '\u3000']).join(words), 'script_' + k)
    # receipts
    for _ in range(150):
        lines = ['RECEIPT #%06d' % random.randint(0, 999999), '-' * random.randint(10, 40)]
        for _ in range(random.randint(1, 15)):
            item = random.choice(['Milk 2%', 'Brot', 'Café au lait', '寿司', 'Coca-Cola 0,5l', 'TOTAL', 'Tax (7.5%)', 'Кофе'])
            lines.append('%-20s%s%8.2f %s' % (item, ' ' * random.randint(0, 6), random.uniform(0, 999), random.choice(['EUR', '$', '€', '¥', 'USD', ''])))
        lines.append('Date: %04d-%02d-%02d %02d:%02d' % (random.randint(1990, 2030), random.randint(1, 12), random.randint(1, 28), random.randint(0, 23), random.randint(0, 59)))
        add(random.choice(['\n', '\r\n', '\n\n']).join(lines), 'receipt')
    # json and logs
    for _ in range(150):
        obj = {"id": random.randint(0, 10**9), "name": random.choice(["Ana", "Bjørn", "李雷", "O'Brien"]), "tags": [random.random() for _ in range(random.randint(0, 5))], "nested": {"a": None, "b": True, "c": "x\ty\n"}}
        add(json.dumps(obj, indent=random.choice([None, 2, 4]), ensure_ascii=random.choice([True, False])), 'json')
        add('%s [%s] %s: %s from 192.168.%d.%d path=/var/log/%s?q=%d' % ('2024-01-%02dT%02d:%02d:%02d.%03dZ' % (random.randint(1, 28), random.randint(0, 23), random.randint(0, 59), random.randint(0, 59), random.randint(0, 999)),
            random.choice(['INFO', 'WARN', 'ERROR', 'DEBUG']), random.choice(['kernel', 'sshd[1234]', 'nginx']), random.choice(['Connection reset', 'Accepted publickey for root', 'GET /index.html HTTP/1.1 200']), random.randint(0, 255), random.randint(0, 255), random.choice(['syslog', 'a b/c']), random.randint(0, 10**6)), 'log')
    # prompts with special tokens
    frag = ['<loc%04d>' % random.randint(0, 1023) for _ in range(10)] + ['<seg%03d>' % random.randint(0, 127) for _ in range(5)] + ['<image>', '<bos>', '<eos>', '<pad>', '<unk>', '<mask>', '<start_of_turn>', '<end_of_turn>', '<unused7>', '<unused98>', '<2mass>', '[@BOS@]', '<table>', '</td>', '<h1>', '<0x41>', '<0xE3>', '<loc', 'loc0001>', '<seg12>', '<loc10000>', ' ', '  ', '▁', '▁▁', '\n', '\n\n\n', '\t', 'caption en', 'detect cat ; dog', 'answer en what is this?', 'ocr', 'segment', '猫', 'é', '😀', '\u00a0', '\u200b', '\x00', '\x1f', '\r']
    for _ in range(700):
        add(''.join(random.choice(frag) for _ in range(random.randint(1, 30))), 'frag')
    # random ascii with whitespace
    for _ in range(200):
        add(''.join(random.choice('abcdefghijklmnopqrstuvwxyz ABC0123456789.,;:!?-_()[]{}<>/\\"\'\n\t  ') for _ in range(random.randint(1, 500))), 'ascii')
    # long words and runs
    add('a' * 60000, 'long'); add(' ' * 5000, 'long'); add('\n' * 1000, 'long'); add('▁' * 700, 'long'); add('ab' * 20000, 'long')
    add(''.join(chr(random.randint(0x4E00, 0x9FFF)) for _ in range(20000)), 'long')
    add(' '.join('supercalifragilistic' for _ in range(3000)), 'long')
    return texts


def run(cmd, lines):
    p = subprocess.run(cmd, input="".join(l + "\n" for l in lines), capture_output=True, text=True)
    if p.returncode == 2:
        raise SystemExit(f"{cmd}: {p.stderr[:500]}")
    return [json.loads(l) for l in p.stdout.split("\n")[:-1]]  # not splitlines: U+2028 may be raw


def compare(name, prog, tok, texts, dec_extra):
    bad = 0
    enc_in = [json.dumps({"text": t}) for t in texts]
    a = run(["node", os.path.join(HERE, "oracle.js"), "encode", tok], enc_in)
    b = run([prog, "tokenize", "-t", tok], enc_in)
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            bad += 1
            if bad <= 3:
                print(f"  {name} encode mismatch: {texts[i][:80]!r} {x['ids'][:12]} {y}")
    dec_in = [json.dumps({"ids": x["ids"]}) for x in a] + dec_extra
    for mode, flag in (("decode", []), ("decode-skip", ["--skip-special"])):
        a2 = run(["node", os.path.join(HERE, "oracle.js"), mode, tok], dec_in)
        b2 = run([prog, "tokenize", "-t", tok, "--decode"] + flag, dec_in)
        for i, (x, y) in enumerate(zip(a2, b2)):
            if x != y:
                bad += 1
                if bad <= 6:
                    print(f"  {name} {mode} mismatch: {dec_in[i][:80]} {x} {y}")
    print(f"{name}: {len(texts)} texts, {len(dec_in)} id sequences x 2: {bad} mismatches")
    return bad


def main():
    prog, tok = sys.argv[1], sys.argv[2]
    texts = [t["text"] for t in make_corpus()]
    random.seed(11)
    dec = []
    for _ in range(3000):
        ids = []
        for _ in range(random.randint(0, 40)):
            r = random.random()
            if r < 0.35:
                ids.append(random.randint(217, 472))  # byte tokens
            elif r < 0.45:
                ids.append(random.randint(0, 216))
            elif r < 0.55:
                ids.append(random.randint(256000, 257160))
            elif r < 0.6:
                ids.append(random.choice([235248, 139, 108, 2, 1, 3, 106, 107, 257152, 300000, 4294967295]))
            else:
                ids.append(random.randint(0, 257152))
        dec.append(json.dumps({"ids": ids}))
    bad = compare("primary", prog, tok, texts, dec)

    base = json.load(open(tok, encoding="utf-8"))
    short = [t for t in texts if len(t) < 3000]
    sample = random.sample(short, 900) + [t for t in short if "<" in t][:300]

    def llama(t):
        t["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                           {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
        t["decoder"]["decoders"].append({"type": "Strip", "content": " ", "start": 1, "stop": 0})

    def strip(t):
        for a in t["added_tokens"]:
            c = a["content"]
            if c in ("<image>", "<bos>", "<eos>", "<start_of_turn>", "<table>"):
                a["lstrip"] = True
            if c.startswith("<loc0") or c in ("<image>", "<pad>", "<unused5>"):
                a["rstrip"] = True
            if c.startswith("<seg"):
                a["lstrip"] = a["rstrip"] = True
            if c.startswith("<unused"):
                a["normalized"] = True

    def nofallback(t):
        t["model"]["byte_fallback"] = False

    def nofallback_nofuse(t):
        t["model"]["byte_fallback"] = False
        t["model"]["fuse_unk"] = False

    def arrays(t):
        t["model"]["merges"] = [m.split(" ") for m in t["model"]["merges"]]

    def ignore(t):
        t["model"]["ignore_merges"] = True

    def nodecoder(t):
        t["decoder"] = None
        t["normalizer"] = None

    with tempfile.TemporaryDirectory() as d:
        for i, fn in enumerate([llama, strip, nofallback, nofallback_nofuse, arrays, ignore, nodecoder]):
            t = copy.deepcopy(base)
            fn(t)
            p = os.path.join(d, fn.__name__ + ".json")
            with open(p, "w", encoding="utf-8") as f:
                json.dump(t, f, ensure_ascii=(i % 2 == 0))
            bad += compare(fn.__name__, prog, p, sample, dec[:500])
    print("ALL MATCH" if bad == 0 else f"FAILED: {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
