/* tokenizer_encode.c - text -> ids, step for step as the Rust tokenizers library (0.22) does it:
 *
 *   1. added tokens with normalized=false are cut out of the raw text (leftmost-longest; lstrip/rstrip
 *      widen a match over adjacent Unicode whitespace), each match is its id;
 *   2. every other piece is normalized (Replace / Prepend steps);
 *   3. added tokens with normalized=true are cut out of each normalized piece the same way;
 *   4. no pre-tokenizer: every remaining non-empty piece is one BPE word.
 *
 * BPE (models/bpe/model.rs merge_word + word.rs merge_all): one symbol per character (byte fallback to
 * <0xHH> tokens, else unk, consecutive unks fused when fuse_unk), then repeatedly merge the adjacent
 * pair with the lowest merge rank, ties to the leftmost, using a binary heap over pair positions and a
 * doubly linked symbol list: O(n log n) for an n-character word, so a 50 KB paragraph is fine.
 *
 * All scratch memory belongs to one call, so a shared const pf_tokenizer needs no locking.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer/tokenizer_internal.h"

/* ------------------------------------------------------------------------------------------------ */
/* scratch                                                                                           */

typedef struct bpe_sym {
    int32_t c;          /* token id */
    int32_t prev, next; /* neighbours in the live list, -1 at the ends */
    uint32_t len;       /* bytes of text covered; 0 = merged away */
    uint32_t tlen;      /* length of the token's string (to recognise stale heap entries cheaply) */
} bpe_sym;

typedef struct bpe_merge {
    uint32_t rank, pos; /* heap order: lowest rank, then leftmost position */
    int32_t new_id;
    int32_t a, b; /* the pair this entry was pushed for */
    uint32_t tl;  /* tlen(a) + tlen(b) */
} bpe_merge;

typedef struct enc_scratch {
    char *norm;
    size_t norm_cap;
    bpe_sym *syms;
    size_t syms_cap;
    bpe_merge *heap;
    size_t heap_cap;
} enc_scratch;

static void scratch_free(enc_scratch *s)
{
    free(s->norm);
    free(s->syms);
    free(s->heap);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem, pf_err *err)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem)
            return pf_errf(err, "encode: input too large");
        c *= 2;
    }
    void *q = realloc(*p, c * elem);
    if (!q)
        return pf_errf(err, "encode: out of memory (%zu bytes)", c * elem);
    *p = q;
    *cap = c;
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* normalizer                                                                                        */

/* One step from in[0..len) into *out. */
static int norm_step(const pf_tok_norm *st, const char *in, size_t len, char **out, size_t *cap, size_t *olen,
                     pf_err *err)
{
    if (st->kind == PF_NORM_PREPEND) {
        if (len == 0) { /* Prepend leaves an empty string empty */
            *olen = 0;
            return 0;
        }
        if (grow((void **)out, cap, len + st->content_len + 1, 1, err) != 0)
            return -1;
        memcpy(*out, st->content, st->content_len);
        memcpy(*out + st->content_len, in, len);
        *olen = len + st->content_len;
        return 0;
    }
    /* Replace: every non-overlapping occurrence, left to right */
    size_t plen = st->pattern_len, clen = st->content_len;
    size_t worst = len;
    if (clen > plen) {
        size_t n = len / plen;
        if (n > (SIZE_MAX / 2 - len) / (clen - plen))
            return pf_errf(err, "normalizer: input too large");
        worst = len + n * (clen - plen);
    }
    if (grow((void **)out, cap, worst + 1, 1, err) != 0)
        return -1;
    char *o = *out;
    size_t k = 0, i = 0;
    while (i < len) {
        const char *hit;
        if (plen == 1)
            hit = memchr(in + i, st->pattern[0], len - i);
        else
            hit = memmem(in + i, len - i, st->pattern, plen);
        if (!hit) {
            memcpy(o + k, in + i, len - i);
            k += len - i;
            break;
        }
        size_t at = (size_t)(hit - in);
        memcpy(o + k, in + i, at - i);
        k += at - i;
        memcpy(o + k, st->content, clen);
        k += clen;
        i = at + plen;
    }
    *olen = k;
    return 0;
}

