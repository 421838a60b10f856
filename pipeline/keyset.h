/* keyset.h - a growable set of 128-bit keys (open addressing, linear probing), for compaction, the scanner's
 * visited directories and the sink index's open batch (sink_idset.c). The all-zero key is stored out of band, so every value is usable. */
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
/* 1 if removed, 0 if it was not there. No tombstones: the keys after it in its probe run move back. */
int pf_keyset_remove(pf_keyset *s, uint64_t a, uint64_t b);
/* Empty the set; its memory is kept when it holds at most KEEP_CAP slots, else given back. */
void pf_keyset_clear(pf_keyset *s, size_t keep_cap);
/* Every key once, in no order: for (size_t pos = 0; pf_keyset_next(s, &pos, &a, &b);) ... */
int pf_keyset_next(const pf_keyset *s, size_t *pos, uint64_t *a, uint64_t *b);

#endif
