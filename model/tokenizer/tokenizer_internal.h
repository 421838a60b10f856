/* tokenizer_internal.h - the layout of pf_tokenizer, shared by tokenizer_*.c only. */
#ifndef PF_MODEL_TOKENIZER_INTERNAL_H
#define PF_MODEL_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/tokenizer/tokenizer.h"

/* Ids are kept below this bound (and below 8x the number of tokens, see tokenizer_load.c, size_id_space) so
 * that the id-indexed tables stay small whatever a file claims. */
#define PF_TOK_MAX_ID (1u << 26)
#define PF_TOK_NO_ID UINT32_MAX

/* A string in the tokenizer's string pool. len == PF_TOK_NO_ID: no string. */
typedef struct pf_tok_span {
    uint32_t off, len;
} pf_tok_span;

/* ---- big allocations: huge-page backed when large (page faults dominate load time otherwise) ---- */
void *pf_tok_big_alloc(size_t size, pf_err *err, const char *what);
void pf_tok_big_free(void *p, size_t size);

/* ---- string -> id hash (open addressing, xxh3) ---- */
typedef struct pf_tok_strmap {
    uint64_t *slots; /* (hash32 << 32) | (id + 1); 0 = empty */
    size_t mask;
    size_t bytes;
} pf_tok_strmap;

/* ---- the model vocabulary: string -> id, 16-byte slots holding the length and the first 10 bytes of the
 * string, so that most lookups (merges building, ~1.7M of them) touch one cache line, not three ---- */
#define PF_TOK_VPRE 10
typedef struct pf_tok_vslot {
    uint32_t idp1; /* id + 1; 0 = empty */
    uint16_t len;  /* string length, 0xFFFF for >= 0xFFFF */
    char pre[PF_TOK_VPRE];
} pf_tok_vslot;

typedef struct pf_tok_vocabmap {
    pf_tok_vslot *slots;
    size_t mask, bytes;
} pf_tok_vocabmap;

uint64_t pf_tok_str_hash(const char *s, size_t len);
int pf_tok_vmap_init(pf_tok_vocabmap *m, size_t expected, pf_err *err);
void pf_tok_vmap_free(pf_tok_vocabmap *m);
/* With h = pf_tok_str_hash(s, len). spans/pool: the strings of the ids in the map (for long strings). */
int32_t pf_tok_vmap_find(const pf_tok_vocabmap *m, const char *pool, const pf_tok_span *spans, uint64_t h,
                         const char *s, size_t len);
/* Returns 1 if inserted, 0 if present (*existing = its id). */
int pf_tok_vmap_insert(pf_tok_vocabmap *m, const char *pool, const pf_tok_span *spans, uint64_t h,
                       const char *s, size_t len, uint32_t id, uint32_t *existing);
static inline void pf_tok_vmap_prefetch(const pf_tok_vocabmap *m, uint64_t h)
{
    __builtin_prefetch(&m->slots[h & m->mask]);
}

/* ---- (left id, right id) -> (rank, merged id) ---- */
typedef struct pf_tok_merge_slot {
    uint64_t key; /* ((left << 32) | right) + 1; 0 = empty (fresh pages are zero: no memset at load) */
    uint32_t rank;
    int32_t new_id;
} pf_tok_merge_slot;

typedef struct pf_tok_merges {
    pf_tok_merge_slot *slots;
    size_t mask, bytes, count;
} pf_tok_merges;

/* ---- byte trie for added-token matching (leftmost-longest) ---- */
typedef struct pf_tok_trie {
    uint32_t root[256];   /* child of the root for each first byte; 0 = none */
    uint32_t *edge_start; /* [n_nodes + 1]: edges of node i are edges[edge_start[i] .. edge_start[i+1]) */
    uint8_t *edge_byte;   /* sorted per node */
    uint32_t *edge_to;
    int32_t *value; /* [n_nodes]: index into pf_tokenizer.added (-1: not a pattern end) */
    uint32_t n_nodes;
    bool empty; /* no patterns at all */
} pf_tok_trie;

