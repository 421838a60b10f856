/* tokenizer_load_steps.c - the normalizer and decoder sections of tokenizer.json: a step or a Sequence of
 * steps (flattened here into tok->norm / tok->dec, in order), of the kinds tokenizer.h lists; any other kind
 * is an error naming it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer/tokenizer_load.h"

#define PF_TOK_MAX_DEPTH 16 /* nested normalizer / decoder Sequences */

typedef int (*parse_step_fn)(pf_tokenizer *tok, const cJSON *j, const char *where, int depth, pf_err *err);

/* What every step starts with: not nested too deeply, an object, its "type". */
static int step_type(const cJSON *j, const char *where, int depth, const char **type, pf_err *err)
{
    if (depth > PF_TOK_MAX_DEPTH)
        return pf_errf(err, "%s: Sequences nested too deeply", where);
    if (!cJSON_IsObject(j))
        return pf_errf(err, "%s: expected an object or null, got %s", where, pf_tok_type_name(j));
    return pf_tok_get_string(j, "type", where, type, err);
}

/* A Sequence: each element of its array KEY parsed by PARSE one level deeper, named "WHERE.KEY[i]". */
static int parse_sequence(pf_tokenizer *tok, const cJSON *j, const char *key, const char *where, int depth,
                          parse_step_fn parse, pf_err *err)
{
    const cJSON *list;
    if (pf_tok_get_field(j, key, where, &list, err) != 0)
        return -1;
    if (!cJSON_IsArray(list))
        return pf_errf(err, "%s.%s: expected an array, got %s", where, key, pf_tok_type_name(list));
    int i = 0;
    for (const cJSON *c = list->child; c; c = c->next, i++) {
        char sub[256];
        snprintf(sub, sizeof sub, "%s.%s[%d]", where, key, i);
        if (parse(tok, c, sub, depth + 1, err) != 0)
            return -1;
    }
    return 0;
}

/* Replace (normalizer or decoder): a String pattern and its replacement, checked to be UTF-8, copied. */
static int parse_replace(const cJSON *j, const char *where, char **pattern, size_t *pattern_len,
                         char **content, size_t *content_len, pf_err *err)
{
    const char *pat, *with;
    if (pf_tok_get_string_pattern(j, where, &pat, err) != 0 ||
        pf_tok_get_string(j, "content", where, &with, err) != 0)
        return -1;
    *pattern_len = strlen(pat);
    *content_len = strlen(with);
    if (pf_tok_check_utf8(pat, *pattern_len, where, err) != 0 ||
        pf_tok_check_utf8(with, *content_len, where, err) != 0)
        return -1;
    *pattern = pf_tok_dup_mem(pat, *pattern_len);
    *content = pf_tok_dup_mem(with, *content_len);
    if (!*pattern || !*content) {
        free(*pattern);
        free(*content);
        *pattern = *content = NULL;
        return pf_errf(err, "%s: out of memory", where);
    }
    return 0;
}

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

int pf_tok_parse_normalizer(pf_tokenizer *tok, const cJSON *j, const char *where, int depth, pf_err *err)
{
    if (!j || cJSON_IsNull(j))
        return 0;
    const char *type;
    if (step_type(j, where, depth, &type, err) != 0)
        return -1;
    if (strcmp(type, "Sequence") == 0)
        return parse_sequence(tok, j, "normalizers", where, depth, pf_tok_parse_normalizer, err);
    pf_tok_norm step = {0};
    if (strcmp(type, "Replace") == 0) {
        step.kind = PF_NORM_REPLACE;
        if (parse_replace(j, where, &step.pattern, &step.pattern_len, &step.content, &step.content_len,
                          err) != 0)
            return -1;
    } else if (strcmp(type, "Prepend") == 0) {
        const char *prepend;
        if (pf_tok_get_string(j, "prepend", where, &prepend, err) != 0)
            return -1;
        step.kind = PF_NORM_PREPEND;
        step.content_len = strlen(prepend);
        if (pf_tok_check_utf8(prepend, step.content_len, where, err) != 0)
            return -1;
        step.content = pf_tok_dup_mem(prepend, step.content_len);
        step.pattern = pf_tok_dup_mem("", 0);
        if (!step.pattern || !step.content) {
            free(step.pattern);
            free(step.content);
            return pf_errf(err, "%s: out of memory", where);
        }
    } else {
        return pf_errf(err,
                       "%s: normalizer type \"%s\" is not supported (supported: Replace, Prepend, Sequence)",
                       where, type);
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

/* A null decoder inside a Sequence is refused (a null normalizer is skipped). */
int pf_tok_parse_decoder(pf_tokenizer *tok, const cJSON *j, const char *where, int depth, pf_err *err)
{
    const char *type;
    if (step_type(j, where, depth, &type, err) != 0)
        return -1;
    if (strcmp(type, "Sequence") == 0)
        return parse_sequence(tok, j, "decoders", where, depth, pf_tok_parse_decoder, err);
    pf_tok_dec step = {0};
    if (strcmp(type, "Replace") == 0) {
        step.kind = PF_DEC_REPLACE;
        if (parse_replace(j, where, &step.pattern, &step.pattern_len, &step.content, &step.content_len,
                          err) != 0)
            return -1;
    } else if (strcmp(type, "ByteFallback") == 0) {
        step.kind = PF_DEC_BYTE_FALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        step.kind = PF_DEC_FUSE;
    } else if (strcmp(type, "Strip") == 0) {
        const char *content;
        uint64_t start, stop;
        if (pf_tok_get_string(j, "content", where, &content, err) != 0 ||
            pf_tok_get_uint(j, "start", where, 1e9, &start, err) != 0 ||
            pf_tok_get_uint(j, "stop", where, 1e9, &stop, err) != 0)
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
