/* ring.h - a growable double-ended queue of pointers (a ring buffer that doubles when full): the FIFO
 * queues of the producer and the workers, with a push to the front for items that go back first.
 * Not thread-safe: a queue shared between threads is used under the caller's lock. */
#ifndef PF_BASE_RING_H
#define PF_BASE_RING_H

#include <stddef.h>

typedef struct pf_ring {
    void **v;
    size_t head, n, cap;   /* n entries from v[head], wrapping at cap */
} pf_ring;

/* Zero-initialise ({0}) before first use. Push returns 0, or -1 when out of memory (nothing changed). */
int pf_ring_push(pf_ring *r, void *p);
int pf_ring_push_front(pf_ring *r, void *p);
/* The entry at the front, removed; NULL when empty. */
void *pf_ring_pop(pf_ring *r);
/* Remove every entry equal to P, keeping the order of the others. */
void pf_ring_remove(pf_ring *r, const void *p);
/* Free the storage (not the entries); the ring is empty and usable again. */
void pf_ring_free(pf_ring *r);

#endif
