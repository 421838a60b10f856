/* fuzz_tokenizer_load: libFuzzer target for the tokenizer.json loader (and everything a loaded tokenizer
 * then does with its tables).
 *
 * First input byte even: the rest is a tokenizer.json as is (malformed JSON, wrong types, huge numbers...).
 * First input byte odd: the bytes drive a generator that writes a structurally plausible tokenizer.json
 * (random vocabulary of short strings incl. control characters and bytes that are not UTF-8, merges in
 * both formats, byte tokens, unk options, added tokens with random flags, normalizer and decoder
 * choices), so that the fuzzer gets past the JSON parser into the semantic checks and into BPE on odd
 * vocabularies. Whenever a load succeeds, text from the input is encoded (ids must be in range) and ids
 * are decoded.
 *
 * Build and run (instrument the libraries too, not only the target):
 *   cmake -S . -B build-fuzz -DPALIFLOW_FUZZ=ON -DCMAKE_C_COMPILER=clang-14 \
 *         -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined" -DBUILD_TESTING=OFF
 *   cmake --build build-fuzz -j2 --target fuzz_tokenizer_load
 *   mkdir -p /tmp/corpus_load && build-fuzz/fuzz/fuzz_tokenizer_load -max_total_time=300 -max_len=4096 \
 *         -rss_limit_mb=2048 /tmp/corpus_load
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer/tokenizer.h"

typedef struct src {
    const uint8_t *p;
    size_t n;
} src;

static unsigned take(src *s, unsigned mod)
{
    if (s->n == 0 || mod == 0)
        return 0;
    unsigned v = s->p[0];
    s->p++;
    s->n--;
    return v % mod;
}

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void put(sbuf *b, const char *s, size_t len)
{
    if (b->n + len + 1 > b->cap) {
        b->cap = (b->n + len + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

static void puts_(sbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* A JSON string literal for raw bytes (escapes quotes, backslash, controls; other bytes raw). */
static void put_str(sbuf *b, const char *s, size_t len)
{
    puts_(b, "\"");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            puts_(b, esc);
        } else {
            put(b, (const char *)&c, 1);
        }
    }
    puts_(b, "\"");
}

#define MAXV 64
typedef struct vocab {
    char s[MAXV][12];
    size_t len[MAXV];
    int n;
} vocab;

static int vfind(const vocab *v, const char *s, size_t len)
{
    for (int i = 0; i < v->n; i++)
        if (v->len[i] == len && memcmp(v->s[i], s, len) == 0)
            return i;
    return -1;
}

static int vadd(vocab *v, const char *s, size_t len)
{
    int i = vfind(v, s, len);
    if (i >= 0 || v->n == MAXV || len >= sizeof v->s[0])
        return i;
    memcpy(v->s[v->n], s, len);
    v->len[v->n] = len;
    return v->n++;
}

static const char *ALPHA[] = {
    "a",  "b",    " ", "\xE2\x96\x81", "<", ">", "\n", "\xC3\xA9", "x", "\xF0\x9F\x98\x80",
    "\t", "\xFF", "",  "<0x41>",       "#", "\""};

