/* tokenizer_load.c - read a tokenizer.json into a pf_tokenizer.
 *
 * JSON parsing: cJSON, not jansson, for this one file. Measured on the 17.8 MB PaliGemma file (2-core
 * EPYC VM): jansson ~600 ms; cJSON with malloc ~250-420 ms, nearly all of it page faults (the parse tree
 * is ~69 MB of small nodes); cJSON with an arena on transparent huge pages ~50-90 ms. So the tree goes
 * into a throw-away arena (mmap + MADV_HUGEPAGE) that is unmapped in one call after the walk.
 * cJSON's allocation hooks are process-global: the parse runs under a mutex and the hooks are reset to
 * malloc/free before it is released. Nothing else in paliflow uses cJSON (JSON lines elsewhere use
 * jansson), so no other thread can be inside cJSON meanwhile. Under sanitizers the arena is skipped
 * (plain malloc, so ASan sees every cJSON allocation).
 * cJSON limits and how they are handled: strings are NUL-terminated C strings, so a "\u0000" escape in
 * the file is rejected up front (it would silently truncate a token); trailing garbage after the value
 * is rejected (cJSON would ignore it); numbers are doubles, so ids are checked to be integers in range;
 * nesting is limited to 1000 levels by cJSON itself. One leniency: cJSON cannot tell 5 from 5.0, so an
 * integral float id is accepted where serde would refuse it.
 *
 * Whole load, same machine: ~150 ms (parse ~45, vocab ~15, merges ~80: 1.7M string lookups, batched with
 * prefetches; the tables live on huge pages too). A binary cache of the built tables would make repeated
 * loads ~10-20 ms, but needs invalidation, a writable cache location and complete validation of a file
 * that may be stale, corrupt or hostile; with the cold path well under the 250 ms target there is none.
 *
 * Then every component the file names is checked against what this implementation does exactly (see
 * tokenizer.h); anything else is an error naming the component.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/file.h"
#include "base/log.h"
#include "model/tokenizer_internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define PF_TOK_NO_ARENA 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define PF_TOK_NO_ARENA 1
#endif
#endif

#define PF_TOK_MAX_FILE ((size_t)512 << 20)
#define PF_TOK_MAX_DEPTH 16 /* nested normalizer / decoder Sequences */

/* ------------------------------------------------------------------------------------------------ */
/* parse arena                                                                                       */

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t size, used;
} arena_chunk;

typedef struct arena {
    arena_chunk *head;
    size_t chunk_size, total, limit;
    bool exhausted; /* an allocation hit the limit (or failed) */
} arena;

__attribute__((unused)) static void *arena_take(arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    arena_chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t hdr = (sizeof(arena_chunk) + 15) & ~(size_t)15;
        size_t size = a->chunk_size;
        if (n > size - hdr)
            size = n + hdr;
        if (a->total + size > a->limit) {
            a->exhausted = true;
            return NULL;
        }
        c = pf_tok_big_alloc(size, NULL, "parse arena");
        if (!c) {
            a->exhausted = true;
            return NULL;
        }
        c->next = a->head;
        c->size = size;
        c->used = hdr;
        a->head = c;
        a->total += size;
    }
    void *p = (char *)c + c->used;
    c->used += n;
    return p;
}

static void arena_release(arena *a)
{
    arena_chunk *c = a->head;
    while (c) {
        arena_chunk *next = c->next;
        pf_tok_big_free(c, c->size);
        c = next;
    }
    a->head = NULL;
}

static pthread_mutex_t g_cjson_lock = PTHREAD_MUTEX_INITIALIZER;

#ifndef PF_TOK_NO_ARENA
static arena *g_arena; /* guarded by g_cjson_lock */

static void *arena_malloc(size_t n)
{
    return arena_take(g_arena, n);
}

static void arena_free(void *p)
{
    (void)p;
}
#endif

/* ------------------------------------------------------------------------------------------------ */
/* small JSON helpers                                                                                */

/* Print a token for an error message: at most 60 bytes, control characters escaped. */
static const char *show(const char *s, size_t len, char *buf, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < len && k + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= 60) {
            memcpy(buf + k, "...", 3);
            k += 3;
            break;
        }
        if (c < 0x20 || c == '"' || c == '\\')
            k += (size_t)snprintf(buf + k, cap - k, "\\x%02x", c);
        else
            buf[k++] = (char)c;
    }
    buf[k] = '\0';
    return buf;
}

static const char *type_name(const cJSON *j)
{
    if (!j)
        return "missing";
    if (cJSON_IsNull(j))
        return "null";
    if (cJSON_IsBool(j))
        return "a boolean";
    if (cJSON_IsNumber(j))
        return "a number";
    if (cJSON_IsString(j))
        return "a string";
    if (cJSON_IsArray(j))
        return "an array";
    if (cJSON_IsObject(j))
        return "an object";
    return "invalid";
}

/* Look up a key; fails on duplicates so that a file cannot say two things at once. */
static int get_field(const cJSON *obj, const char *key, const char *where, const cJSON **out, pf_err *err)
{
    *out = NULL;
    for (const cJSON *c = obj->child; c; c = c->next) {
        if (c->string && strcmp(c->string, key) == 0) {
            if (*out)
                return pf_errf(err, "%s: duplicate key \"%s\"", where, key);
            *out = c;
        }
    }
    return 0;
}

static int get_bool(const cJSON *obj, const char *key, const char *where, bool required, bool dflt, bool *out,
                    pf_err *err)
{
    const cJSON *v;
    if (get_field(obj, key, where, &v, err) != 0)
        return -1;
    if (!v) {
        if (required)
            return pf_errf(err, "%s: missing field \"%s\"", where, key);
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsBool(v))
        return pf_errf(err, "%s.%s: expected a boolean, got %s", where, key, type_name(v));
    *out = cJSON_IsTrue(v);
    return 0;
}

/* Optional string (null/absent -> *out NULL). */
static int get_opt_string(const cJSON *obj, const char *key, const char *where, const char **out, pf_err *err)
{
    const cJSON *v;
    *out = NULL;
    if (get_field(obj, key, where, &v, err) != 0)
        return -1;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsString(v))
        return pf_errf(err, "%s.%s: expected a string or null, got %s", where, key, type_name(v));
    *out = v->valuestring;
    return 0;
}

