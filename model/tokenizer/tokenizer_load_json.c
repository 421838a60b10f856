/* tokenizer_load_json.c - reading tokenizer.json: the cJSON parse and the field readers.
 *
 * cJSON, not jansson, for this one file. Measured on the 17.8 MB PaliGemma file (2-core EPYC VM): jansson
 * ~600 ms; cJSON with malloc ~250-420 ms, nearly all of it page faults (the parse tree is ~69 MB of small
 * nodes); cJSON with an arena on transparent huge pages ~50-90 ms. So the tree goes into a throw-away arena
 * (mmap + MADV_HUGEPAGE) that is unmapped in one call after the walk. cJSON's allocation hooks are
 * process-global: the parse runs under a mutex and the hooks are reset to malloc/free before it is
 * released. Nothing else in paliflow uses cJSON (JSON lines elsewhere use jansson), so no other thread can be
 * inside cJSON meanwhile. Under sanitizers the arena is skipped (plain malloc, so ASan sees every cJSON
 * allocation).
 *
 * cJSON limits and how they are handled: strings are NUL-terminated C strings, so a "\u0000" escape in the
 * file is rejected up front (it would silently truncate a token); trailing garbage after the value is
 * rejected (cJSON would ignore it); numbers are doubles, so ids are checked to be integers in range
 * (pf_tok_as_uint); nesting is limited to 1000 levels by cJSON itself. One leniency: cJSON cannot tell 5 from
 * 5.0, so an integral float id is accepted where serde would refuse it.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/log.h"
#include "model/tokenizer/tokenizer_load.h"

#if defined(__SANITIZE_ADDRESS__)
#define PF_TOK_NO_ARENA 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define PF_TOK_NO_ARENA 1
#endif
#endif

/* ------------------------------------------------------------------------------------------------ */
/* parse arena                                                                                       */

struct pf_tok_arena_chunk {
    pf_tok_arena_chunk *next;
    size_t size, used;
};

typedef struct arena {
    pf_tok_arena_chunk *head;
    size_t chunk_size, total, limit;
    bool exhausted; /* an allocation hit the limit (or failed) */
} arena;

