/* tokenizer_load.h - what the tokenizer.json loader's files share (model/tokenizer_load*.c only; the API is
 * tokenizer.h, the tokenizer's layout tokenizer_internal.h).
 *
 *   tokenizer_load.c        the entry points: parse, check the top level, build the tables in order, free
 *   tokenizer_load_json.c   the cJSON parse (arena, lock, its limits), readers naming the field at fault
 *   tokenizer_load_model.c  the BPE model: options, vocabulary, merges, the word-split check
 *   tokenizer_load_added.c  added tokens and their two matchers
 *   tokenizer_load_steps.c  normalizer and decoder steps
 */
#ifndef PF_MODEL_TOKENIZER_LOAD_H
#define PF_MODEL_TOKENIZER_LOAD_H

#include <math.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "model/tokenizer/tokenizer_internal.h"

/* ---- the parsed file (tokenizer_load_json.c) ---- */

typedef struct pf_tok_arena_chunk pf_tok_arena_chunk;

typedef struct pf_tok_json {
    cJSON *root;
    pf_tok_arena_chunk *chunks;   /* the tree's memory (none under sanitizers: the tree is malloc'd) */
} pf_tok_json;

/* Parse DATA[0..len) (NAME for the debug log) into J->root, refusing what cJSON would get wrong (NUL bytes,
 * "\u0000" escapes, trailing characters) and trees too large for the file. J must be released with
 * pf_tok_json_free whatever the result. */
int pf_tok_json_parse(const char *data, size_t len, const char *name, pf_tok_json *j, pf_err *err);
void pf_tok_json_free(pf_tok_json *j);

/* ---- reading fields: every error names WHERE and the key ---- */

/* Print a token for an error message: at most 60 bytes, control characters escaped. */
const char *pf_tok_show(const char *s, size_t len, char *buf, size_t cap);
/* "a string", "an object", ... ("missing" for NULL). */
const char *pf_tok_type_name(const cJSON *j);
/* Look up a key (NULL when absent); fails on duplicates so that a file cannot say two things at once. */
int pf_tok_get_field(const cJSON *obj, const char *key, const char *where, const cJSON **out, pf_err *err);
int pf_tok_get_bool(const cJSON *obj, const char *key, const char *where, bool required, bool dflt, bool *out,
                    pf_err *err);
/* Optional string (null/absent -> *out NULL). */
int pf_tok_get_opt_string(const cJSON *obj, const char *key, const char *where, const char **out,
                          pf_err *err);
int pf_tok_get_string(const cJSON *obj, const char *key, const char *where, const char **out, pf_err *err);
/* An integer in [0, max]. */
int pf_tok_get_uint(const cJSON *obj, const char *key, const char *where, double max, uint64_t *out,
                    pf_err *err);
/* {"String": "x"} -> x; {"Regex": ...} and anything else are rejected. */
int pf_tok_get_string_pattern(const cJSON *obj, const char *where, const char **out, pf_err *err);
char *pf_tok_dup_mem(const char *s, size_t len);

/* A JSON number that is an integer in [0, max] (cJSON numbers are doubles). Inline: once per vocab entry. */
static inline int pf_tok_as_uint(const cJSON *v, double max, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > max || d != floor(d))
        return -1;
    *out = (uint64_t)d;
    return 0;
}

static inline int pf_tok_check_utf8(const char *s, size_t len, const char *where, pf_err *err)
{
    size_t bad = pf_utf8_check((const uint8_t *)s, len);
    if (bad != len)
        return pf_errf(err, "%s: invalid UTF-8 at byte %zu", where, bad);
    return 0;
}

/* Append a string to the pool (sized for all of them before the first call); returns its offset. */
static inline uint32_t pf_tok_pool_add(pf_tokenizer *tok, const char *s, size_t len)
{
    uint32_t off = (uint32_t)tok->pool_len;
    memcpy(tok->pool + tok->pool_len, s, len);
    tok->pool_len += len;
    return off;
}

/* ---- the load, section by section ---- */

/* What the top-level pass finds for the later ones. */
typedef struct load_ctx {
    const cJSON *vocab, *merges, *added;
    uint32_t vocab_count;
    uint64_t max_model_id;
    size_t vocab_bytes, added_bytes;
    uint32_t id_cap; /* size of the id-indexed tables */
} load_ctx;

/* tokenizer_load_steps.c: normalizer J (null: none) and decoder J (an object) at WHERE, Sequences flattened
 * into tok->norm / tok->dec. */
int pf_tok_parse_normalizer(pf_tokenizer *tok, const cJSON *j, const char *where, int depth, pf_err *err);
int pf_tok_parse_decoder(pf_tokenizer *tok, const cJSON *j, const char *where, int depth, pf_err *err);

/* tokenizer_load_model.c */
/* model.type and the BPE options; finds model.vocab and model.merges for the passes below. */
int pf_tok_parse_model_options(pf_tokenizer *tok, const cJSON *model, load_ctx *lc, pf_err *err);
/* First pass over the vocab: count, sizes, id range, which code-point blocks hold single-char tokens. */
int pf_tok_scan_vocab(pf_tokenizer *tok, load_ctx *lc, uint8_t *cp_used, pf_err *err);
/* The vocabulary into the pool, the id tables and the string -> id map (tables allocated by the caller). */
int pf_tok_fill_vocab(pf_tokenizer *tok, load_ctx *lc, pf_err *err);
int pf_tok_fill_merges(pf_tokenizer *tok, load_ctx *lc, pf_err *err);
void pf_tok_check_word_split(pf_tokenizer *tok);

/* tokenizer_load_added.c */
int pf_tok_parse_added(pf_tokenizer *tok, load_ctx *lc, pf_err *err);
int pf_tok_build_tries(pf_tokenizer *tok, pf_err *err);

#endif
