/* tokenizer_load.c - read a tokenizer.json into a pf_tokenizer: parse it (tokenizer_load_json.c), check
 * the top level against what this implementation does exactly (tokenizer.h; anything else is an error naming
 * the component), then build the tables section by section (tokenizer_load_model.c, _added.c, _steps.c).
 *
 * Whole load on the 17.8 MB PaliGemma file (2-core EPYC VM): ~150 ms (parse ~45, vocab ~15, merges ~80). A
 * binary cache of the built tables would make repeated loads ~10-20 ms, but needs invalidation, a writable
 * cache location and complete validation of a file that may be stale, corrupt or hostile; with the cold path
 * well under the 250 ms target there is none.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/log.h"
#include "model/tokenizer/tokenizer_load.h"

#define PF_TOK_MAX_FILE ((size_t)512 << 20)

static int check_top_level(pf_tokenizer *tok, const cJSON *root, load_ctx *lc, pf_err *err)
{
    if (!cJSON_IsObject(root))
        return pf_errf(err, "expected a JSON object at the top level, got %s", pf_tok_type_name(root));
    const cJSON *v;
    if (pf_tok_get_field(root, "version", "tokenizer", &v, err) != 0)
        return -1;
    if (v && (!cJSON_IsString(v) || strcmp(v->valuestring, "1.0") != 0))
        return pf_errf(err, "version: expected \"1.0\"");
    if (pf_tok_get_field(root, "truncation", "tokenizer", &v, err) != 0)
        return -1;
    if (v && !cJSON_IsNull(v))
        return pf_errf(err, "truncation: only null is supported (encode must not truncate)");
    if (pf_tok_get_field(root, "padding", "tokenizer", &v, err) != 0)
        return -1;
    if (v && !cJSON_IsNull(v))
        return pf_errf(err, "padding: only null is supported (encode must not pad)");
    if (pf_tok_get_field(root, "pre_tokenizer", "tokenizer", &v, err) != 0)
        return -1;
    if (v && !cJSON_IsNull(v)) {
        const cJSON *t = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "type") : NULL;
        return pf_errf(err, "pre_tokenizer: \"%s\" is not supported (only null)",
                       t && cJSON_IsString(t) ? t->valuestring : pf_tok_type_name(v));
    }
    if (pf_tok_get_field(root, "post_processor", "tokenizer", &v, err) != 0)
        return -1;
    if (v && !cJSON_IsNull(v)) {
        const cJSON *t = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "type") : NULL;
        if (!t || !cJSON_IsString(t) || strcmp(t->valuestring, "TemplateProcessing") != 0)
            return pf_errf(err, "post_processor: \"%s\" is not supported (only null or TemplateProcessing)",
                           t && cJSON_IsString(t) ? t->valuestring : pf_tok_type_name(v));
        /* TemplateProcessing only adds special tokens; encode never asks for them and PaliGemmaProcessor
         * replaces the template with one that adds none, so it has no effect on any output here. */
    }
    if (pf_tok_get_field(root, "normalizer", "tokenizer", &v, err) != 0 ||
        pf_tok_parse_normalizer(tok, v, "normalizer", 0, err) != 0)
        return -1;
    if (pf_tok_get_field(root, "decoder", "tokenizer", &v, err) != 0)
        return -1;
    if (v && !cJSON_IsNull(v)) {
        tok->has_decoder = true;
        if (pf_tok_parse_decoder(tok, v, "decoder", 0, err) != 0)
            return -1;
    }
    if (pf_tok_get_field(root, "added_tokens", "tokenizer", &lc->added, err) != 0)
        return -1;
    if (!lc->added)
        return pf_errf(err, "added_tokens: missing");
    if (!cJSON_IsArray(lc->added))
        return pf_errf(err, "added_tokens: expected an array, got %s", pf_tok_type_name(lc->added));
    const cJSON *model;
    if (pf_tok_get_field(root, "model", "tokenizer", &model, err) != 0)
        return -1;
    if (!model)
        return pf_errf(err, "model: missing");
    return pf_tok_parse_model_options(tok, model, lc, err);
}

/* Size the id space from a first pass over the vocab and the added tokens. An added token gets a model id or
 * the next id above everything seen so far, so ids stay below max(max model id + 1, vocab count) + number of
 * added tokens. Refuse sparse id spaces that would make the id tables much larger than the file's content. */
static int size_id_space(pf_tokenizer *tok, load_ctx *lc, uint8_t *cp_used, pf_err *err)
{
    if (pf_tok_scan_vocab(tok, lc, cp_used, err) != 0)
        return -1;
    size_t n_added_entries = 0;
    for (const cJSON *c = lc->added->child; c; c = c->next) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(c, "content");
        if (s && cJSON_IsString(s))
            lc->added_bytes += strlen(s->valuestring);
        n_added_entries++;
    }
    uint64_t cap = (lc->vocab_count ? lc->max_model_id + 1 : 0);
    if (cap < lc->vocab_count)
        cap = lc->vocab_count;
    cap += n_added_entries;
    uint64_t entries = (uint64_t)lc->vocab_count + n_added_entries;
    if (cap > PF_TOK_MAX_ID || (lc->vocab_count && lc->max_model_id >= 8 * entries + 1024))
        return pf_errf(err, "model.vocab: ids up to %llu for %llu tokens: id space too large or too sparse",
                       (unsigned long long)lc->max_model_id, (unsigned long long)entries);
    lc->id_cap = (uint32_t)cap;
    return 0;
}

