/* tokenizer_utf8.c - UTF-8 helpers for the tokenizer (validation exactly as Rust's str::from_utf8), and
 * the pf_ids vector. */
#include <stdlib.h>
#include <string.h>

#include "base/grow.h"
#include "model/tokenizer/tokenizer_internal.h"

size_t pf_utf8_seq(const uint8_t *s, size_t n, uint32_t *cp)
{
    if (n == 0)
        return 0;
    uint8_t b0 = s[0];
    if (b0 < 0x80) {
        *cp = b0;
        return 1;
    }
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        if (n < 2 || (s[1] & 0xC0) != 0x80)
            return 0;
        *cp = ((uint32_t)(b0 & 0x1F) << 6) | (s[1] & 0x3F);
        return 2;
    }
    if (b0 >= 0xE0 && b0 <= 0xEF) {
        if (n < 3)
            return 0;
        uint8_t b1 = s[1];
        /* E0: no overlongs (A0..BF); ED: no surrogates (80..9F) */
        if ((b0 == 0xE0 && (b1 < 0xA0 || b1 > 0xBF)) || (b0 == 0xED && (b1 < 0x80 || b1 > 0x9F)) ||
            (b1 & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        *cp = ((uint32_t)(b0 & 0x0F) << 12) | ((uint32_t)(b1 & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    if (b0 >= 0xF0 && b0 <= 0xF4) {
        if (n < 4)
            return 0;
        uint8_t b1 = s[1];
        /* F0: no overlongs (90..BF); F4: nothing above U+10FFFF (80..8F) */
        if ((b0 == 0xF0 && (b1 < 0x90 || b1 > 0xBF)) || (b0 == 0xF4 && (b1 < 0x80 || b1 > 0x8F)) ||
            (b1 & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        *cp = ((uint32_t)(b0 & 0x07) << 18) | ((uint32_t)(b1 & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) |
              (s[3] & 0x3F);
        return 4;
    }
    return 0;
}

size_t pf_utf8_check(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* ASCII fast path, 8 bytes at a time */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ULL)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = pf_utf8_seq(s + i, n - i, &cp);
        if (k == 0)
            return i;
        i += k;
    }
    return n;
}

bool pf_unicode_is_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

size_t pf_utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- pf_ids ---- */

void pf_ids_free(pf_ids *ids)
{
    if (!ids)
        return;
    free(ids->v);
    ids->v = NULL;
    ids->n = ids->cap = 0;
}

int pf_ids_reserve(pf_ids *ids, size_t extra, pf_err *err)
{
    if (PF_GROW(ids->v, ids->cap, ids->n, extra, 16))
        return pf_errf(err, "id vector: out of memory for %zu more ids (%zu held)", extra, ids->n);
    return 0;
}

int pf_ids_push(pf_ids *ids, int32_t id, pf_err *err)
{
    if (ids->n == ids->cap && pf_ids_reserve(ids, 1, err) != 0)
        return -1;
    ids->v[ids->n++] = id;
    return 0;
}