static int get_string(const cJSON *obj, const char *key, const char *where, const char **out, pf_err *err)
{
    if (get_opt_string(obj, key, where, out, err) != 0)
        return -1;
    if (!*out)
        return pf_errf(err, "%s: missing string field \"%s\"", where, key);
    return 0;
}

/* A JSON number that is an integer in [0, max]. */
static int as_uint(const cJSON *v, double max, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > max || d != floor(d))
        return -1;
    *out = (uint64_t)d;
    return 0;
}

static int get_uint(const cJSON *obj, const char *key, const char *where, double max, uint64_t *out,
                    pf_err *err)
{
    const cJSON *v;
    if (get_field(obj, key, where, &v, err) != 0)
        return -1;
    if (!v)
        return pf_errf(err, "%s: missing field \"%s\"", where, key);
    if (as_uint(v, max, out) != 0)
        return pf_errf(err, "%s.%s: expected an integer in [0, %.0f], got %s", where, key, max,
                       cJSON_IsNumber(v) ? "a number out of range" : type_name(v));
    return 0;
}

static int check_utf8(const char *s, size_t len, const char *where, pf_err *err)
{
    size_t bad = pf_utf8_check((const uint8_t *)s, len);
    if (bad != len)
        return pf_errf(err, "%s: invalid UTF-8 at byte %zu", where, bad);
    return 0;
}

