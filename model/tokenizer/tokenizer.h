/* tokenizer.h - Hugging Face tokenizer.json (BPE family: Gemma / PaliGemma) in C, exact to the Rust
 * `tokenizers` library (0.22).
 *
 * What is implemented, i.e. what a tokenizer.json may use (anything else is rejected at load time with an
 * error naming the component, never silently approximated):
 *   model          BPE: vocab, merges ("a b" strings or [["a","b"]] arrays), unk_token, fuse_unk,
 *                  byte_fallback, ignore_merges, dropout null/0; no continuing_subword_prefix /
 *                  end_of_word_suffix.
 *   added_tokens   special / normalized / lstrip / rstrip (single_word=true is rejected).
 *   normalizer     null, Replace (String pattern), Prepend, Sequence of those.
 *   pre_tokenizer  null.
 *   post_processor null or TemplateProcessing (never applied: encode adds no special tokens and
 *                  PaliGemmaProcessor rebuilds the template without any).
 *   decoder        null, Replace (String pattern), ByteFallback, Fuse, Strip, Sequence of those.
 *   truncation / padding: null.
 *
 * Encode pipeline (see ../shared/golden/tokenizer/README.md): added tokens with normalized=false are cut
 * out of the raw text (leftmost-longest), the rest is normalized, added tokens with normalized=true are
 * cut out of the normalized pieces, every remaining piece is one BPE word (merge by lowest rank, ties
 * leftmost; byte fallback; unk fusing).
 *
 * A loaded pf_tokenizer is immutable: any number of threads may encode/decode with it at once.
 */
#ifndef PF_MODEL_TOKENIZER_H
#define PF_MODEL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct pf_tokenizer pf_tokenizer; /* immutable after load; safe to share across threads */

/* Growable id vector. Zero-initialise ({0}) before first use; pf_ids_free releases it. */
typedef struct pf_ids {
    int32_t *v;
    size_t n, cap;
} pf_ids;

void pf_ids_free(pf_ids *ids);
int pf_ids_push(pf_ids *ids, int32_t id, pf_err *err);
/* Make room for `extra` more ids (amortised doubling). */
int pf_ids_reserve(pf_ids *ids, size_t extra, pf_err *err);

/* Load a tokenizer.json file. On failure *out is NULL and err names the file, field and reason. */
int pf_tokenizer_load(const char *path, pf_tokenizer **out, pf_err *err);
/* Same from memory (data need not be NUL-terminated); `name` is used in error messages. */
int pf_tokenizer_load_mem(const char *data, size_t len, const char *name, pf_tokenizer **out, pf_err *err);
void pf_tokenizer_free(pf_tokenizer *tok);

/* Append the ids of text[0..len) to out (no special tokens added). text must be valid UTF-8 (it may
 * contain NUL characters); invalid UTF-8 is an error. Thread-safe on a shared tokenizer. */
int pf_tokenizer_encode(const pf_tokenizer *tok, const char *text, size_t len, pf_ids *out, pf_err *err);

/* Decode ids into a malloc'd, NUL-terminated UTF-8 string of *out_len bytes. The text MAY contain NUL
 * bytes (e.g. from the byte token <0x00>): use *out_len, not strlen. Ids that are not in the vocabulary
 * (negative or >= vocab size) are dropped, as the Rust library drops unknown ids. skip_special drops
 * special tokens (added tokens with special=true) before the decoder runs, as skip_special_tokens=True. */
int pf_tokenizer_decode(const pf_tokenizer *tok, const int32_t *ids, size_t n, int skip_special, char **out,
                        size_t *out_len, pf_err *err);

/* token (NUL-terminated) -> id: added tokens first, then the model vocabulary; -1 if absent. */
int32_t pf_tokenizer_token_to_id(const pf_tokenizer *tok, const char *token);
/* Same with an explicit length (token may contain NUL). */
int32_t pf_tokenizer_token_to_id_n(const pf_tokenizer *tok, const char *token, size_t len);
/* id -> token string (not NUL-terminated; *len bytes), added tokens first; NULL if absent. The string
 * lives as long as the tokenizer. */
const char *pf_tokenizer_id_to_token(const pf_tokenizer *tok, int32_t id, size_t *len);
size_t pf_tokenizer_vocab_size(const pf_tokenizer *tok); /* highest id + 1 */
/* 1 if decode(skip_special=1) drops this id (its token is a special added token), else 0. */
int pf_tokenizer_is_special(const pf_tokenizer *tok, int32_t id);

#endif
