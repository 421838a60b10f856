/* tokenizer_decode.c - ids -> text, as Tokenizer::decode in the Rust library:
 *
 *   ids -> token strings (added tokens first, then the model vocab; unknown ids are dropped), minus the
 *   special tokens when skip_special; then the decoder chain, each step a function from a list of strings
 *   to a list of strings (Replace, ByteFallback, Fuse, Strip), and finally the list is concatenated.
 *   Without a decoder the tokens are joined with " ".
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer/tokenizer_internal.h"

typedef struct tokv {
    const char *p;
    size_t len;
} tokv;

typedef struct dec_list {
    tokv *t;
    size_t n;
    char **bufs; /* buffers the tokens point into, freed at the end */
    size_t nbufs;
} dec_list;

static void list_free(dec_list *l)
{
    free(l->t);
    for (size_t i = 0; i < l->nbufs; i++)
        free(l->bufs[i]);
    free(l->bufs);
}

static char *new_buf(dec_list *l, size_t size, pf_err *err)
{
    char **b = realloc(l->bufs, (l->nbufs + 1) * sizeof *b);
    if (!b) {
        pf_errf(err, "decode: out of memory");
        return NULL;
    }
    l->bufs = b;
    char *p = malloc(size ? size : 1);
    if (!p) {
        pf_errf(err, "decode: out of memory (%zu bytes)", size);
        return NULL;
    }
    l->bufs[l->nbufs++] = p;
    return p;
}

static size_t total_len(const dec_list *l)
{
    size_t t = 0;
    for (size_t i = 0; i < l->n; i++)
        t += l->t[i].len;
    return t;
}

static int step_replace(dec_list *l, const pf_tok_dec *st, pf_err *err)
{
    size_t total = total_len(l), plen = st->pattern_len, clen = st->content_len, worst = total;
    if (clen > plen) {
        size_t n = total / plen;
        if (n > (SIZE_MAX / 2 - total) / (clen - plen))
            return pf_errf(err, "decode: output too large");
        worst = total + n * (clen - plen);
    }
    char *o = new_buf(l, worst, err);
    if (!o)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++) {
        const char *in = l->t[i].p;
        size_t len = l->t[i].len, j = 0, start = k;
        while (j < len) {
            const char *hit = plen == 1 ? memchr(in + j, st->pattern[0], len - j)
                                        : memmem(in + j, len - j, st->pattern, plen);
            if (!hit) {
                memcpy(o + k, in + j, len - j);
                k += len - j;
                break;
            }
            size_t at = (size_t)(hit - in);
            memcpy(o + k, in + j, at - j);
            k += at - j;
            memcpy(o + k, st->content, clen);
            k += clen;
            j = at + plen;
        }
        l->t[i] = (tokv){o + start, k - start};
    }
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "<0xHH>" -> byte, as `token.len() == 6 && starts_with("<0x") && ends_with('>')` followed by
 * u8::from_str_radix(&token[3..5], 16) (which also accepts a leading '+': "<0x+F>" is 0x0F). */
static int byte_token(const tokv *t)
{
    if (t->len != 6 || memcmp(t->p, "<0x", 3) != 0 || t->p[5] != '>')
        return -1;
    int lo = hexval(t->p[4]);
    if (lo < 0)
        return -1;
    if (t->p[3] == '+')
        return lo;
    int hi = hexval(t->p[3]);
    return hi < 0 ? -1 : hi * 16 + lo;
}

static int step_byte_fallback(dec_list *l, pf_err *err)
{
    /* a run of k byte tokens (6k bytes of input) becomes at most 3k bytes */
    char *o = new_buf(l, total_len(l), err);
    if (!o)
        return -1;
    size_t k = 0, w = 0;
    for (size_t i = 0; i < l->n;) {
        if (byte_token(&l->t[i]) < 0) {
            l->t[w++] = l->t[i++];
            continue;
        }
        size_t start = k, j = i;
        for (; j < l->n; j++) {
            int b = byte_token(&l->t[j]);
            if (b < 0)
                break;
            o[k++] = (char)b;
        }
        size_t nbytes = k - start;
        if (pf_utf8_check((const uint8_t *)o + start, nbytes) == nbytes) {
            l->t[w++] = (tokv){o + start, nbytes};
        } else {
            /* every byte of an invalid run becomes U+FFFD; 3 bytes each, written after the run's bytes
             * would overlap, so rewrite the run in place from its start (3 * nbytes <= 6 * nbytes input) */
            k = start;
            for (size_t b = 0; b < nbytes; b++) {
                memcpy(o + k, "\xEF\xBF\xBD", 3);
                l->t[w++] = (tokv){o + k, 3};
                k += 3;
            }
        }
        i = j;
    }
    l->n = w;
    return 0;
}

