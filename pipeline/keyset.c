#include "pipeline/keyset.h"

#include <stdlib.h>
#include <string.h>

void pf_keyset_init(pf_keyset *s) { memset(s, 0, sizeof *s); }

void pf_keyset_free(pf_keyset *s)
{
    free(s->slots);
    memset(s, 0, sizeof *s);
}

static size_t slot_of(uint64_t a, uint64_t b, size_t cap)
{
    uint64_t h = a ^ (b * 0x9E3779B97F4A7C15ull);
    h ^= h >> 31;
    return (size_t)h & (cap - 1);
}

static void put(uint64_t *slots, size_t cap, uint64_t a, uint64_t b)
{
    size_t i = slot_of(a, b, cap);
    while (slots[2 * i] || slots[2 * i + 1])
        i = (i + 1) & (cap - 1);
    slots[2 * i] = a;
    slots[2 * i + 1] = b;
}

int pf_keyset_has(const pf_keyset *s, uint64_t a, uint64_t b)
{
    if (!a && !b)
        return s->has_zero;
    if (!s->cap)
        return 0;
    size_t i = slot_of(a, b, s->cap);
    while (s->slots[2 * i] || s->slots[2 * i + 1]) {
        if (s->slots[2 * i] == a && s->slots[2 * i + 1] == b)
            return 1;
        i = (i + 1) & (s->cap - 1);
    }
    return 0;
}

int pf_keyset_add(pf_keyset *s, uint64_t a, uint64_t b)
{
    if (!a && !b) {
        int was = s->has_zero;
        s->has_zero = 1;
        return !was;
    }
    if (pf_keyset_has(s, a, b))
        return 0;
    if ((s->n + 1) * 2 > s->cap) {   /* keep the load under 1/2 */
        size_t nc = s->cap ? s->cap * 2 : 1024;
        uint64_t *ns = calloc(nc * 2, sizeof *ns);
        if (!ns)
            return -1;
        for (size_t i = 0; i < s->cap; i++)
            if (s->slots[2 * i] || s->slots[2 * i + 1])
                put(ns, nc, s->slots[2 * i], s->slots[2 * i + 1]);
        free(s->slots);
        s->slots = ns;
        s->cap = nc;
    }
    put(s->slots, s->cap, a, b);
    s->n++;
    return 1;
}

size_t pf_keyset_size(const pf_keyset *s) { return s->n + (s->has_zero ? 1 : 0); }

int pf_keyset_remove(pf_keyset *s, uint64_t a, uint64_t b)
{
    if (!a && !b) {
        int was = s->has_zero;
        s->has_zero = 0;
        return was;
    }
    if (!s->cap)
        return 0;
    size_t m = s->cap - 1, i = slot_of(a, b, s->cap);
    while (!(s->slots[2 * i] == a && s->slots[2 * i + 1] == b)) {
        if (!s->slots[2 * i] && !s->slots[2 * i + 1])
            return 0;
        i = (i + 1) & m;
    }
    /* Backward shift: a later key of the run whose home is not between the hole and it fills the hole. */
    for (size_t j = (i + 1) & m; s->slots[2 * j] || s->slots[2 * j + 1]; j = (j + 1) & m) {
        size_t home = slot_of(s->slots[2 * j], s->slots[2 * j + 1], s->cap);
        if (((j - home) & m) >= ((j - i) & m)) {
            s->slots[2 * i] = s->slots[2 * j];
            s->slots[2 * i + 1] = s->slots[2 * j + 1];
            i = j;
        }
    }
    s->slots[2 * i] = s->slots[2 * i + 1] = 0;
    s->n--;
    return 1;
}

void pf_keyset_clear(pf_keyset *s, size_t keep_cap)
{
    if (s->cap > keep_cap)
        pf_keyset_free(s);
    else if (s->cap)
        memset(s->slots, 0, s->cap * 2 * sizeof *s->slots);
    s->n = 0;
    s->has_zero = 0;
}

int pf_keyset_next(const pf_keyset *s, size_t *pos, uint64_t *a, uint64_t *b)
{
    for (; *pos < s->cap; ++*pos)
        if (s->slots[2 * *pos] || s->slots[2 * *pos + 1]) {
            *a = s->slots[2 * *pos];
            *b = s->slots[2 * (*pos)++ + 1];
            return 1;
        }
    if (*pos == s->cap && s->has_zero) {
        ++*pos;
        *a = *b = 0;
        return 1;
    }
    return 0;
}
