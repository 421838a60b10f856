/* keyset.h - a growable set of 128-bit keys (open addressing), for the sink's dedupe and the scanner's
 * visited directories. The all-zero key is stored out of band, so every value is usable. */
#ifndef PF_PIPELINE_KEYSET_H
#define PF_PIPELINE_KEYSET_H

#include <stddef.h>
#include <stdint.h>

typedef struct pf_keyset {
    uint64_t *slots;     /* pairs (a, b); (0, 0) = empty */
    size_t cap, n;       /* cap: number of pairs, power of two */
    int has_zero;
} pf_keyset;

void pf_keyset_init(pf_keyset *s);
void pf_keyset_free(pf_keyset *s);
/* 1 if added, 0 if it was there, -1 out of memory. */
int pf_keyset_add(pf_keyset *s, uint64_t a, uint64_t b);
int pf_keyset_has(const pf_keyset *s, uint64_t a, uint64_t b);
size_t pf_keyset_size(const pf_keyset *s);

#endif
