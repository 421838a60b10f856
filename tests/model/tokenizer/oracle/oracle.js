// oracle.js MODE TOKENIZER_JSON < jsonl > jsonl: the Rust tokenizers library (via @anush008/tokenizers) as an
// oracle for tests/model/tokenizer/oracle/oracle_diff.py. MODE: encode ({text} -> {ids}, no special tokens), decode,
// decode-skip ({ids} -> {text}).
const { Tokenizer } = require('@anush008/tokenizers');
const fs = require('fs');
const [mode, path] = process.argv.slice(2);
const tok = Tokenizer.fromFile(path);
const lines = fs.readFileSync(0, 'utf8').split('\n').filter(l => l.length);
(async () => {
  const out = [];
  for (const l of lines) {
    const o = JSON.parse(l);
    if (mode === 'encode') {
      const e = await tok.encode(o.text, null, { addSpecialTokens: false });
      out.push(JSON.stringify({ ids: Array.from(e.getIds()) }));
    } else {
      const t = await tok.decode(o.ids, mode === 'decode-skip');
      out.push(JSON.stringify({ text: t }));
    }
  }
  process.stdout.write(out.join('\n') + '\n');
})();
