/* producer_quarantine.c - the producer's failure policy (PROTOCOL.md, "Failure policy"):
 *
 * - Backoff: a retried item waits 2^(attempt-1) x --retry-backoff seconds (jitter 0.5x..1.5x, at most 60 s)
 *   before it is handed out again, so a transient fault (a file still being written, a mount coming back)
 *   does not burn every attempt within a millisecond.
 * - Quarantine: a failure that is the worker's own (it cannot see a file the producer sees, its model wants
 *   another image size, items it failed keep succeeding elsewhere) stops all work to that worker (logged
 *   once, counted in paliflow_producer_quarantined_total) and costs the item nothing: one misconfigured
 *   worker must not turn the queue into error records.
 * - Credit: a worker never holds more than the capacity it announced, whatever hellos and credit messages
 *   were queued while it waited for a producer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/file.h"
#include "base/log.h"
#include "pipeline/producer_internal.h"

/* A retry waiting out its backoff: a raw item (id, path, attempts), or a preprocessed one still held in
 * memory as a flight (found again by id when due: it may have been dropped meanwhile). */
struct pf_delayed {
    double due;
    int64_t id;
    int attempts;
    int ready;     /* 1: a flight in FL_READY keeping its tensor */
    char *path;    /* raw items */
};

enum { STRIKES_TO_QUARANTINE = 3 };

static double backoff_s(prod *p, int attempts)
{
    double base = p->o->retry_backoff_s;
    if (base <= 0 || attempts <= 0)
        return 0;
    double d = base;
    for (int i = 1; i < attempts && d < 60; i++)
        d *= 2;
    if (d > 60)
        d = 60;
    /* xorshift64: jitter only needs to spread retries of items that failed together, not be secret */
    if (!p->rng)
        p->rng = (uint64_t)(pf_now() * 1e9) | 1;
    p->rng ^= p->rng << 13;
    p->rng ^= p->rng >> 7;
    p->rng ^= p->rng << 17;
    double u = (double)(p->rng >> 11) / (double)(1ULL << 53);
    return d * (0.5 + u);
}

int pf_prod_retry_later(prod *p, flight *f, double now)
{
    double wait = backoff_s(p, f->attempts);
    if (wait <= 0)
        return -1;   /* no backoff: the caller queues it at once */
    if (p->n_delayed == p->cap_delayed) {
        size_t nc = p->cap_delayed ? 2 * p->cap_delayed : 64;
        struct pf_delayed *nd = realloc(p->delayed, nc * sizeof *nd);
        if (!nd)
            return -1;
        p->delayed = nd;
        p->cap_delayed = nc;
    }
    struct pf_delayed *d = &p->delayed[p->n_delayed];
    memset(d, 0, sizeof *d);
    d->due = now + wait;
    d->id = f->id;
    d->attempts = f->attempts;
    d->ready = f->stage == FL_READY && f->rgb != NULL;
    if (!d->ready && !(d->path = strdup(f->path)))
        return -1;
    p->n_delayed++;
    pf_debug(LOG, "%s: next attempt in %.2f s", f->path, wait);
    return 0;
}

void pf_prod_release_delayed(prod *p, double now)
{
    for (size_t i = 0; i < p->n_delayed;) {
        struct pf_delayed *d = &p->delayed[i];
        if (d->due > now) {
            i++;
            continue;
        }
        if (d->ready) {
            flight *f = pf_prod_flight_find(p, d->id);
            if (f && f->stage == FL_READY && pf_prod_ready_push(p, f, 1))
                pf_error(LOG, "out of memory requeueing %s", f->path);
        } else if (pf_prod_queue_push(p, d->id, d->path, d->attempts, 1)) {
            pf_error(LOG, "out of memory requeueing %s", d->path);
            i++;
            continue;   /* stays delayed: tried again next turn */
        }
        free(d->path);
        p->delayed[i] = p->delayed[--p->n_delayed];
    }
}

size_t pf_prod_delayed_count(const prod *p) { return p->n_delayed; }

void pf_prod_delayed_free(prod *p)
{
    for (size_t i = 0; i < p->n_delayed; i++)
        free(p->delayed[i].path);
    free(p->delayed);
    p->delayed = NULL;
    p->n_delayed = p->cap_delayed = 0;
}

static const char *const g_role_labels[4] = {"", "role=\"preprocess\"", "role=\"inference\"", "role=\"sink\""};

void pf_prod_quarantine_gauge(prod *p, int role)
{
    int n = 0;
    for (int i = 0; i < p->n_peers; i++)
        n += p->peers[i].used && p->peers[i].role == role && p->peers[i].quarantined;
    pf_metric_set(pf_gauge("paliflow_producer_workers_quarantined", g_role_labels[role],
                           "Connected workers given no more work (their failures are their own)"),
                  n);
}

void pf_prod_quarantine(prod *p, int pi, const char *why)
{
    peer *w = &p->peers[pi];
    if (w->quarantined || w->role == ROLE_SINK)
        return;
    w->quarantined = 1;
    w->credit = 0;
    pf_warn(LOG, "%s worker %s quarantined: %s; it gets no more work (restart it fixed to clear this)",
            pf_prod_role_name(w->role), w->name, why);
    pf_metric_add(pf_counter("paliflow_producer_quarantined_total", g_role_labels[w->role],
                             "Workers quarantined: their failures were their own (missing files, another "
                             "model, items that succeed elsewhere)"),
                  1);
    pf_prod_quarantine_gauge(p, w->role);
}

