/* tokenizer_load_added.c - the added_tokens section of tokenizer.json: each token checked against the id
 * the Rust library would give it, then the two leftmost-longest matchers (raw text, normalized text). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer/tokenizer_load.h"

int pf_tok_parse_added(pf_tokenizer *tok, load_ctx *lc, pf_err *err)
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
            return pf_errf(err, "%s: expected an object, got %s", where, pf_tok_type_name(c));
        const char *content;
        uint64_t file_id;
        pf_tok_added t = {0};
        bool single_word;
        if (pf_tok_get_string(c, "content", where, &content, err) != 0 ||
            pf_tok_get_uint(c, "id", where, 4294967295.0, &file_id, err) != 0 ||
            pf_tok_get_bool(c, "special", where, true, false, &t.special, err) != 0 ||
            pf_tok_get_bool(c, "normalized", where, true, false, &t.normalized, err) != 0 ||
            pf_tok_get_bool(c, "lstrip", where, true, false, &t.lstrip, err) != 0 ||
            pf_tok_get_bool(c, "rstrip", where, true, false, &t.rstrip, err) != 0 ||
            pf_tok_get_bool(c, "single_word", where, true, false, &single_word, err) != 0)
            return -1;
        size_t len = strlen(content);
        if (len == 0)
            continue; /* the Rust library ignores empty added tokens */
        if (pf_tok_check_utf8(content, len, where, err) != 0)
            return -1;
        if (single_word)
            return pf_errf(err, "%s (\"%s\"): single_word=true is not supported", where,
                           pf_tok_show(content, len, b, sizeof b));
        if (pf_tok_added_get(tok, content, len) >= 0)
            return pf_errf(err, "%s: \"%s\" appears twice in added_tokens", where,
                           pf_tok_show(content, len, b, sizeof b));
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
                           where, pf_tok_show(content, len, b, sizeof b), (unsigned long long)file_id, id);
        if (id >= lc->id_cap)
            return pf_errf(err, "%s: id %u out of range", where, id);
        t.id = id;
        t.content = (pf_tok_span){pf_tok_pool_add(tok, content, len), (uint32_t)len};
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
int pf_tok_build_tries(pf_tokenizer *tok, pf_err *err)
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
                                pf_tok_show(s, len, b, sizeof b));
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