__attribute__((unused)) static void *arena_take(arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    pf_tok_arena_chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t hdr = (sizeof(pf_tok_arena_chunk) + 15) & ~(size_t)15;
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

static void release_chunks(pf_tok_arena_chunk *c)
{
    while (c) {
        pf_tok_arena_chunk *next = c->next;
        pf_tok_big_free(c, c->size);
        c = next;
    }
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
/* the parse                                                                                         */

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

int pf_tok_json_parse(const char *data, size_t len, const char *name, pf_tok_json *j, pf_err *err)
{
    j->root = NULL;
    j->chunks = NULL;
    const char *nul = memchr(data, 0, len);
    if (nul)
        return pf_errf(err, "NUL byte at offset %zu (not a JSON text)", (size_t)(nul - data));
    const char *esc = find_nul_escape(data, len);
    if (esc)
        return pf_errf(err, "string with \\u0000 at byte %zu: NUL characters in tokens are not supported",
                       (size_t)(esc - data));

    arena ar = {0};
    size_t hint = len * 4 + ((size_t)2 << 20);
    ar.chunk_size = hint < ((size_t)64 << 20) ? hint : ((size_t)64 << 20);
    ar.limit = len * 16 + ((size_t)64 << 20); /* bound the tree of a hostile "[0,0,0,...]" */
    const char *end = NULL, *err_at = NULL;
    double t0 = pf_now();
    pthread_mutex_lock(&g_cjson_lock);
#ifndef PF_TOK_NO_ARENA
    g_arena = &ar;
    cJSON_Hooks hooks = {arena_malloc, arena_free};
    cJSON_InitHooks(&hooks);
#endif
    j->root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    if (!j->root)
        err_at = cJSON_GetErrorPtr();
#ifndef PF_TOK_NO_ARENA
    cJSON_InitHooks(NULL);
    g_arena = NULL;
#endif
    pthread_mutex_unlock(&g_cjson_lock);
    j->chunks = ar.head;

    pf_debug("tokenizer", "%s: JSON parse %.1f ms (%zu bytes, tree %zu bytes)", name, (pf_now() - t0) * 1e3,
             len, ar.total);
    if (!j->root)
        return ar.exhausted ? pf_errf(err, "JSON tree too large for memory (limit %zu bytes)", ar.limit)
                            : parse_error(data, len, err_at, err);
    while (end && end < data + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (end && end < data + len)
        return pf_errf(err, "invalid JSON: trailing characters at byte %zu", (size_t)(end - data));
    return 0;
}

void pf_tok_json_free(pf_tok_json *j)
{
#ifdef PF_TOK_NO_ARENA
    cJSON_Delete(j->root);
#endif
    release_chunks(j->chunks);
    j->root = NULL;
    j->chunks = NULL;
}

/* ------------------------------------------------------------------------------------------------ */
/* field readers                                                                                     */

/* Print a token for an error message: at most 60 bytes, control characters escaped. */
const char *pf_tok_show(const char *s, size_t len, char *buf, size_t cap)
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

const char *pf_tok_type_name(const cJSON *j)
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
int pf_tok_get_field(const cJSON *obj, const char *key, const char *where, const cJSON **out, pf_err *err)
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

int pf_tok_get_bool(const cJSON *obj, const char *key, const char *where, bool required, bool dflt, bool *out,
                    pf_err *err)
{
    const cJSON *v;
    if (pf_tok_get_field(obj, key, where, &v, err) != 0)
        return -1;
    if (!v) {
        if (required)
            return pf_errf(err, "%s: missing field \"%s\"", where, key);
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsBool(v))
        return pf_errf(err, "%s.%s: expected a boolean, got %s", where, key, pf_tok_type_name(v));
    *out = cJSON_IsTrue(v);
    return 0;
}

/* Optional string (null/absent -> *out NULL). */
int pf_tok_get_opt_string(const cJSON *obj, const char *key, const char *where, const char **out, pf_err *err)
{
    const cJSON *v;
    *out = NULL;
    if (pf_tok_get_field(obj, key, where, &v, err) != 0)
        return -1;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsString(v))
        return pf_errf(err, "%s.%s: expected a string or null, got %s", where, key, pf_tok_type_name(v));
    *out = v->valuestring;
    return 0;
}

int pf_tok_get_string(const cJSON *obj, const char *key, const char *where, const char **out, pf_err *err)
{
    if (pf_tok_get_opt_string(obj, key, where, out, err) != 0)
        return -1;
    if (!*out)
        return pf_errf(err, "%s: missing string field \"%s\"", where, key);
    return 0;
}

int pf_tok_get_uint(const cJSON *obj, const char *key, const char *where, double max, uint64_t *out,
                    pf_err *err)
{
    const cJSON *v;
    if (pf_tok_get_field(obj, key, where, &v, err) != 0)
        return -1;
    if (!v)
        return pf_errf(err, "%s: missing field \"%s\"", where, key);
    if (pf_tok_as_uint(v, max, out) != 0)
        return pf_errf(err, "%s.%s: expected an integer in [0, %.0f], got %s", where, key, max,
                       cJSON_IsNumber(v) ? "a number out of range" : pf_tok_type_name(v));
    return 0;
}

char *pf_tok_dup_mem(const char *s, size_t len)
{
    char *p = malloc(len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

/* {"String": "x"} -> x; {"Regex": ...} and anything else are rejected. */
int pf_tok_get_string_pattern(const cJSON *obj, const char *where, const char **out, pf_err *err)
{
    const cJSON *pat;
    if (pf_tok_get_field(obj, "pattern", where, &pat, err) != 0)
        return -1;
    if (!pat || !cJSON_IsObject(pat))
        return pf_errf(err, "%s.pattern: expected an object, got %s", where, pf_tok_type_name(pat));
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(pat, "String");
    if (!s) {
        if (cJSON_GetObjectItemCaseSensitive(pat, "Regex"))
            return pf_errf(err, "%s.pattern: Regex patterns are not supported (only String)", where);
        return pf_errf(err, "%s.pattern: expected {\"String\": ...}", where);
    }
    if (!cJSON_IsString(s))
        return pf_errf(err, "%s.pattern.String: expected a string, got %s", where, pf_tok_type_name(s));
    if (s->valuestring[0] == '\0')
        return pf_errf(err, "%s.pattern.String: empty pattern is not supported", where);
    *out = s->valuestring;
    return 0;
}