int pf_tok_normalize(const pf_tokenizer *tok, const char *in, size_t len, char **buf, size_t *cap,
                     size_t *out_len, pf_err *err)
{
    if (tok->n_norm == 0) {
        if (grow((void **)buf, cap, len + 1, 1, err) != 0)
            return -1;
        memcpy(*buf, in, len);
        *out_len = len;
        return 0;
    }
    if (tok->n_norm == 1)
        return norm_step(&tok->norm[0], in, len, buf, cap, out_len, err);
    /* several steps: ping-pong between *buf and a temporary */
    char *tmp = NULL;
    size_t tcap = 0, cur_len = len;
    const char *cur = in;
    int rc = 0;
    for (size_t i = 0; i < tok->n_norm && rc == 0; i++) {
        bool to_buf = ((tok->n_norm - 1 - i) % 2) == 0; /* the last step writes into *buf */
        if (to_buf)
            rc = norm_step(&tok->norm[i], cur, cur_len, buf, cap, &cur_len, err), cur = *buf;
        else
            rc = norm_step(&tok->norm[i], cur, cur_len, &tmp, &tcap, &cur_len, err), cur = tmp;
    }
    free(tmp);
    *out_len = cur_len;
    return rc;
}

/* ------------------------------------------------------------------------------------------------ */
/* BPE                                                                                               */

static inline bool heap_less(const bpe_merge *x, const bpe_merge *y)
{
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static inline void heap_push(bpe_merge *h, size_t *n, bpe_merge m)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&m, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = m;
}

static inline bpe_merge heap_pop(bpe_merge *h, size_t *n)
{
    bpe_merge top = h[0];
    bpe_merge last = h[--(*n)];
    size_t i = 0, sz = *n;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= sz)
            break;
        size_t c = (l + 1 < sz && heap_less(&h[l + 1], &h[l])) ? l + 1 : l;
        if (!heap_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (sz > 0)
        h[i] = last;
    return top;
}

static inline int32_t char_id(const pf_tokenizer *tok, uint32_t cp)
{
    int32_t blk = tok->cp_block[cp >> 8];
    return blk < 0 ? -1 : tok->cp_ids[(size_t)blk * 256 + (cp & 0xFF)];
}

static inline void sym_add(const pf_tokenizer *tok, bpe_sym *syms, size_t *n, int32_t id, uint32_t len)
{
    size_t i = (*n)++;
    syms[i].c = id;
    syms[i].len = len;
    syms[i].tlen = tok->model_tok[id].len;
    syms[i].prev = (int32_t)i - 1;
    syms[i].next = -1;
    if (i > 0)
        syms[i - 1].next = (int32_t)i;
}

static inline void push_pair(const pf_tokenizer *tok, bpe_merge *heap, size_t *hn, const bpe_sym *syms,
                             int32_t l, int32_t r)
{
    uint32_t rank;
    int32_t new_id;
    if (pf_tok_merges_get(&tok->merges, syms[l].c, syms[r].c, &rank, &new_id))
        heap_push(heap, hn,
                  (bpe_merge){rank, (uint32_t)l, new_id, syms[l].c, syms[r].c, syms[l].tlen + syms[r].tlen});
}