static char *dup_mem(const char *s, size_t len)
{
    char *p = malloc(len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

/* {"String": "x"} -> x; {"Regex": ...} and anything else are rejected. */
static int get_string_pattern(const cJSON *obj, const char *where, const char **out, pf_err *err)
{
    const cJSON *pat;
    if (get_field(obj, "pattern", where, &pat, err) != 0)
        return -1;
    if (!pat || !cJSON_IsObject(pat))
        return pf_errf(err, "%s.pattern: expected an object, got %s", where, type_name(pat));
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(pat, "String");
    if (!s) {
        if (cJSON_GetObjectItemCaseSensitive(pat, "Regex"))
            return pf_errf(err, "%s.pattern: Regex patterns are not supported (only String)", where);
        return pf_errf(err, "%s.pattern: expected {\"String\": ...}", where);
    }
    if (!cJSON_IsString(s))
        return pf_errf(err, "%s.pattern.String: expected a string, got %s", where, type_name(s));
    if (s->valuestring[0] == '\0')
        return pf_errf(err, "%s.pattern.String: empty pattern is not supported", where);
    *out = s->valuestring;
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* normalizer / decoder / other components                                                            */

static int add_norm(pf_tokenizer *tok, pf_tok_norm step, pf_err *err)
{
    pf_tok_norm *n = realloc(tok->norm, (tok->n_norm + 1) * sizeof *n);
    if (!n) {
        free(step.pattern);
        free(step.content);
        return pf_errf(err, "normalizer: out of memory");
    }
    tok->norm = n;
    tok->norm[tok->n_norm++] = step;
    return 0;
}

static int parse_normalizer(pf_tokenizer *tok, const cJSON *j, const char *where, int depth, pf_err *err)
{
    if (!j || cJSON_IsNull(j))
        return 0;
    if (depth > PF_TOK_MAX_DEPTH)
        return pf_errf(err, "%s: Sequences nested too deeply", where);
    if (!cJSON_IsObject(j))
        return pf_errf(err, "%s: expected an object or null, got %s", where, type_name(j));
    const char *type;
    if (get_string(j, "type", where, &type, err) != 0)
        return -1;
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list;
        if (get_field(j, "normalizers", where, &list, err) != 0)
            return -1;
        if (!cJSON_IsArray(list))
            return pf_errf(err, "%s.normalizers: expected an array, got %s", where, type_name(list));
        int i = 0;
        for (const cJSON *c = list->child; c; c = c->next, i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.normalizers[%d]", where, i);
            if (parse_normalizer(tok, c, sub, depth + 1, err) != 0)
                return -1;
        }
        return 0;
    }
    pf_tok_norm step = {0};
    if (strcmp(type, "Replace") == 0) {
        const char *pat, *content;
        if (get_string_pattern(j, where, &pat, err) != 0 ||
            get_string(j, "content", where, &content, err) != 0)
            return -1;
        step.kind = PF_NORM_REPLACE;
        step.pattern_len = strlen(pat);
        step.content_len = strlen(content);
        if (check_utf8(pat, step.pattern_len, where, err) != 0 ||
            check_utf8(content, step.content_len, where, err) != 0)
            return -1;
        step.pattern = dup_mem(pat, step.pattern_len);
        step.content = dup_mem(content, step.content_len);
    } else if (strcmp(type, "Prepend") == 0) {
        const char *prepend;
        if (get_string(j, "prepend", where, &prepend, err) != 0)
            return -1;
        step.kind = PF_NORM_PREPEND;
        step.content_len = strlen(prepend);
        if (check_utf8(prepend, step.content_len, where, err) != 0)
            return -1;
        step.content = dup_mem(prepend, step.content_len);
        step.pattern = dup_mem("", 0);
    } else {
        return pf_errf(err,
                       "%s: normalizer type \"%s\" is not supported (supported: Replace, Prepend, Sequence)",
                       where, type);
    }
    if (!step.pattern || !step.content) {
        free(step.pattern);
        free(step.content);
        return pf_errf(err, "%s: out of memory", where);
    }
    return add_norm(tok, step, err);
}

static int add_dec(pf_tokenizer *tok, pf_tok_dec step, pf_err *err)
{
    pf_tok_dec *d = realloc(tok->dec, (tok->n_dec + 1) * sizeof *d);
    if (!d) {
        free(step.pattern);
        free(step.content);
        return pf_errf(err, "decoder: out of memory");
    }
    tok->dec = d;
    tok->dec[tok->n_dec++] = step;
    return 0;
}

static int parse_decoder(pf_tokenizer *tok, const cJSON *j, const char *where, int depth, pf_err *err)
{
    if (depth > PF_TOK_MAX_DEPTH)
        return pf_errf(err, "%s: Sequences nested too deeply", where);
    if (!cJSON_IsObject(j))
        return pf_errf(err, "%s: expected an object or null, got %s", where, type_name(j));
    const char *type;
    if (get_string(j, "type", where, &type, err) != 0)
        return -1;
    pf_tok_dec step = {0};
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list;
        if (get_field(j, "decoders", where, &list, err) != 0)
            return -1;
        if (!cJSON_IsArray(list))
            return pf_errf(err, "%s.decoders: expected an array, got %s", where, type_name(list));
        int i = 0;
        for (const cJSON *c = list->child; c; c = c->next, i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.decoders[%d]", where, i);
            if (parse_decoder(tok, c, sub, depth + 1, err) != 0)
                return -1;
        }
        return 0;
    } else if (strcmp(type, "Replace") == 0) {
        const char *pat, *content;
        if (get_string_pattern(j, where, &pat, err) != 0 ||
            get_string(j, "content", where, &content, err) != 0)
            return -1;
        step.kind = PF_DEC_REPLACE;
        step.pattern_len = strlen(pat);
        step.content_len = strlen(content);
        if (check_utf8(pat, step.pattern_len, where, err) != 0 ||
            check_utf8(content, step.content_len, where, err) != 0)
            return -1;
        step.pattern = dup_mem(pat, step.pattern_len);
        step.content = dup_mem(content, step.content_len);
        if (!step.pattern || !step.content) {
            free(step.pattern);
            free(step.content);
            return pf_errf(err, "%s: out of memory", where);
        }
    } else if (strcmp(type, "ByteFallback") == 0) {
        step.kind = PF_DEC_BYTE_FALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        step.kind = PF_DEC_FUSE;
    } else if (strcmp(type, "Strip") == 0) {
        const char *content;
        uint64_t start, stop;
        if (get_string(j, "content", where, &content, err) != 0 ||
            get_uint(j, "start", where, 1e9, &start, err) != 0 ||
            get_uint(j, "stop", where, 1e9, &stop, err) != 0)
            return -1;
        size_t clen = strlen(content);
        uint32_t cp;
        if (clen == 0 || pf_utf8_seq((const uint8_t *)content, clen, &cp) != clen)
            return pf_errf(err, "%s.content: expected exactly one character", where);
        step.kind = PF_DEC_STRIP;
        step.strip_char = cp;
        step.strip_start = (size_t)start;
        step.strip_stop = (size_t)stop;
    } else {
        return pf_errf(
            err,
            "%s: decoder type \"%s\" is not supported (supported: Replace, ByteFallback, Fuse, Strip, "
            "Sequence)",
            where, type);
    }
    return add_dec(tok, step, err);
}

/* ------------------------------------------------------------------------------------------------ */
/* model                                                                                             */

typedef struct load_ctx {
    const cJSON *vocab, *merges, *added;
    uint32_t vocab_count;
    uint64_t max_model_id;
    size_t vocab_bytes, added_bytes;
    uint32_t id_cap; /* size of the id-indexed tables */
} load_ctx;

static int parse_model_options(pf_tokenizer *tok, const cJSON *model, load_ctx *lc, pf_err *err)
{
    const char *w = "model";
    if (!cJSON_IsObject(model))
        return pf_errf(err, "model: expected an object, got %s", type_name(model));
    const char *type;
    if (get_opt_string(model, "type", w, &type, err) != 0)
        return -1;
    if (!type)
        return pf_errf(err, "model.type: missing (only \"BPE\" is supported)");
    if (strcmp(type, "BPE") != 0)
        return pf_errf(err, "model.type: \"%s\" is not supported (only BPE)", type);

    const cJSON *dropout;
    if (get_field(model, "dropout", w, &dropout, err) != 0)
        return -1;
    if (dropout && !cJSON_IsNull(dropout)) {
        if (!cJSON_IsNumber(dropout) || !(dropout->valuedouble >= 0.0 && dropout->valuedouble <= 1.0))
            return pf_errf(err, "model.dropout: expected null or a number in [0, 1]");
        if (dropout->valuedouble != 0.0)
            return pf_errf(err, "model.dropout: %g is not supported (BPE dropout is random; only null or 0)",
                           dropout->valuedouble);
    }
    const char *prefix, *suffix, *unk;
    if (get_opt_string(model, "continuing_subword_prefix", w, &prefix, err) != 0 ||
        get_opt_string(model, "end_of_word_suffix", w, &suffix, err) != 0 ||
        get_opt_string(model, "unk_token", w, &unk, err) != 0)
        return -1;
    if (prefix && prefix[0])
        return pf_errf(err, "model.continuing_subword_prefix: \"%s\" is not supported (only null)", prefix);
    if (suffix && suffix[0])
        return pf_errf(err, "model.end_of_word_suffix: \"%s\" is not supported (only null)", suffix);
    if (get_bool(model, "fuse_unk", w, false, false, &tok->fuse_unk, err) != 0 ||
        get_bool(model, "byte_fallback", w, false, false, &tok->byte_fallback, err) != 0 ||
        get_bool(model, "ignore_merges", w, false, false, &tok->ignore_merges, err) != 0)
        return -1;
    if (unk) {
        tok->has_unk = true;
        tok->unk_token = dup_mem(unk, strlen(unk));
        if (!tok->unk_token)
            return pf_errf(err, "model.unk_token: out of memory");
    }
    if (get_field(model, "vocab", w, &lc->vocab, err) != 0 ||
        get_field(model, "merges", w, &lc->merges, err) != 0)
        return -1;
    if (!lc->vocab || !cJSON_IsObject(lc->vocab))
        return pf_errf(err, "model.vocab: expected an object, got %s", type_name(lc->vocab));
    if (!lc->merges || !cJSON_IsArray(lc->merges))
        return pf_errf(err, "model.merges: expected an array, got %s", type_name(lc->merges));
    return 0;
}

/* First pass over the vocab: count, sizes, id range, which code-point blocks hold single-char tokens. */
static int scan_vocab(pf_tokenizer *tok, load_ctx *lc, uint8_t *cp_used, pf_err *err)
{
    uint64_t count = 0, bytes = 0, max_id = 0;
    for (const cJSON *c = lc->vocab->child; c; c = c->next) {
        uint64_t id;
        if (as_uint(c, (double)PF_TOK_MAX_ID - 1, &id) != 0) {
            char b[80];
            return pf_errf(err, "model.vocab[\"%s\"]: expected an integer id in [0, %u], got %s",
                           show(c->string, strlen(c->string), b, sizeof b), PF_TOK_MAX_ID - 1,
                           cJSON_IsNumber(c) ? "a number out of range" : type_name(c));
        }
        size_t len = strlen(c->string);
        uint32_t cp;
        if (len > 0 && len <= 4 && pf_utf8_seq((const uint8_t *)c->string, len, &cp) == len)
            cp_used[cp >> 8] = 1;
        if (id > max_id)
            max_id = id;
        bytes += len;
        count++;
    }
    if (bytes > UINT32_MAX / 2)
        return pf_errf(err, "model.vocab: %llu bytes of token text is too much", (unsigned long long)bytes);
    lc->vocab_count = (uint32_t)count;
    lc->max_model_id = count ? max_id : 0;
    lc->vocab_bytes = (size_t)bytes;
    tok->model_vocab_count = (uint32_t)count;
    return 0;
}

static uint32_t pool_add(pf_tokenizer *tok, const char *s, size_t len)
{
    uint32_t off = (uint32_t)tok->pool_len;
    memcpy(tok->pool + tok->pool_len, s, len);
    tok->pool_len += len;
    return off;
}

/* The vocab and merges loops below work in batches: hash a batch of strings, prefetch their table slots,
 * then probe. The tables are far bigger than the caches, so this hides most of the memory latency
 * (merges: ~450 ns -> ~100 ns each). */
#define BATCH 32

static int vocab_one(pf_tokenizer *tok, const char *s, size_t len, uint32_t id, uint64_t h, pf_err *err)
{
    char b[80];
    if (check_utf8(s, len, "model.vocab", err) != 0)
        return pf_err_prefix(err, "token \"%s\"", show(s, len, b, sizeof b));
    if (tok->model_tok[id].len != PF_TOK_NO_ID) {
        char b2[80];
        const pf_tok_span *o = &tok->model_tok[id];
        return pf_errf(err, "model.vocab: id %u is used twice (\"%s\" and \"%s\")", id,
                       show(tok->pool + o->off, o->len, b2, sizeof b2), show(s, len, b, sizeof b));
    }
    tok->model_tok[id] = (pf_tok_span){pool_add(tok, s, len), (uint32_t)len};
    uint32_t existing;
    if (!pf_tok_vmap_insert(&tok->vocab, tok->pool, tok->model_tok, h, s, len, id, &existing))
        return pf_errf(err, "model.vocab: token \"%s\" appears twice", show(s, len, b, sizeof b));
    if (len > tok->max_token_len)
        tok->max_token_len = (uint32_t)len;
    uint32_t cp;
    if (len > 0 && len <= 4 && pf_utf8_seq((const uint8_t *)s, len, &cp) == len)
        tok->cp_ids[(size_t)tok->cp_block[cp >> 8] * 256 + (cp & 0xFF)] = (int32_t)id;
    /* byte-fallback tokens exactly as Rust formats them: format!("<{b:#04X}>") = "<0x0A>" */
    if (len == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>') {
        static const char hex[] = "0123456789ABCDEF";
        const char *h1 = memchr(hex, s[3], 16), *h2 = memchr(hex, s[4], 16);
        if (h1 && h2 && s[3] && s[4])
            tok->byte_id[(h1 - hex) * 16 + (h2 - hex)] = (int32_t)id;
    }
    return 0;
}

static int fill_vocab(pf_tokenizer *tok, load_ctx *lc, pf_err *err)
{
    const cJSON *c = lc->vocab->child;
    while (c) {
        const char *str[BATCH];
        size_t len[BATCH];
        uint32_t id[BATCH];
        uint64_t h[BATCH];
        int m = 0;
        for (; c && m < BATCH; c = c->next, m++) {
            str[m] = c->string;
            len[m] = strlen(c->string);
            id[m] = (uint32_t)c->valuedouble; /* range checked in scan_vocab */
            h[m] = pf_tok_str_hash(str[m], len[m]);
            pf_tok_vmap_prefetch(&tok->vocab, h[m]);
        }
        for (int k = 0; k < m; k++)
            if (vocab_one(tok, str[k], len[k], id[k], h[k], err) != 0)
                return -1;
    }
    return 0;
}

typedef struct merge_job {
    const char *a, *b;
    size_t alen, blen, idx;
    char *cat; /* a + b, NULL if longer than any token */
    uint64_t ha, hb, hab, key;
    int32_t ia, ib, iab;
} merge_job;

/* Read merge number idx (element c) into j; returns 1 to use it, 0 to skip it, -1 on error. */
static int merge_parse(const cJSON *c, bool legacy, size_t idx, merge_job *j, pf_err *err)
{
    char b[80];
    j->idx = idx;
    if (legacy) {
        if (!cJSON_IsString(c))
            return pf_errf(err, "model.merges[%zu]: expected a string like the first merge, got %s", idx,
                           type_name(c));
        const char *s = c->valuestring;
        /* convert_merges_to_hashmap skips "#version" lines, also inside tokenizer.json */
        if (s[0] == '#' && strncmp(s, "#version", 8) == 0)
            return 0;
        const char *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return pf_errf(err, "model.merges[%zu]: \"%s\" is not two tokens separated by one space", idx,
                           show(s, strlen(s), b, sizeof b));
        j->a = s;
        j->alen = (size_t)(sp - s);
        j->b = sp + 1;
        j->blen = strlen(j->b);
        return 1;
    }
    if (!cJSON_IsArray(c) || !c->child || !c->child->next || c->child->next->next ||
        !cJSON_IsString(c->child) || !cJSON_IsString(c->child->next))
        return pf_errf(err, "model.merges[%zu]: expected a pair of strings [\"a\", \"b\"]", idx);
    j->a = c->child->valuestring;
    j->b = c->child->next->valuestring;
    j->alen = strlen(j->a);
    j->blen = strlen(j->b);
    return 1;
}

static int fill_merges(pf_tokenizer *tok, load_ctx *lc, pf_err *err)
{
    const cJSON *c = lc->merges->child;
    bool legacy = c && cJSON_IsString(c);
    size_t slot = (size_t)tok->max_token_len + 1;
    char *cat = malloc(slot * BATCH);
    if (!cat)
        return pf_errf(err, "model.merges: out of memory");
    const pf_tok_vocabmap *v = &tok->vocab;
    uint32_t rank = 0;
    size_t idx = 0;
    int rc = -1;
    char b[80], b2[80];
    while (c) {
        merge_job job[BATCH];
        int m = 0;
        /* 1: parse, hash, prefetch the three vocab slots */
        for (; c && m < BATCH; c = c->next, idx++) {
            merge_job *j = &job[m];
            int r = merge_parse(c, legacy, idx, j, err);
            if (r < 0)
                goto out;
            if (r == 0)
                continue;
            j->ha = pf_tok_str_hash(j->a, j->alen);
            j->hb = pf_tok_str_hash(j->b, j->blen);
            pf_tok_vmap_prefetch(v, j->ha);
            pf_tok_vmap_prefetch(v, j->hb);
            j->cat = NULL;
            if (j->alen + j->blen <= tok->max_token_len) {
                j->cat = cat + (size_t)m * slot;
                memcpy(j->cat, j->a, j->alen);
                memcpy(j->cat + j->alen, j->b, j->blen);
                j->hab = pf_tok_str_hash(j->cat, j->alen + j->blen);
                pf_tok_vmap_prefetch(v, j->hab);
            }
            m++;
        }
        /* 2: look the three strings up, prefetch the merge slot */
        for (int k = 0; k < m; k++) {
            merge_job *j = &job[k];
            j->ia = pf_tok_vmap_find(v, tok->pool, tok->model_tok, j->ha, j->a, j->alen);
            j->ib = pf_tok_vmap_find(v, tok->pool, tok->model_tok, j->hb, j->b, j->blen);
            j->iab = j->cat
                         ? pf_tok_vmap_find(v, tok->pool, tok->model_tok, j->hab, j->cat, j->alen + j->blen)
                         : -1;
            if (j->ia < 0 || j->ib < 0) {
                bool first = j->ia < 0;
                pf_errf(err, "model.merges[%zu]: token \"%s\" is not in the vocabulary", j->idx,
                        show(first ? j->a : j->b, first ? j->alen : j->blen, b, sizeof b));
                goto out;
            }
            if (j->iab < 0) {
                pf_errf(err, "model.merges[%zu]: merged token \"%s\" + \"%s\" is not in the vocabulary",
                        j->idx, show(j->a, j->alen, b, sizeof b), show(j->b, j->blen, b2, sizeof b2));
                goto out;
            }
            j->key = pf_tok_merge_key(j->ia, j->ib);
            pf_tok_merges_prefetch(&tok->merges, j->key);
        }
        /* 3: insert, in file order (a repeated pair keeps the later rank) */
        for (int k = 0; k < m; k++)
            pf_tok_merges_put(&tok->merges, job[k].ia, job[k].ib, rank++, job[k].iab);
    }
    rc = 0;
out:
    free(cat);
    return rc;
}

/* ------------------------------------------------------------------------------------------------ */
/* added tokens                                                                                      */

static int parse_added(pf_tokenizer *tok, load_ctx *lc, pf_err *err)
{
    const cJSON *arr = lc->added;
    size_t n = 0;
    if (arr)
        for (const cJSON *c = arr->child; c; c = c->next)
            n++;
    tok->added = calloc(n ? n : 1, sizeof *tok->added);
    if (!tok->added)
        return pf_errf(err, "added_tokens: out of memory");
    if (pf_tok_strmap_init(&tok->added_map, n, err, "added tokens") != 0)
        return -1;

    /* The Rust loader adds each token in file order (add_special_tokens / add_tokens) and only warns if
     * the id it assigns differs from the file's; we compute the same assignment and refuse a mismatch. */
    uint32_t max_added = 0;
    bool any_added = false;
    size_t i = 0;
    char where[64], b[80];
    for (const cJSON *c = arr ? arr->child : NULL; c; c = c->next, i++) {
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        if (!cJSON_IsObject(c))
            return pf_errf(err, "%s: expected an object, got %s", where, type_name(c));
        const char *content;
        uint64_t file_id;
        pf_tok_added t = {0};
        bool single_word;
        if (get_string(c, "content", where, &content, err) != 0 ||
            get_uint(c, "id", where, 4294967295.0, &file_id, err) != 0 ||
            get_bool(c, "special", where, true, false, &t.special, err) != 0 ||
            get_bool(c, "normalized", where, true, false, &t.normalized, err) != 0 ||
            get_bool(c, "lstrip", where, true, false, &t.lstrip, err) != 0 ||
            get_bool(c, "rstrip", where, true, false, &t.rstrip, err) != 0 ||
            get_bool(c, "single_word", where, true, false, &single_word, err) != 0)
            return -1;
        size_t len = strlen(content);
        if (len == 0)
            continue; /* the Rust library ignores empty added tokens */
        if (check_utf8(content, len, where, err) != 0)
            return -1;
        if (single_word)
            return pf_errf(err, "%s (\"%s\"): single_word=true is not supported", where,
                           show(content, len, b, sizeof b));
        if (pf_tok_added_get(tok, content, len) >= 0)
            return pf_errf(err, "%s: \"%s\" appears twice in added_tokens", where,
                           show(content, len, b, sizeof b));
        int32_t mid = pf_tok_vocab_get(tok, content, len);
        uint32_t id;
        if (mid >= 0) {
            id = (uint32_t)mid;
        } else if (!any_added) {
            id = lc->vocab_count;
        } else {
            id = (max_added >= lc->vocab_count || lc->vocab_count == 0) ? max_added + 1 : lc->vocab_count;
        }
        if (id != file_id)
            return pf_errf(err,
                           "%s (\"%s\"): id %llu in the file, but the tokenizers library would assign %u",
                           where, show(content, len, b, sizeof b), (unsigned long long)file_id, id);
        if (id >= lc->id_cap)
            return pf_errf(err, "%s: id %u out of range", where, id);
        t.id = id;
        t.content = (pf_tok_span){pool_add(tok, content, len), (uint32_t)len};
        size_t k = tok->n_added++;
        tok->added[k] = t;
        uint32_t dummy;
        pf_tok_strmap_insert(&tok->added_map, tok->pool, &tok->added->content, sizeof(pf_tok_added), content,
                             len, (uint32_t)k, &dummy);
        if (!any_added || id > max_added)
            max_added = id;
        any_added = true;
    }
    return 0;
}

/* Build the two matchers: the Rust library lists special tokens first, then the others, each in the
 * order they were added, and splits them by their `normalized` flag. */
static int build_tries(pf_tokenizer *tok, pf_err *err)
{
    size_t n = tok->n_added;
    const char **pats = calloc(n ? n : 1, sizeof *pats);
    size_t *lens = calloc(n ? n : 1, sizeof *lens);
    int32_t *vals = calloc(n ? n : 1, sizeof *vals);
    char **owned = calloc(n ? n : 1, sizeof *owned);
    int rc = -1;
    if (!pats || !lens || !vals || !owned) {
        pf_errf(err, "added tokens: out of memory");
        goto out;
    }
    for (int normalized = 0; normalized <= 1; normalized++) {
        size_t m = 0;
        for (int pass = 0; pass < 2; pass++) {
            for (size_t k = 0; k < n; k++) {
                const pf_tok_added *t = &tok->added[k];
                if (t->special != (pass == 0) || t->normalized != (normalized == 1))
                    continue;
                const char *s = tok->pool + t->content.off;
                size_t len = t->content.len;
                if (normalized) {
                    /* the normalized matcher looks for the normalized form of the content */
                    char *buf = NULL;
                    size_t cap = 0, olen = 0;
                    if (pf_tok_normalize(tok, s, len, &buf, &cap, &olen, err) != 0) {
                        free(buf);
                        goto out;
                    }
                    owned[k] = buf;
                    if (olen == 0) {
                        char b[80];
                        pf_errf(err, "added token \"%s\": normalizes to an empty string",
                                show(s, len, b, sizeof b));
                        goto out;
                    }
                    s = buf;
                    len = olen;
                }
                pats[m] = s;
                lens[m] = len;
                vals[m] = (int32_t)k;
                m++;
            }
        }
        pf_tok_trie *t = normalized ? &tok->trie_norm : &tok->trie_raw;
        if (pf_tok_trie_build(t, pats, lens, vals, m, err) != 0)
            goto out;
    }
    rc = 0;
out:
    if (owned)
        for (size_t k = 0; k < n; k++)
            free(owned[k]);
    free(owned);
    free(pats);
    free(lens);
    free(vals);
    return rc;
}

/* Can BPE words be cut before each U+2581 ("▁") that follows another character? Only if no merge can
 * ever join the two sides: the right side's first symbol is the token "▁" itself (1), the left side's
 * last symbol string ends in a character other than "▁" (a text character, '>' of a byte token, or the
 * last character of a non-empty unk token not ending in "▁") (3), and no token contains such a character
 * followed by "▁" (2), so no pair across the cut has its concatenation in the vocabulary. ignore_merges
 * looks words up whole, so it disables the cut (4). True for Gemma; checked, not assumed. */
static void check_word_split(pf_tokenizer *tok)
{
    static const char SP[] = "\xE2\x96\x81";
    tok->split_at_space = false;
    if (tok->ignore_merges || tok->cp_block[0x2581 >> 8] < 0 ||
        tok->cp_ids[(size_t)tok->cp_block[0x2581 >> 8] * 256 + 0x81] < 0)
        return;
    if (tok->has_unk) {
        size_t ul = strlen(tok->unk_token);
        if (ul == 0 || (ul >= 3 && memcmp(tok->unk_token + ul - 3, SP, 3) == 0))
            return;
    }
    /* (2), skipping quickly over tokens without a 0xE2 byte */
    for (uint32_t id = 0; id < tok->n_ids; id++) {
        const pf_tok_span *sp = &tok->model_tok[id];
        if (sp->len == PF_TOK_NO_ID || sp->len < 4)
            continue;
        const char *t = tok->pool + sp->off, *end = t + sp->len;
        for (const char *h = t + 1; (h = memchr(h, 0xE2, (size_t)(end - h))) != NULL; h++)
            if (end - h >= 3 && memcmp(h, SP, 3) == 0 && (h - t < 3 || memcmp(h - 3, SP, 3) != 0))
                return;
    }
    tok->split_at_space = true;
}

/* ------------------------------------------------------------------------------------------------ */

static int check_top_level(pf_tokenizer *tok, const cJSON *root, load_ctx *lc, pf_err *err)
{
    if (!cJSON_IsObject(root))
        return pf_errf(err, "expected a JSON object at the top level, got %s", type_name(root));
    const cJSON *v;
    if (get_field(root, "version", "tokenizer", &v, err) != 0)
        return -1;
    if (v && (!cJSON_IsString(v) || strcmp(v->valuestring, "1.0") != 0))
        return pf_errf(err, "version: expected \"1.0\"");
    if (get_field(root, "truncation", "tokenizer", &v, err) != 0)
        return -1;
    if (v && !cJSON_IsNull(v))
        return pf_errf(err, "truncation: only null is supported (encode must not truncate)");
    if (get_field(root, "padding", "tokenizer", &v, err) != 0)
        return -1;
    if (v && !cJSON_IsNull(v))
        return pf_errf(err, "padding: only null is supported (encode must not pad)");
    if (get_field(root, "pre_tokenizer", "tokenizer", &v, err) != 0)
        return -1;
    if (v && !cJSON_IsNull(v)) {
        const cJSON *t = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "type") : NULL;
        return pf_errf(err, "pre_tokenizer: \"%s\" is not supported (only null)",
                       t && cJSON_IsString(t) ? t->valuestring : type_name(v));
    }
    if (get_field(root, "post_processor", "tokenizer", &v, err) != 0)
        return -1;
    if (v && !cJSON_IsNull(v)) {
        const cJSON *t = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "type") : NULL;
        if (!t || !cJSON_IsString(t) || strcmp(t->valuestring, "TemplateProcessing") != 0)
            return pf_errf(err, "post_processor: \"%s\" is not supported (only null or TemplateProcessing)",
                           t && cJSON_IsString(t) ? t->valuestring : type_name(v));
        /* TemplateProcessing only adds special tokens; encode never asks for them and PaliGemmaProcessor
         * replaces the template with one that adds none, so it has no effect on any output here. */
    }
    if (get_field(root, "normalizer", "tokenizer", &v, err) != 0 ||
        parse_normalizer(tok, v, "normalizer", 0, err) != 0)
        return -1;
    if (get_field(root, "decoder", "tokenizer", &v, err) != 0)
        return -1;
    if (v && !cJSON_IsNull(v)) {
        tok->has_decoder = true;
        if (parse_decoder(tok, v, "decoder", 0, err) != 0)
            return -1;
    }
    if (get_field(root, "added_tokens", "tokenizer", &lc->added, err) != 0)
        return -1;
    if (!lc->added)
        return pf_errf(err, "added_tokens: missing");
    if (!cJSON_IsArray(lc->added))
        return pf_errf(err, "added_tokens: expected an array, got %s", type_name(lc->added));
    const cJSON *model;
    if (get_field(root, "model", "tokenizer", &model, err) != 0)
        return -1;
    if (!model)
        return pf_errf(err, "model: missing");
    return parse_model_options(tok, model, lc, err);
}