static int step_fuse(dec_list *l, pf_err *err)
{
    size_t total = total_len(l);
    char *o = new_buf(l, total, err);
    if (!o)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++) {
        memcpy(o + k, l->t[i].p, l->t[i].len);
        k += l->t[i].len;
    }
    l->t[0] = (tokv){o, k};
    l->n = 1;
    return 0;
}

/* Strip: remove up to `start` leading and `stop` trailing copies of one character from each token. Where
 * the Rust code would panic (stop beyond the token, or cuts crossing) we return what is left, if anything. */
static void step_strip(dec_list *l, const pf_tok_dec *st)
{
    for (size_t i = 0; i < l->n; i++) {
        const uint8_t *p = (const uint8_t *)l->t[i].p;
        size_t len = l->t[i].len, a = 0, b = len;
        for (size_t c = 0; c < st->strip_start && a < len; c++) {
            uint32_t cp;
            size_t k = pf_utf8_seq(p + a, len - a, &cp);
            if (k == 0 || cp != st->strip_char)
                break;
            a += k;
        }
        for (size_t c = 0; c < st->strip_stop && b > 0; c++) {
            size_t j = b - 1;
            while (j > 0 && (p[j] & 0xC0) == 0x80)
                j--;
            uint32_t cp;
            if (pf_utf8_seq(p + j, b - j, &cp) != b - j || cp != st->strip_char)
                break;
            b = j;
        }
        if (a > b)
            a = b;
        l->t[i] = (tokv){(const char *)p + a, b - a};
    }
}

int pf_tokenizer_decode(const pf_tokenizer *tok, const int32_t *ids, size_t n, int skip_special, char **out,
                        size_t *out_len, pf_err *err)
{
    *out = NULL;
    *out_len = 0;
    dec_list l = {0};
    l.t = malloc((n ? n : 1) * sizeof *l.t);
    if (!l.t)
        return pf_errf(err, "decode: out of memory for %zu ids", n);
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || (uint32_t)id >= tok->n_ids || tok->any_tok[id].len == PF_TOK_NO_ID)
            continue;
        if (skip_special && (tok->id_flags[id] & PF_TOKF_SPECIAL))
            continue;
        l.t[l.n++] = (tokv){tok->pool + tok->any_tok[id].off, tok->any_tok[id].len};
    }
    int rc = 0;
    if (tok->has_decoder) {
        for (size_t s = 0; s < tok->n_dec && rc == 0; s++) {
            const pf_tok_dec *st = &tok->dec[s];
            switch (st->kind) {
            case PF_DEC_REPLACE:
                rc = step_replace(&l, st, err);
                break;
            case PF_DEC_BYTE_FALLBACK:
                rc = step_byte_fallback(&l, err);
                break;
            case PF_DEC_FUSE:
                if (l.n > 0)
                    rc = step_fuse(&l, err);
                break;
            case PF_DEC_STRIP:
                step_strip(&l, st);
                break;
            }
        }
    }
    if (rc == 0) {
        /* no decoder: tokens.join(" "); with a decoder: concatenation */
        size_t sep = (!tok->has_decoder && l.n > 0) ? l.n - 1 : 0;
        size_t total = total_len(&l) + sep;
        char *o = malloc(total + 1);
        if (!o) {
            rc = pf_errf(err, "decode: out of memory (%zu bytes)", total);
        } else {
            size_t k = 0;
            for (size_t i = 0; i < l.n; i++) {
                if (i > 0 && !tok->has_decoder)
                    o[k++] = ' ';
                memcpy(o + k, l.t[i].p, l.t[i].len);
                k += l.t[i].len;
            }
            o[k] = '\0';
            *out = o;
            *out_len = k;
        }
    }
    list_free(&l);
    return rc;
}
