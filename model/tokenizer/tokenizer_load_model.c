/* tokenizer_load_model.c - the BPE model section of tokenizer.json: its options, the vocabulary (string pool,
 * id tables, string -> id map, single-code-point and byte-fallback ids) and the merges ((left, right) ->
 * rank, merged id), then the check that lets encode cut words before U+2581.
 *
 * Vocab ~15 ms and merges ~80 ms of the ~150 ms load (1.7M string lookups for the merges, batched with
 * prefetches; the tables live on huge pages). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer/tokenizer_load.h"

int pf_tok_parse_model_options(pf_tokenizer *tok, const cJSON *model, load_ctx *lc, pf_err *err)
{
    const char *w = "model";
    if (!cJSON_IsObject(model))
        return pf_errf(err, "model: expected an object, got %s", pf_tok_type_name(model));
    const char *type;
    if (pf_tok_get_opt_string(model, "type", w, &type, err) != 0)
        return -1;
    if (!type)
        return pf_errf(err, "model.type: missing (only \"BPE\" is supported)");
    if (strcmp(type, "BPE") != 0)
        return pf_errf(err, "model.type: \"%s\" is not supported (only BPE)", type);

    const cJSON *dropout;
    if (pf_tok_get_field(model, "dropout", w, &dropout, err) != 0)
        return -1;
    if (dropout && !cJSON_IsNull(dropout)) {
        if (!cJSON_IsNumber(dropout) || !(dropout->valuedouble >= 0.0 && dropout->valuedouble <= 1.0))
            return pf_errf(err, "model.dropout: expected null or a number in [0, 1]");
        if (dropout->valuedouble != 0.0)
            return pf_errf(err, "model.dropout: %g is not supported (BPE dropout is random; only null or 0)",
                           dropout->valuedouble);
    }
    const char *prefix, *suffix, *unk;
    if (pf_tok_get_opt_string(model, "continuing_subword_prefix", w, &prefix, err) != 0 ||
        pf_tok_get_opt_string(model, "end_of_word_suffix", w, &suffix, err) != 0 ||
        pf_tok_get_opt_string(model, "unk_token", w, &unk, err) != 0)
        return -1;
    if (prefix && prefix[0])
        return pf_errf(err, "model.continuing_subword_prefix: \"%s\" is not supported (only null)", prefix);
    if (suffix && suffix[0])
        return pf_errf(err, "model.end_of_word_suffix: \"%s\" is not supported (only null)", suffix);
    if (pf_tok_get_bool(model, "fuse_unk", w, false, false, &tok->fuse_unk, err) != 0 ||
        pf_tok_get_bool(model, "byte_fallback", w, false, false, &tok->byte_fallback, err) != 0 ||
        pf_tok_get_bool(model, "ignore_merges", w, false, false, &tok->ignore_merges, err) != 0)
        return -1;
    if (unk) {
        tok->has_unk = true;
        tok->unk_token = pf_tok_dup_mem(unk, strlen(unk));
        if (!tok->unk_token)
            return pf_errf(err, "model.unk_token: out of memory");
    }
    if (pf_tok_get_field(model, "vocab", w, &lc->vocab, err) != 0 ||
        pf_tok_get_field(model, "merges", w, &lc->merges, err) != 0)
        return -1;
    if (!lc->vocab || !cJSON_IsObject(lc->vocab))
        return pf_errf(err, "model.vocab: expected an object, got %s", pf_tok_type_name(lc->vocab));
    if (!lc->merges || !cJSON_IsArray(lc->merges))
        return pf_errf(err, "model.merges: expected an array, got %s", pf_tok_type_name(lc->merges));
    return 0;
}

/* First pass over the vocab: count, sizes, id range, which code-point blocks hold single-char tokens. */
int pf_tok_scan_vocab(pf_tokenizer *tok, load_ctx *lc, uint8_t *cp_used, pf_err *err)
{
    uint64_t count = 0, bytes = 0, max_id = 0;
    for (const cJSON *c = lc->vocab->child; c; c = c->next) {
        uint64_t id;
        if (pf_tok_as_uint(c, (double)PF_TOK_MAX_ID - 1, &id) != 0) {
            char b[80];
            return pf_errf(err, "model.vocab[\"%s\"]: expected an integer id in [0, %u], got %s",
                           pf_tok_show(c->string, strlen(c->string), b, sizeof b), PF_TOK_MAX_ID - 1,
                           cJSON_IsNumber(c) ? "a number out of range" : pf_tok_type_name(c));
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

/* The vocab and merges loops below work in batches: hash a batch of strings, prefetch their table slots,
 * then probe. The tables are far bigger than the caches, so this hides most of the memory latency
 * (merges: ~450 ns -> ~100 ns each). */
#define BATCH 32

static int vocab_one(pf_tokenizer *tok, const char *s, size_t len, uint32_t id, uint64_t h, pf_err *err)
{
    char b[80];
    if (pf_tok_check_utf8(s, len, "model.vocab", err) != 0)
        return pf_err_prefix(err, "token \"%s\"", pf_tok_show(s, len, b, sizeof b));
    if (tok->model_tok[id].len != PF_TOK_NO_ID) {
        char b2[80];
        const pf_tok_span *o = &tok->model_tok[id];
        return pf_errf(err, "model.vocab: id %u is used twice (\"%s\" and \"%s\")", id,
                       pf_tok_show(tok->pool + o->off, o->len, b2, sizeof b2),
                       pf_tok_show(s, len, b, sizeof b));
    }
    tok->model_tok[id] = (pf_tok_span){pf_tok_pool_add(tok, s, len), (uint32_t)len};
    uint32_t existing;
    if (!pf_tok_vmap_insert(&tok->vocab, tok->pool, tok->model_tok, h, s, len, id, &existing))
        return pf_errf(err, "model.vocab: token \"%s\" appears twice", pf_tok_show(s, len, b, sizeof b));
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

int pf_tok_fill_vocab(pf_tokenizer *tok, load_ctx *lc, pf_err *err)
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
                           pf_tok_type_name(c));
        const char *s = c->valuestring;
        /* convert_merges_to_hashmap skips "#version" lines, also inside tokenizer.json */
        if (s[0] == '#' && strncmp(s, "#version", 8) == 0)
            return 0;
        const char *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return pf_errf(err, "model.merges[%zu]: \"%s\" is not two tokens separated by one space", idx,
                           pf_tok_show(s, strlen(s), b, sizeof b));
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

int pf_tok_fill_merges(pf_tokenizer *tok, load_ctx *lc, pf_err *err)
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
                        pf_tok_show(first ? j->a : j->b, first ? j->alen : j->blen, b, sizeof b));
                goto out;
            }
            if (j->iab < 0) {
                pf_errf(err, "model.merges[%zu]: merged token \"%s\" + \"%s\" is not in the vocabulary",
                        j->idx, pf_tok_show(j->a, j->alen, b, sizeof b),
                        pf_tok_show(j->b, j->blen, b2, sizeof b2));
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

/* Can BPE words be cut before each U+2581 ("▁") that follows another character? Only if no merge can
 * ever join the two sides: the right side's first symbol is the token "▁" itself (1), the left side's
 * last symbol string ends in a character other than "▁" (a text character, '>' of a byte token, or the
 * last character of a non-empty unk token not ending in "▁") (3), and no token contains such a character
 * followed by "▁" (2), so no pair across the cut has its concatenation in the vocabulary. ignore_merges
 * looks words up whole, so it disables the cut (4). True for Gemma; checked, not assumed. */
void pf_tok_check_word_split(pf_tokenizer *tok)
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
