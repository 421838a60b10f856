/* producer_items.c - the items the producer holds in memory: every item between its first hand-out and
 * the sink's acknowledgement is a `flight` (at most a few hundred: credit and --max-ready bound them), the
 * raw queue holds the next items to preprocess (refilled from the job store in id order; retries go to the
 * front), and the ready queue the preprocessed ones waiting for an inference worker. */
#include <stdlib.h>
#include <string.h>

#include "pipeline/producer_internal.h"

int pf_prod_queue_push(prod *p, int64_t id, const char *path, int attempts, int front)
{
    if (p->pq_n == p->pq_cap) {
        size_t nc = p->pq_cap ? 2 * p->pq_cap : 256;
        pending *nv = malloc(nc * sizeof *nv);
        if (!nv)
            return -1;
        for (size_t i = 0; i < p->pq_n; i++)
            nv[i] = p->pq[(p->pq_head + i) % p->pq_cap];
        free(p->pq);
        p->pq = nv;
        p->pq_cap = nc;
        p->pq_head = 0;
    }
    char *copy = strdup(path);
    if (!copy)
        return -1;
    pending e = {id, copy, attempts};
    if (front) {
        p->pq_head = (p->pq_head + p->pq_cap - 1) % p->pq_cap;
        p->pq[p->pq_head] = e;
    } else {
        p->pq[(p->pq_head + p->pq_n) % p->pq_cap] = e;
    }
    p->pq_n++;
    return 0;
}

int pf_prod_queue_pop(prod *p, pending *out)
{
    if (!p->pq_n)
        return 0;
    *out = p->pq[p->pq_head];
    p->pq_head = (p->pq_head + 1) % p->pq_cap;
    p->pq_n--;
    return 1;
}

int pf_prod_ready_push(prod *p, flight *f, int front)
{
    if (p->rd_n == p->rd_cap) {
        size_t nc = p->rd_cap ? 2 * p->rd_cap : 64;
        flight **nv = malloc(nc * sizeof *nv);
        if (!nv)
            return -1;
        for (size_t i = 0; i < p->rd_n; i++)
            nv[i] = p->ready[(p->rd_head + i) % p->rd_cap];
        free(p->ready);
        p->ready = nv;
        p->rd_cap = nc;
        p->rd_head = 0;
    }
    if (front) {
        p->rd_head = (p->rd_head + p->rd_cap - 1) % p->rd_cap;
        p->ready[p->rd_head] = f;
    } else {
        p->ready[(p->rd_head + p->rd_n) % p->rd_cap] = f;
    }
    p->rd_n++;
    return 0;
}

flight *pf_prod_ready_pop(prod *p)
{
    while (p->rd_n) {
        flight *f = p->ready[p->rd_head];
        p->rd_head = (p->rd_head + 1) % p->rd_cap;
        p->rd_n--;
        if (f->stage == FL_READY)   /* entries can go stale (the item was acknowledged meanwhile) */
            return f;
    }
    return NULL;
}

flight *pf_prod_flight_find(prod *p, int64_t id)
{
    for (size_t i = 0; i < p->n_fl; i++)
        if (p->fl[i]->id == id)
            return p->fl[i];
    return NULL;
}

flight *pf_prod_flight_new(prod *p, int64_t id, const char *path, int attempts)
{
    if (p->n_fl == p->cap_fl) {
        size_t nc = p->cap_fl ? 2 * p->cap_fl : 64;
        flight **nv = realloc(p->fl, nc * sizeof *nv);
        if (!nv)
            return NULL;
        p->fl = nv;
        p->cap_fl = nc;
    }
    flight *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return NULL;
    }
    f->id = id;
    f->attempts = attempts;
    f->peer = -1;
    f->tm = (pf_timings){-1, -1, -1, -1, -1, -1};
    p->fl[p->n_fl++] = f;
    return f;
}

void pf_prod_flight_drop_tensor(flight *f)
{
    free(f->rgb);
    f->rgb = NULL;
}

void pf_prod_flight_remove(prod *p, flight *f)
{
    for (size_t i = 0; i < p->n_fl; i++)
        if (p->fl[i] == f) {
            p->fl[i] = p->fl[--p->n_fl];
            break;
        }
    f->stage = 0;   /* stale for any ready-queue entry still pointing here... */
    /* ...so ready entries never point at freed memory: purge them first. */
    size_t w = 0;
    for (size_t i = 0; i < p->rd_n; i++) {
        flight *g = p->ready[(p->rd_head + i) % p->rd_cap];
        if (g != f)
            p->ready[(p->rd_head + w++) % p->rd_cap] = g;
    }
    p->rd_n = w;
    free(f->rgb);
    free(f->path);
    free(f->w_pre);
    free(f->err_stage);
    free(f->err_msg);
    free(f);
}

size_t pf_prod_count_stage(const prod *p, int stage)
{
    size_t n = 0;
    for (size_t i = 0; i < p->n_fl; i++)
        n += p->fl[i]->stage == stage;
    return n;
}