/* ---- added tokens ---- */
typedef struct pf_tok_added {
    pf_tok_span content;
    uint32_t id;
    bool special, normalized, lstrip, rstrip;
} pf_tok_added;

/* ---- normalizer / decoder steps (Sequences are flattened at load) ---- */
typedef enum { PF_NORM_REPLACE, PF_NORM_PREPEND } pf_norm_kind;
typedef struct pf_tok_norm {
    pf_norm_kind kind;
    char *pattern; /* Replace: the String pattern (non-empty) */
    size_t pattern_len;
    char *content; /* Replace: replacement; Prepend: the prefix */
    size_t content_len;
} pf_tok_norm;

typedef enum { PF_DEC_REPLACE, PF_DEC_BYTE_FALLBACK, PF_DEC_FUSE, PF_DEC_STRIP } pf_dec_kind;
typedef struct pf_tok_dec {
    pf_dec_kind kind;
    char *pattern; /* Replace */
    size_t pattern_len;
    char *content; /* Replace: replacement; Strip: the character (UTF-8) */
    size_t content_len;
    uint32_t strip_char;            /* Strip: code point */
    size_t strip_start, strip_stop; /* Strip: how many to remove at each end */
} pf_tok_dec;

/* Per-id flags. */
enum { PF_TOKF_SPECIAL = 1 };

struct pf_tokenizer {
    /* string pool: model vocab strings and added-token contents */
    char *pool;
    size_t pool_len, pool_bytes;

    uint32_t n_ids;         /* highest id + 1 */
    pf_tok_span *model_tok; /* [n_ids] model vocab string of each id (len PF_TOK_NO_ID: none) */
    pf_tok_span *any_tok;   /* [n_ids] id_to_token: added content first, then model string */
    uint8_t *id_flags;      /* [n_ids] PF_TOKF_* */
    size_t id_tables_bytes;
    uint32_t model_vocab_count; /* number of model vocab entries (BPE get_vocab_size) */

    pf_tok_vocabmap vocab;   /* model vocab: string -> id */
    pf_tok_strmap added_map; /* added tokens: content -> id */
    pf_tok_merges merges;

    /* single code point -> model id (two levels: 0x1100 blocks of 256), for BPE's first split */
    int32_t *cp_block; /* [0x1100] index of the block in cp_ids, -1: no token in this block */
    int32_t *cp_ids;   /* [n_blocks * 256] id or -1 */
    size_t cp_ids_count;
    int32_t byte_id[256]; /* "<0xHH>" ids for byte fallback, -1 if absent */

    /* BPE options */
    bool has_unk;   /* unk_token configured */
    int32_t unk_id; /* -1 if the unk token is not in the vocab (an error only when needed) */
    char *unk_token;
    bool fuse_unk, byte_fallback, ignore_merges;
    uint32_t max_token_len; /* longest model vocab string in bytes */
    /* BPE words may be cut before every U+2581 that follows another character (see
     * tokenizer_load_model.c, pf_tok_check_word_split): no merge can cross such a point, so the pieces are
     * merged independently. */
    bool split_at_space;

    pf_tok_added *added;
    size_t n_added;
    pf_tok_trie trie_raw;  /* normalized=false tokens, matched on the raw text */
    pf_tok_trie trie_norm; /* normalized=true tokens, matched on normalized pieces */

    pf_tok_norm *norm;
    size_t n_norm;
    bool has_decoder;
    pf_tok_dec *dec;
    size_t n_dec;
};

/* tokenizer_tables.c */
int pf_tok_strmap_init(pf_tok_strmap *m, size_t expected, pf_err *err, const char *what);
void pf_tok_strmap_free(pf_tok_strmap *m);
/* The map stores values v; the string of v is the pf_tok_span at (char *)spans + v * stride, in pool.
 * Insert s -> v; returns 1 if inserted, 0 if s was already present (*existing = its value). */