static void generate(src *s, sbuf *out, const char **text, size_t *text_len)
{
    vocab v = {.n = 0};
    int nv = 1 + (int)take(s, 24);
    for (int i = 0; i < nv; i++) { /* strings of 0..3 alphabet symbols */
        char t[12];
        size_t k = 0;
        int parts = (int)take(s, 4);
        for (int j = 0; j < parts; j++) {
            const char *a = ALPHA[take(s, sizeof ALPHA / sizeof *ALPHA)];
            if (k + strlen(a) < sizeof t)
                memcpy(t + k, a, strlen(a)), k += strlen(a);
        }
        vadd(&v, t, k);
    }
    if (take(s, 2))
        vadd(&v, "<unk>", 5);
    for (int b = 0; b < 256; b += 1 + (int)take(s, 64)) { /* some byte tokens */
        char t[8];
        snprintf(t, sizeof t, "<0x%02X>", b);
        vadd(&v, t, 6);
    }
    /* merges: a pair of existing tokens; their concatenation is added to the vocabulary */
    int nm = (int)take(s, 24), arrays = (int)take(s, 2);
    int ma[32], mb[32], m = 0;
    for (int i = 0; i < nm && m < 32 && v.n > 0; i++) {
        int a = (int)take(s, (unsigned)v.n), b = (int)take(s, (unsigned)v.n);
        char cat[24];
        if (v.len[a] + v.len[b] >= sizeof v.s[0])
            continue;
        memcpy(cat, v.s[a], v.len[a]);
        memcpy(cat + v.len[a], v.s[b], v.len[b]);
        if (vadd(&v, cat, v.len[a] + v.len[b]) < 0 && !take(s, 4))
            continue;
        ma[m] = a;
        mb[m] = b;
        m++;
    }
    int sparse = take(s, 8) == 0; /* sometimes ids with gaps or out of order */
    puts_(out, "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[");
    int nadd = (int)take(s, 5);
    int next_id = v.n, max_added = -1;
    for (int i = 0; i < nadd; i++) {
        const char *cands[] = {"<bos>", "<loc0001>", "a b", "\xE2\x96\x81\xE2\x96\x81",
                               "\n",    "<m>",       "ab",  ""};
        const char *c = cands[take(s, 8)];
        int id = vfind(&v, c, strlen(c));
        if (id < 0) {
            id = (max_added >= v.n) ? max_added + 1 : next_id;
            if (take(s, 16) == 0)
                id += 1; /* wrong id: must be refused */
        }
        if (id > max_added)
            max_added = id;
        char buf[256];
        snprintf(buf, sizeof buf, "%s{\"id\":%d,\"content\":", i ? "," : "", id);
        puts_(out, buf);
        put_str(out, c, strlen(c));
        snprintf(buf, sizeof buf,
                 ",\"single_word\":false,\"lstrip\":%s,\"rstrip\":%s,\"normalized\":%s,\"special\":%s}",
                 take(s, 2) ? "true" : "false", take(s, 2) ? "true" : "false", take(s, 2) ? "true" : "false",
                 take(s, 2) ? "true" : "false");
        puts_(out, buf);
    }
    puts_(out, "],\"normalizer\":");
    static const char *norms[] = {
        "null", "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}",
        ("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"},"
         "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]}"),
        "{\"type\":\"Replace\",\"pattern\":{\"String\":\"ab\"},\"content\":\"\"}"};
    puts_(out, norms[take(s, 4)]);
    puts_(out, ",\"pre_tokenizer\":null,\"post_processor\":null,\"decoder\":");
    static const char *decs[] = {"null",
                                 ("{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{"
                                  "\"String\":\"\xE2\x96\x81\"},"
                                  "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}]}"),
                                 ("{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"},{"
                                  "\"type\":\"Strip\",\"content\":\" \","
                                  "\"start\":2,\"stop\":3},{\"type\":\"Fuse\"},{\"type\":\"Strip\","
                                  "\"content\":\"a\",\"start\":1,\"stop\":9}]}"),
                                 "{\"type\":\"Fuse\"}"};
    puts_(out, decs[take(s, 4)]);
    char buf[256];
    snprintf(
        buf, sizeof buf,
        ",\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":%s,\"fuse_unk\":%s,\"byte_fallback\":%s,"
        "\"ignore_merges\":%s,\"vocab\":{",
        take(s, 3) ? "\"<unk>\"" : "null", take(s, 2) ? "true" : "false", take(s, 2) ? "true" : "false",
        take(s, 4) ? "false" : "true");
    puts_(out, buf);
    for (int i = 0; i < v.n; i++) {
        if (i)
            puts_(out, ",");
        put_str(out, v.s[i], v.len[i]);
        snprintf(buf, sizeof buf, ":%d", sparse ? (int)take(s, 200) : i);
        puts_(out, buf);
    }
    puts_(out, "},\"merges\":[");
    for (int i = 0; i < m; i++) {
        if (i)
            puts_(out, ",");
        if (arrays) {
            puts_(out, "[");
            put_str(out, v.s[ma[i]], v.len[ma[i]]);
            puts_(out, ",");
            put_str(out, v.s[mb[i]], v.len[mb[i]]);
            puts_(out, "]");
        } else {
            char pair[32];
            size_t k = 0;
            memcpy(pair, v.s[ma[i]], v.len[ma[i]]);
            k = v.len[ma[i]];
            pair[k++] = ' ';
            memcpy(pair + k, v.s[mb[i]], v.len[mb[i]]);
            k += v.len[mb[i]];
            put_str(out, pair, k);
        }
    }
    puts_(out, "]}}");
    *text = (const char *)s->p;
    *text_len = s->n;
}

static void exercise(const pf_tokenizer *tok, const char *text, size_t len)
{
    pf_ids ids = {0};
    pf_err err;
    size_t vs = pf_tokenizer_vocab_size(tok);
    if (pf_tokenizer_encode(tok, text, len, &ids, &err) == 0) {
        for (size_t i = 0; i < ids.n; i++)
            if (ids.v[i] < 0 || (size_t)ids.v[i] >= vs)
                abort(); /* every id must be a real token */
        char *out;
        size_t olen;
        if (pf_tokenizer_decode(tok, ids.v, ids.n, (int)(len & 1), &out, &olen, &err) == 0)
            free(out);
    }
    /* decode raw input bytes as ids */
    int32_t raw[64];
    size_t n = 0;
    for (size_t i = 0; i + 1 < len && n < 64; i += 2)
        raw[n++] = (int32_t)(((unsigned)(uint8_t)text[i] << 8 | (uint8_t)text[i + 1]) % (vs + 3)) - 1;
    char *out;
    size_t olen;
    if (pf_tokenizer_decode(tok, raw, n, 0, &out, &olen, &err) == 0)
        free(out);
    for (int32_t id = -1; id <= (int32_t)vs; id++) {
        size_t l;
        const char *t = pf_tokenizer_id_to_token(tok, id, &l);
        if (t && pf_tokenizer_token_to_id_n(tok, t, l) < 0)
            abort(); /* every token string maps back to an id */
        (void)pf_tokenizer_is_special(tok, id);
    }
    pf_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    pf_tokenizer *tok = NULL;
    pf_err err;
    if ((data[0] & 1) == 0) {
        if (pf_tokenizer_load_mem((const char *)data + 1, size - 1, "fuzz.json", &tok, &err) == 0) {
            exercise(tok, "hello <bos> world\n\xC3\xA9", 20);
            pf_tokenizer_free(tok);
        }
        return 0;
    }
    src s = {data + 1, size - 1};
    sbuf json = {0};
    const char *text;
    size_t text_len;
    generate(&s, &json, &text, &text_len);
    if (pf_tokenizer_load_mem(json.p, json.n, "gen.json", &tok, &err) == 0) {
        exercise(tok, text, text_len);
        pf_tokenizer_free(tok);
    }
    free(json.p);
    return 0;
}