static int bpe_word(const pf_tokenizer *tok, const char *w, size_t wlen, enc_scratch *s, pf_ids *out,
                    pf_err *err)
{
    if (wlen == 0)
        return 0;
    if (tok->ignore_merges) {
        int32_t id = pf_tok_vocab_get(tok, w, wlen);
        if (id >= 0)
            return pf_ids_push(out, id, err);
    }
    if (wlen > INT32_MAX / 4)
        return pf_errf(err, "encode: word of %zu bytes is too long", wlen);
    if (grow((void **)&s->syms, &s->syms_cap, wlen + 1, sizeof(bpe_sym), err) != 0)
        return -1;
    bpe_sym *syms = s->syms;
    size_t n = 0;
    const uint8_t *u = (const uint8_t *)w;
    bool unk_pending = false;
    uint32_t unk_len = 0;
    for (size_t i = 0; i < wlen;) {
        uint32_t cp;
        size_t k = pf_utf8_seq(u + i, wlen - i, &cp);
        if (k == 0) /* cannot happen: input validated */
            return pf_errf(err, "encode: invalid UTF-8");
        int32_t id = char_id(tok, cp);
        if (id >= 0) {
            if (unk_pending) {
                sym_add(tok, syms, &n, tok->unk_id, unk_len);
                unk_pending = false;
            }
            sym_add(tok, syms, &n, id, (uint32_t)k);
        } else {
            bool done = false;
            if (tok->byte_fallback) {
                bool all = true;
                for (size_t b = 0; b < k; b++)
                    all = all && tok->byte_id[u[i + b]] >= 0;
                if (all) {
                    /* as in Rust: a pending unk is not flushed before byte tokens */
                    for (size_t b = 0; b < k; b++)
                        sym_add(tok, syms, &n, tok->byte_id[u[i + b]], 1);
                    done = true;
                }
            }
            if (!done && tok->has_unk) {
                if (tok->unk_id < 0)
                    return pf_errf(err, "encode: unk token \"%s\" is not in the vocabulary", tok->unk_token);
                if (unk_pending && tok->fuse_unk) {
                    unk_len += (uint32_t)k;
                } else {
                    if (unk_pending)
                        sym_add(tok, syms, &n, tok->unk_id, unk_len);
                    unk_pending = true;
                    unk_len = (uint32_t)k;
                }
            }
            /* no byte fallback and no unk token: the character is dropped, as in Rust */
        }
        i += k;
    }
    if (unk_pending)
        sym_add(tok, syms, &n, tok->unk_id, unk_len);

    if (n > 1) {
        if (grow((void **)&s->heap, &s->heap_cap, 3 * n + 1, sizeof(bpe_merge), err) != 0)
            return -1;
        bpe_merge *heap = s->heap;
        size_t hn = 0;
        /* the initial pairs are most of the lookups: prefetch their slots a batch ahead, the merge table
         * (16 MB for Gemma) does not fit in cache */
        for (size_t i = 0; i + 1 < n; i += 16) {
            size_t e = i + 16 < n - 1 ? i + 16 : n - 1;
            for (size_t j = i; j < e; j++)
                pf_tok_merges_prefetch(&tok->merges, pf_tok_merge_key(syms[j].c, syms[j + 1].c));
            for (size_t j = i; j < e; j++)
                push_pair(tok, heap, &hn, syms, (int32_t)j, (int32_t)j + 1);
        }
        while (hn > 0) {
            bpe_merge top = heap_pop(heap, &hn);
            bpe_sym *l = &syms[top.pos];
            if (l->len == 0 || l->next < 0)
                continue;
            bpe_sym *r = &syms[l->next];
            if (l->c != top.a || r->c != top.b) {
                /* Stale entry. Rust keeps it if merges[(l, r)] gives the same new id, which needs
                 * tlen(l) + tlen(r) == tlen(new): check the lengths first, look up only then. */
                uint32_t rank;
                int32_t nid;
                if (l->tlen + r->tlen != top.tl ||
                    !pf_tok_merges_get(&tok->merges, l->c, r->c, &rank, &nid) || nid != top.new_id)
                    continue;
            }
            l->c = top.new_id;
            l->len += r->len;
            l->tlen += r->tlen;
            l->next = r->next;
            r->len = 0;
            if (l->next >= 0)
                syms[l->next].prev = (int32_t)top.pos;
            if (l->prev >= 0)
                pf_tok_merges_prefetch(&tok->merges, pf_tok_merge_key(syms[l->prev].c, l->c));
            if (l->next >= 0)
                pf_tok_merges_prefetch(&tok->merges, pf_tok_merge_key(l->c, syms[l->next].c));
            if (l->prev >= 0)
                push_pair(tok, heap, &hn, syms, l->prev, (int32_t)top.pos);
            if (l->next >= 0)
                push_pair(tok, heap, &hn, syms, (int32_t)top.pos, l->next);
        }
    }
    if (pf_ids_reserve(out, n, err) != 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (syms[i].len != 0)
            out->v[out->n++] = syms[i].c;
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* added-token splitting                                                                             */

/* Start of the run of whitespace characters that ends at s[end] (Rust: regex \s*$ on s[..end]). */
static size_t ws_run_start(const uint8_t *s, size_t end)
{
    size_t i = end;
    while (i > 0) {
        size_t j = i - 1;
        while (j > 0 && (s[j] & 0xC0) == 0x80)
            j--;
        uint32_t cp;
        if (pf_utf8_seq(s + j, i - j, &cp) != i - j || !pf_unicode_is_space(cp))
            break;
        i = j;
    }
    return i;
}

/* Length of the run of whitespace characters at the start of s[0..n) (Rust: ^\s*). */
static size_t ws_run_len(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = pf_utf8_seq(s + i, n - i, &cp);
        if (k == 0 || !pf_unicode_is_space(cp))
            break;
        i += k;
    }
    return i;
}

typedef int (*piece_fn)(const pf_tokenizer *tok, const char *p, size_t len, enc_scratch *s, pf_ids *out,
                        pf_err *err);

/* AddedVocabulary::find_matches + split_with_indices: added tokens become ids, the pieces between them go
 * to `piece` (empty pieces are dropped, as PreTokenizedString::split does). */
static int split_added(const pf_tokenizer *tok, const pf_tok_trie *trie, const char *text, size_t len,
                       piece_fn piece, enc_scratch *s, pf_ids *out, pf_err *err)
{
    const uint8_t *u = (const uint8_t *)text;
    size_t start_offset = 0, pos = 0, ms, me;
    int32_t k;
    while (pos < len && pf_tok_trie_find(trie, u, len, pos, &ms, &me, &k)) {
        pos = me; /* the matcher continues after the match itself, not after stripped spaces */
        const pf_tok_added *t = &tok->added[k];
        size_t start = ms, stop = me;
        if (t->lstrip) {
            size_t ns = ws_run_start(u, start);
            start = ns > start_offset ? ns : start_offset;
        }
        if (t->rstrip)
            stop += ws_run_len(u + stop, len - stop);
        if (start_offset < start && piece(tok, text + start_offset, start - start_offset, s, out, err) != 0)
            return -1;
        if (pf_ids_push(out, (int32_t)t->id, err) != 0)
            return -1;
        start_offset = stop;
    }
    if (start_offset < len && piece(tok, text + start_offset, len - start_offset, s, out, err) != 0)
        return -1;
    return 0;
}

static int bpe_piece(const pf_tokenizer *tok, const char *p, size_t len, enc_scratch *s, pf_ids *out,
                     pf_err *err)
{
    if (!tok->split_at_space)
        return bpe_word(tok, p, len, s, out, err);
    /* cut before every U+2581 that follows another character (exact, see pf_tok_check_word_split) */
    static const char SP[] = "\xE2\x96\x81";
    size_t start = 0;
    for (const char *h = p + 1; (h = memmem(h, len - (size_t)(h - p), SP, 3)) != NULL; h += 3) {
        size_t at = (size_t)(h - p);
        if (at >= 3 && memcmp(h - 3, SP, 3) == 0)
            continue;
        if (bpe_word(tok, p + start, at - start, s, out, err) != 0)
            return -1;
        start = at;
    }
    return bpe_word(tok, p + start, len - start, s, out, err);
}

/* A piece of raw text between non-normalized added tokens: normalize, then the normalized added tokens. */
static int raw_piece(const pf_tokenizer *tok, const char *p, size_t len, enc_scratch *s, pf_ids *out,
                     pf_err *err)
{
    size_t nlen;
    if (pf_tok_normalize(tok, p, len, &s->norm, &s->norm_cap, &nlen, err) != 0)
        return -1;
    if (nlen == 0)
        return 0;
    /* s->norm is not touched again until this piece is done (bpe_word uses other buffers) */
    return split_added(tok, &tok->trie_norm, s->norm, nlen, bpe_piece, s, out, err);
}

int pf_tokenizer_encode(const pf_tokenizer *tok, const char *text, size_t len, pf_ids *out, pf_err *err)
{
    if (len == 0)
        return 0;
    if (!text)
        return pf_errf(err, "encode: NULL text");
    size_t bad = pf_utf8_check((const uint8_t *)text, len);
    if (bad != len)
        return pf_errf(err, "encode: invalid UTF-8 at byte %zu", bad);
    enc_scratch s = {0};
    int rc = split_added(tok, &tok->trie_raw, text, len, raw_piece, &s, out, err);
    scratch_free(&s);
    return rc;
}