void pf_prod_hello_policy(prod *p, int pi, const pf_msg *m)
{
    peer *w = &p->peers[pi];
    w->capacity = m->capacity > 0 ? m->capacity : 0;
    /* Restarted under the same name (fixed, one hopes) before we counted it gone: judged afresh. */
    if (w->pid > 0 && m->pid > 0 && m->pid != w->pid && (w->quarantined || w->strikes)) {
        if (w->quarantined)
            pf_info(LOG, "%s worker %s restarted (pid %lld): quarantine lifted", pf_prod_role_name(w->role), w->name,
                    (long long)m->pid);
        w->quarantined = 0;
        w->strikes = 0;
        memset(w->failed_ids, 0, sizeof w->failed_ids);
    }
    if (m->pid > 0)
        w->pid = m->pid;
    if (w->role == ROLE_INF && m->image_size > 0) {
        w->image_size = m->image_size;
        if (m->image_size != p->image_size) {
            char why[160];
            snprintf(why, sizeof why, "its model takes %d px images, the job is for %d px (--image-size)",
                     m->image_size, p->image_size);
            pf_prod_quarantine(p, pi, why);
        }
    }
    pf_prod_quarantine_gauge(p, w->role);
}

void pf_prod_clamp_credit(prod *p, int role)
{
    int any = 0;
    for (int i = 0; i < p->n_peers; i++)
        any |= p->peers[i].used && p->peers[i].role == role && p->peers[i].credit > 0;
    if (!any)
        return;
    for (int i = 0; i < p->n_peers; i++)
        if (p->peers[i].used && p->peers[i].role == role && p->peers[i].quarantined)
            p->peers[i].credit = 0;
    /* One pass over the items in flight per dispatch: a per-peer counter would have to follow every place
     * a lease ends, and one missed would starve the worker for good. */
    int64_t *held = calloc((size_t)p->n_peers, sizeof *held);
    if (!held)
        return;
    for (size_t k = 0; k < p->n_fl; k++) {
        const flight *f = p->fl[k];
        if (f->peer >= 0 && f->peer < p->n_peers && (f->stage == FL_PRE || f->stage == FL_INF))
            held[f->peer]++;
    }
    for (int i = 0; i < p->n_peers; i++) {
        peer *w = &p->peers[i];
        if (!w->used || w->role != role || w->capacity <= 0 || w->credit <= 0)
            continue;
        int64_t room = w->capacity - held[i];
        if (w->credit > room) {
            pf_debug(LOG, "%s: credit %lld cut to %lld (capacity %lld, holds %lld)", w->name,
                     (long long)w->credit, (long long)(room > 0 ? room : 0), (long long)w->capacity,
                     (long long)held[i]);
            w->credit = room > 0 ? room : 0;
        }
    }
    free(held);
}

int pf_prod_worker_fault(prod *p, int pi, flight *f, const char *why)
{
    /* A file gone from the producer's view too was deleted after the scan: the item's fault, charged as
     * usual (else every worker in turn would be quarantined for it). So is one that is not the file the item
     * was handed out with (replaced, rewritten): the worker may have looked while it was gone, as when a file
     * is swapped by unlink and create, and one such moment must not take a working worker out for good (the
     * only preprocess worker of safeio_path_only was, and the job waited forever). An inference worker's
     * fault (another model) does not depend on the file. */
    if (f->stage == FL_PRE) {
        struct stat st;
        if (stat(f->path, &st) != 0)
            return 0;
        file_seen now = pf_prod_file_seen(&st);
        if (f->seen.set && !pf_prod_same_file(&now, &f->seen)) {
            pf_debug(LOG, "%s: changed since it was handed out: %s is not blamed for it", f->path,
                     p->peers[pi].name);
            return 0;
        }
    }
    pf_prod_quarantine(p, pi, why);
    return 1;
}

void pf_prod_note_failure(prod *p, int pi, const flight *f)
{
    if (pi < 0 || pi >= p->n_peers || p->peers[pi].role == ROLE_SINK)
        return;
    peer *w = &p->peers[pi];
    w->failed_ids[w->failed_pos] = f->id + 1;
    w->failed_pos = (w->failed_pos + 1) % (int)(sizeof w->failed_ids / sizeof w->failed_ids[0]);
}

void pf_prod_success_elsewhere(prod *p, const flight *f, int pi)
{
    /* A worker's own success takes one strike off: one that fails more than it succeeds, on items others
     * finish, climbs to the quarantine; one with a rare transient failure never does. */
    if (pi >= 0 && p->peers[pi].strikes > 0)
        p->peers[pi].strikes--;
    for (int i = 0; i < p->n_peers; i++) {
        peer *w = &p->peers[i];
        if (i == pi || !w->used || w->role == ROLE_SINK || (pi >= 0 && w->role != p->peers[pi].role))
            continue;   /* a strike is for failing what a worker of the same stage then did */
        int hit = 0;
        for (size_t k = 0; k < sizeof w->failed_ids / sizeof w->failed_ids[0]; k++)
            if (w->failed_ids[k] == f->id + 1) {
                w->failed_ids[k] = 0;
                hit = 1;
            }
        if (hit && ++w->strikes >= STRIKES_TO_QUARANTINE) {
            char why[200];
            snprintf(why, sizeof why, "%d items it failed succeeded on other workers", w->strikes);
            pf_prod_quarantine(p, i, why);
        }
    }
}