/* The string pool, the id-indexed tables and the code-point table, sized by size_id_space. */
static int alloc_tables(pf_tokenizer *tok, const load_ctx *lc, const uint8_t *cp_used, pf_err *err)
{
    tok->pool_bytes = lc->vocab_bytes + lc->added_bytes + 1;
    tok->pool = pf_tok_big_alloc(tok->pool_bytes, err, "token strings");
    tok->id_tables_bytes = (size_t)lc->id_cap * sizeof(pf_tok_span);
    tok->model_tok = pf_tok_big_alloc(tok->id_tables_bytes, err, "id table");
    tok->any_tok = pf_tok_big_alloc(tok->id_tables_bytes, err, "id table");
    tok->id_flags = calloc(lc->id_cap ? lc->id_cap : 1, 1);
    tok->cp_block = malloc(0x1100 * sizeof(int32_t));
    size_t n_blocks = 0;
    for (size_t k = 0; k < 0x1100; k++)
        n_blocks += cp_used[k];
    tok->cp_ids_count = n_blocks * 256;
    tok->cp_ids = malloc((tok->cp_ids_count ? tok->cp_ids_count : 1) * sizeof(int32_t));
    if (!tok->pool || !tok->model_tok || !tok->any_tok || !tok->id_flags || !tok->cp_block || !tok->cp_ids)
        return pf_errf(err, "out of memory for %u ids", lc->id_cap);
    int32_t blk = 0;
    for (size_t k = 0; k < 0x1100; k++)
        tok->cp_block[k] = cp_used[k] ? blk++ : -1;
    memset(tok->cp_ids, 0xFF, tok->cp_ids_count * sizeof(int32_t));
    memset(tok->model_tok, 0xFF, tok->id_tables_bytes);
    return 0;
}

static int fill_vocab_and_merges(pf_tokenizer *tok, load_ctx *lc, pf_err *err)
{
    double t0 = pf_now();
    if (pf_tok_vmap_init(&tok->vocab, lc->vocab_count, err) != 0 || pf_tok_fill_vocab(tok, lc, err) != 0)
        return -1;
    double t1 = pf_now();
    size_t n_merges = 0;
    for (const cJSON *c = lc->merges->child; c; c = c->next)
        n_merges++;
    if (pf_tok_merges_init(&tok->merges, n_merges, err) != 0 || pf_tok_fill_merges(tok, lc, err) != 0)
        return -1;
    pf_debug("tokenizer", "vocab %u tokens %.1f ms, merges %zu %.1f ms", lc->vocab_count, (t1 - t0) * 1e3,
             tok->merges.count, (pf_now() - t1) * 1e3);
    return 0;
}

/* The id space and id -> token (added content first, as AddedVocabulary::simple_id_to_token). */
static void finish_id_tables(pf_tokenizer *tok, const load_ctx *lc)
{
    uint32_t n_ids = lc->vocab_count ? (uint32_t)lc->max_model_id + 1 : 0;
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
}

static int build(pf_tokenizer *tok, const cJSON *root, pf_err *err)
{
    load_ctx lc = {0};
    for (int i = 0; i < 256; i++)
        tok->byte_id[i] = -1;
    tok->unk_id = -1;
    if (check_top_level(tok, root, &lc, err) != 0)
        return -1;
    uint8_t *cp_used = calloc(0x1100, 1);   /* which 256-code-point blocks hold a single-character token */
    if (!cp_used)
        return pf_errf(err, "out of memory");
    int rc = size_id_space(tok, &lc, cp_used, err);
    if (rc == 0)
        rc = alloc_tables(tok, &lc, cp_used, err);
    free(cp_used);
    if (rc != 0 || fill_vocab_and_merges(tok, &lc, err) != 0)
        return -1;
    if (tok->has_unk)
        tok->unk_id = pf_tok_vocab_get(tok, tok->unk_token, strlen(tok->unk_token));
    if (pf_tok_parse_added(tok, &lc, err) != 0)
        return -1;
    finish_id_tables(tok, &lc);
    pf_tok_check_word_split(tok);
    return pf_tok_build_tries(tok, err);
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
    pf_tok_json j;
    pf_tokenizer *tok = NULL;
    int rc = pf_tok_json_parse(data, len, name, &j, err);
    if (rc == 0) {
        tok = calloc(1, sizeof *tok);
        rc = tok ? build(tok, j.root, err) : pf_errf(err, "out of memory");
    }
    pf_tok_json_free(&j);
    if (rc != 0) {
        pf_tokenizer_free(tok);
        return pf_err_prefix(err, "%s", name);
    }
    *out = tok;
    return 0;
}

/* Gemma's tokenizer.json is 17 MB; ten times that is not a tokenizer we can use. */
#define PF_TOKENIZER_MAX_FILE_BYTES ((size_t)256 << 20)

int pf_tokenizer_load(const char *path, pf_tokenizer **out, pf_err *err)
{
    *out = NULL;
    /* Read, not mapped: the file may be replaced or truncated while we parse it (SIGBUS on a map); opened
     * without blocking and refused unless a regular file (a FIFO would hang the start for good). */
    char *text;
    size_t len;
    if (pf_read_file(path, PF_TOKENIZER_MAX_FILE_BYTES, &text, &len, err) != 0)
        return -1;
    int rc = pf_tokenizer_load_mem(text, len, path, out, err);
    free(text);
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