int pf_tok_strmap_insert(pf_tok_strmap *m, const char *pool, const void *spans, size_t stride, const char *s,
                         size_t len, uint32_t v, uint32_t *existing);
int32_t pf_tok_strmap_get(const pf_tok_strmap *m, const char *pool, const void *spans, size_t stride,
                          const char *s, size_t len);

int pf_tok_merges_init(pf_tok_merges *m, size_t expected, pf_err *err);
void pf_tok_merges_free(pf_tok_merges *m);
/* Insert or overwrite (the Rust library collects merges into a map: a repeated pair keeps the later rank). */
void pf_tok_merges_put(pf_tok_merges *m, int32_t a, int32_t b, uint32_t rank, int32_t new_id);

static inline uint64_t pf_tok_pair_hash(uint64_t key)
{
    /* splitmix64 finalizer: cheap and good enough for 2^20-slot linear probing */
    key ^= key >> 30;
    key *= 0xbf58476d1ce4e5b9ULL;
    key ^= key >> 27;
    key *= 0x94d049bb133111ebULL;
    key ^= key >> 31;
    return key;
}

static inline uint64_t pf_tok_merge_key(int32_t a, int32_t b)
{
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

static inline void pf_tok_merges_prefetch(const pf_tok_merges *m, uint64_t key)
{
    __builtin_prefetch(&m->slots[(size_t)pf_tok_pair_hash(key) & m->mask]);
}

static inline bool pf_tok_merges_get(const pf_tok_merges *m, int32_t a, int32_t b, uint32_t *rank,
                                     int32_t *new_id)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = (size_t)pf_tok_pair_hash(key) & m->mask;
    for (;;) {
        const pf_tok_merge_slot *s = &m->slots[i];
        if (s->key == key + 1) {
            *rank = s->rank;
            *new_id = s->new_id;
            return true;
        }
        if (s->key == 0)
            return false;
        i = (i + 1) & m->mask;
    }
}

/* Trie: build from n patterns (pattern i has value values[i]; the first of equal patterns wins). */
int pf_tok_trie_build(pf_tok_trie *t, const char *const *pats, const size_t *lens, const int32_t *values,
                      size_t n, pf_err *err);
void pf_tok_trie_free(pf_tok_trie *t);
/* Leftmost-longest match in s[from..len): returns true and the match [*ms, *me) with its value. */
bool pf_tok_trie_find(const pf_tok_trie *t, const uint8_t *s, size_t len, size_t from, size_t *ms, size_t *me,
                      int32_t *value);

static inline int32_t pf_tok_vocab_get(const pf_tokenizer *t, const char *s, size_t len)
{
    if (!t->vocab.slots)
        return -1;
    return pf_tok_vmap_find(&t->vocab, t->pool, t->model_tok, pf_tok_str_hash(s, len), s, len);
}

/* Index into t->added of the added token with this content, or -1. */
static inline int32_t pf_tok_added_get(const pf_tokenizer *t, const char *s, size_t len)
{
    if (!t->added)
        return -1;
    return pf_tok_strmap_get(&t->added_map, t->pool, &t->added->content, sizeof(pf_tok_added), s, len);
}

/* tokenizer_encode.c: run the normalizer steps on in[0..len) into *buf (grown as needed). */
int pf_tok_normalize(const pf_tokenizer *tok, const char *in, size_t len, char **buf, size_t *cap,
                     size_t *out_len, pf_err *err);

/* tokenizer_utf8.c */
/* Length of the valid UTF-8 sequence at s[0..n) (1..4), or 0 if invalid (Rust's from_utf8 rules). */
size_t pf_utf8_seq(const uint8_t *s, size_t n, uint32_t *cp);
/* Offset of the first invalid byte, or n if s is valid UTF-8. */
size_t pf_utf8_check(const uint8_t *s, size_t n);
/* Unicode White_Space (what Rust's regex \s matches). */
bool pf_unicode_is_space(uint32_t cp);
/* Encode cp as UTF-8 into out (4 bytes room); returns the length. */
size_t pf_utf8_put(uint32_t cp, char *out);

#endif