static int build(pf_tokenizer *tok, const cJSON *root, pf_err *err)
{
    load_ctx lc = {0};
    for (int i = 0; i < 256; i++)
        tok->byte_id[i] = -1;
    tok->unk_id = -1;
    if (check_top_level(tok, root, &lc, err) != 0)
        return -1;

    uint8_t *cp_used = calloc(0x1100, 1);
    if (!cp_used)
        return pf_errf(err, "out of memory");
    if (scan_vocab(tok, &lc, cp_used, err) != 0) {
        free(cp_used);
        return -1;
    }
    size_t n_added_entries = 0;
    for (const cJSON *c = lc.added->child; c; c = c->next) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(c, "content");
        if (s && cJSON_IsString(s))
            lc.added_bytes += strlen(s->valuestring);
        n_added_entries++;
    }
    /* An added token gets a model id or the next id above everything seen so far, so ids stay below
     * max(max model id + 1, vocab count) + number of added tokens. Refuse sparse id spaces that would
     * make the id tables much larger than the file's content. */
    uint64_t cap = (lc.vocab_count ? lc.max_model_id + 1 : 0);
    if (cap < lc.vocab_count)
        cap = lc.vocab_count;
    cap += n_added_entries;
    uint64_t entries = (uint64_t)lc.vocab_count + n_added_entries;
    if (cap > PF_TOK_MAX_ID || (lc.vocab_count && lc.max_model_id >= 8 * entries + 1024)) {
        free(cp_used);
        return pf_errf(err, "model.vocab: ids up to %llu for %llu tokens: id space too large or too sparse",
                       (unsigned long long)lc.max_model_id, (unsigned long long)entries);
    }
    lc.id_cap = (uint32_t)cap;

    tok->pool_bytes = lc.vocab_bytes + lc.added_bytes + 1;
    tok->pool = pf_tok_big_alloc(tok->pool_bytes, err, "token strings");
    tok->id_tables_bytes = (size_t)lc.id_cap * sizeof(pf_tok_span);
    tok->model_tok = pf_tok_big_alloc(tok->id_tables_bytes, err, "id table");
    tok->any_tok = pf_tok_big_alloc(tok->id_tables_bytes, err, "id table");
    tok->id_flags = calloc(lc.id_cap ? lc.id_cap : 1, 1);
    tok->cp_block = malloc(0x1100 * sizeof(int32_t));
    size_t n_blocks = 0;
    for (size_t k = 0; k < 0x1100; k++)
        n_blocks += cp_used[k];
    tok->cp_ids_count = n_blocks * 256;
    tok->cp_ids = malloc((tok->cp_ids_count ? tok->cp_ids_count : 1) * sizeof(int32_t));
    if (!tok->pool || !tok->model_tok || !tok->any_tok || !tok->id_flags || !tok->cp_block || !tok->cp_ids) {
        free(cp_used);
        return pf_errf(err, "out of memory for %u ids", lc.id_cap);
    }
    int32_t blk = 0;
    for (size_t k = 0; k < 0x1100; k++)
        tok->cp_block[k] = cp_used[k] ? blk++ : -1;
    free(cp_used);
    memset(tok->cp_ids, 0xFF, tok->cp_ids_count * sizeof(int32_t));
    memset(tok->model_tok, 0xFF, tok->id_tables_bytes);

    double t0 = pf_now();
    if (pf_tok_vmap_init(&tok->vocab, lc.vocab_count, err) != 0 || fill_vocab(tok, &lc, err) != 0)
        return -1;
    double t1 = pf_now();
    size_t n_merges = 0;
    for (const cJSON *c = lc.merges->child; c; c = c->next)
        n_merges++;
    if (pf_tok_merges_init(&tok->merges, n_merges, err) != 0 || fill_merges(tok, &lc, err) != 0)
        return -1;
    pf_debug("tokenizer", "vocab %u tokens %.1f ms, merges %zu %.1f ms", lc.vocab_count, (t1 - t0) * 1e3,
             tok->merges.count, (pf_now() - t1) * 1e3);
    if (tok->has_unk)
        tok->unk_id = pf_tok_vocab_get(tok, tok->unk_token, strlen(tok->unk_token));

    if (parse_added(tok, &lc, err) != 0)
        return -1;

    /* id space and id -> token (added content first, as AddedVocabulary::simple_id_to_token) */
    uint32_t n_ids = lc.vocab_count ? (uint32_t)lc.max_model_id + 1 : 0;
    for (size_t k = 0; k < tok->n_added; k++)
        if (tok->added[k].id + 1 > n_ids)
            n_ids = tok->added[k].id + 1;
    tok->n_ids = n_ids;
    memcpy(tok->any_tok, tok->model_tok, tok->id_tables_bytes);
    for (size_t k = 0; k < tok->n_added; k++) {
        tok->any_tok[tok->added[k].id] = tok->added[k].content;
        if (tok->added[k].special)
            tok->id_flags[tok->added[k].id] |= PF_TOKF_SPECIAL;
    }
    check_word_split(tok);
    return build_tries(tok, err);
}

