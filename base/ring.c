/* ring.c - see ring.h. */
#include "base/ring.h"

#include <stdlib.h>

static int grow(pf_ring *r)
{
    if (r->n < r->cap)
        return 0;
    size_t nc = r->cap ? 2 * r->cap : 16;
    void **nv = malloc(nc * sizeof *nv);
    if (!nv)
        return -1;
    for (size_t i = 0; i < r->n; i++)   /* unwrap: the entries start at 0 in the new storage */
        nv[i] = r->v[(r->head + i) % r->cap];
    free(r->v);
    r->v = nv;
    r->cap = nc;
    r->head = 0;
    return 0;
}

int pf_ring_push(pf_ring *r, void *p)
{
    if (grow(r))
        return -1;
    r->v[(r->head + r->n) % r->cap] = p;
    r->n++;
    return 0;
}

int pf_ring_push_front(pf_ring *r, void *p)
{
    if (grow(r))
        return -1;
    r->head = (r->head + r->cap - 1) % r->cap;
    r->v[r->head] = p;
    r->n++;
    return 0;
}

void *pf_ring_pop(pf_ring *r)
{
    if (!r->n)
        return NULL;
    void *p = r->v[r->head];
    r->head = (r->head + 1) % r->cap;
    r->n--;
    return p;
}

void pf_ring_remove(pf_ring *r, const void *p)
{
    size_t w = 0;
    for (size_t i = 0; i < r->n; i++) {
        void *q = r->v[(r->head + i) % r->cap];
        if (q != p)
            r->v[(r->head + w++) % r->cap] = q;
    }
    r->n = w;
}

void pf_ring_free(pf_ring *r)
{
    free(r->v);
    r->v = NULL;
    r->head = r->n = r->cap = 0;
}
