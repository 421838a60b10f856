/* producer_items.c - the items the producer holds in memory: every item between its first hand-out and
 * the sink's acknowledgement is a `flight` (at most a few hundred: credit and --max-ready bound them), the
 * raw queue holds the next items to preprocess (refilled from the job store in id order; retries go to the
 * front), and the ready queue the preprocessed ones waiting for an inference worker. */
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "pipeline/producer_internal.h"

int pf_prod_queue_push(prod *p, int64_t id, const char *path, int attempts, int front)
{
    size_t len = strlen(path);
    pending *e = malloc(sizeof *e + len + 1);
    if (!e)
        return -1;
    e->id = id;
    e->attempts = attempts;
    memcpy(e->path, path, len + 1);
    if (front ? pf_ring_push_front(&p->raw, e) : pf_ring_push(&p->raw, e)) {
        free(e);
        return -1;
    }
    return 0;
}

pending *pf_prod_queue_pop(prod *p)
{
    return pf_ring_pop(&p->raw);
}

int pf_prod_ready_push(prod *p, flight *f, int front)
{
    return front ? pf_ring_push_front(&p->ready, f) : pf_ring_push(&p->ready, f);
}

flight *pf_prod_ready_pop(prod *p)
{
    flight *f;
    while ((f = pf_ring_pop(&p->ready)))
        if (f->stage == FL_READY)   /* entries can go stale (the item was acknowledged meanwhile) */
            return f;
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
    f->task = p->task;
    f->settings = p->settings;
    p->fl[p->n_fl++] = f;
    return f;
}

int pf_prod_flight_load_task(prod *p, flight *f, int *final)
{
    pf_item_row r;
    pf_err e = {{0}};
    if (final)
        *final = 0;
    if (pf_jobstore_get(p->js, f->id, &r, &e)) {
        pf_error(LOG, "%s", e.msg);
        return -1;
    }
    if (final)
        *final = r.state == PF_ITEM_DONE || r.state == PF_ITEM_FAILED;
    int rc = 0;
    free(f->meta);
    f->meta = r.meta;
    r.meta = NULL;
    if (r.task) {
        pf_task t;
        char *prompt = NULL;
        int size = 0;
        if (pf_prod_task_from_json(r.task, &t, &prompt, &size, &e)) {
            pf_error(LOG, "%s: item %lld: %s", p->o->db, (long long)f->id, e.msg);
            rc = -1;
        } else {
            free(f->prompt);
            f->prompt = prompt;
            f->task = t;
            f->settings = pf_task_hash(&t, p->image_size);
        }
    }
    pf_item_rows_free(&r, 1);
    return rc;
}

int pf_prod_item_final(prod *p, int64_t id)
{
    int state = -1;
    pf_err e = {{0}};
    if (pf_jobstore_state(p->js, id, &state, &e)) {
        pf_error(LOG, "%s", e.msg);
        return 0;
    }
    return state == PF_ITEM_DONE || state == PF_ITEM_FAILED;
}

void pf_prod_flight_drop_tensor(flight *f)
{
    if (f->has_frame)
        zmq_msg_close(&f->frame);
    f->has_frame = 0;
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
    pf_ring_remove(&p->ready, f);
    pf_prod_flight_drop_tensor(f);
    free(f->path);
    free(f->w_pre);
    free(f->err_stage);
    free(f->err_msg);
    free(f->holder);
    free(f->prompt);
    free(f->meta);
    free(f);
}

size_t pf_prod_count_stage(const prod *p, int stage)
{
    size_t n = 0;
    for (size_t i = 0; i < p->n_fl; i++)
        n += p->fl[i]->stage == stage;
    return n;
}