/* "\u0000" escapes (an unescaped backslash before u0000) would be truncated by cJSON. */
static const char *find_nul_escape(const char *s, size_t n)
{
    const char *p = s, *end = s + n;
    while (p < end && (p = memmem(p, (size_t)(end - p), "\\u0000", 6)) != NULL) {
        size_t bs = 0;
        for (const char *q = p; q > s && q[-1] == '\\'; q--)
            bs++;
        if (bs % 2 == 0)
            return p;
        p++;
    }
    return NULL;
}

static int parse_error(const char *data, size_t len, const char *at, pf_err *err)
{
    if (!at || at < data || at + 1 >= data + len)
        return pf_errf(err, "invalid JSON: unexpected end of input (truncated file?)");
    size_t off = (size_t)(at - data);
    size_t line = 1, col = 1;
    for (size_t i = 0; i < off; i++) {
        if (data[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    return pf_errf(err, "invalid JSON at byte %zu (line %zu, column %zu)", off, line, col);
}

int pf_tokenizer_load_mem(const char *data, size_t len, const char *name, pf_tokenizer **out, pf_err *err)
{
    *out = NULL;
    if (!name)
        name = "tokenizer.json";
    if (len > PF_TOK_MAX_FILE)
        return pf_errf(err, "%s: %zu bytes is larger than the %zu-byte limit", name, len, PF_TOK_MAX_FILE);
    if (len == 0)
        return pf_errf(err, "%s: empty file", name);
    const char *nul = memchr(data, 0, len);
    if (nul)
        return pf_errf(err, "%s: NUL byte at offset %zu (not a JSON text)", name, (size_t)(nul - data));
    const char *esc = find_nul_escape(data, len);
    if (esc)
        return pf_errf(err, "%s: string with \\u0000 at byte %zu: NUL characters in tokens are not supported",
                       name, (size_t)(esc - data));

    pf_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok)
        return pf_errf(err, "%s: out of memory", name);

    arena ar = {0};
    size_t hint = len * 4 + ((size_t)2 << 20);
    ar.chunk_size = hint < ((size_t)64 << 20) ? hint : ((size_t)64 << 20);
    ar.limit = len * 16 + ((size_t)64 << 20); /* bound the tree of a hostile "[0,0,0,...]" */
    const char *end = NULL, *err_at = NULL;
    cJSON *root;
    double t0 = pf_now();
    pthread_mutex_lock(&g_cjson_lock);
#ifndef PF_TOK_NO_ARENA
    g_arena = &ar;
    cJSON_Hooks hooks = {arena_malloc, arena_free};
    cJSON_InitHooks(&hooks);
#endif
    root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    if (!root)
        err_at = cJSON_GetErrorPtr();
#ifndef PF_TOK_NO_ARENA
    cJSON_InitHooks(NULL);
    g_arena = NULL;
#endif
    pthread_mutex_unlock(&g_cjson_lock);

    pf_debug("tokenizer", "%s: JSON parse %.1f ms (%zu bytes, tree %zu bytes)", name, (pf_now() - t0) * 1e3,
             len, ar.total);
    int rc;
    if (!root) {
        rc = ar.exhausted ? pf_errf(err, "JSON tree too large for memory (limit %zu bytes)", ar.limit)
                          : parse_error(data, len, err_at, err);
    } else {
        while (end && end < data + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
            end++;
        if (end && end < data + len)
            rc = pf_errf(err, "invalid JSON: trailing characters at byte %zu", (size_t)(end - data));
        else
            rc = build(tok, root, err);
    }
#ifdef PF_TOK_NO_ARENA
    cJSON_Delete(root);
#endif
    arena_release(&ar);
    if (rc != 0) {
        pf_tokenizer_free(tok);
        return pf_err_prefix(err, "%s", name);
    }
    *out = tok;
    return 0;
}

int pf_tokenizer_load(const char *path, pf_tokenizer **out, pf_err *err)
{
    *out = NULL;
    pf_map map;
    if (pf_map_file(path, &map, err) != 0)
        return -1;
    int rc = pf_tokenizer_load_mem((const char *)map.data, map.size, path, out, err);
    pf_unmap(&map);
    return rc;
}

void pf_tokenizer_free(pf_tokenizer *tok)
{
    if (!tok)
        return;
    pf_tok_big_free(tok->pool, tok->pool_bytes);
    pf_tok_big_free(tok->model_tok, tok->id_tables_bytes);
    pf_tok_big_free(tok->any_tok, tok->id_tables_bytes);
    free(tok->id_flags);
    pf_tok_vmap_free(&tok->vocab);
    pf_tok_strmap_free(&tok->added_map);
    pf_tok_merges_free(&tok->merges);
    free(tok->cp_block);
    free(tok->cp_ids);
    free(tok->unk_token);
    free(tok->added);
    pf_tok_trie_free(&tok->trie_raw);
    pf_tok_trie_free(&tok->trie_norm);
    for (size_t i = 0; i < tok->n_norm; i++) {
        free(tok->norm[i].pattern);
        free(tok->norm[i].content);
    }
    free(tok->norm);
    for (size_t i = 0; i < tok->n_dec; i++) {
        free(tok->dec[i].pattern);
        free(tok->dec[i].content);
    }
    free(tok->dec);
    free(tok);
}

/* ------------------------------------------------------------------------------------------------ */
/* lookups                                                                                           */

int32_t pf_tokenizer_token_to_id_n(const pf_tokenizer *tok, const char *token, size_t len)
{
    int32_t k = pf_tok_added_get(tok, token, len);
    if (k >= 0)
        return (int32_t)tok->added[k].id;
    return pf_tok_vocab_get(tok, token, len);
}

int32_t pf_tokenizer_token_to_id(const pf_tokenizer *tok, const char *token)
{
    return pf_tokenizer_token_to_id_n(tok, token, strlen(token));
}

const char *pf_tokenizer_id_to_token(const pf_tokenizer *tok, int32_t id, size_t *len)
{
    if (id < 0 || (uint32_t)id >= tok->n_ids || tok->any_tok[id].len == PF_TOK_NO_ID)
        return NULL;
    if (len)
        *len = tok->any_tok[id].len;
    return tok->pool + tok->any_tok[id].off;
}

size_t pf_tokenizer_vocab_size(const pf_tokenizer *tok)
{
    return tok->n_ids;
}

int pf_tokenizer_is_special(const pf_tokenizer *tok, int32_t id)
{
    return id >= 0 && (uint32_t)id < tok->n_ids && (tok->id_flags[id] & PF_TOKF_SPECIAL) ? 1 : 0;
}
