/* tokenizer_lookup.c - token <-> id lookups and the tokenizer's sizes (tokenizer.h). */
#include <string.h>

#include "model/tokenizer/tokenizer_internal.h"

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
