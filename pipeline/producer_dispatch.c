/* producer_dispatch.c - handing items out under credit: raw items (file bytes, or the path with
 * --path-only) to preprocess workers while fewer than --max-ready images are in memory, preprocessed
 * items to inference workers, round-robin over the workers with credit. Each hand-out is a lease. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "base/file.h"
#include "base/log.h"
#include "pipeline/producer_internal.h"

/* Read a whole regular file without blocking on fifos or devices (base/file.h's shared reader), the reason
 * in WHY without the path (the record names it). */
static int read_item(const char *path, size_t max, uint8_t **out, size_t *len, char *why, size_t why_cap)
{
    pf_err e = {{0}};
    pf_file_fault fault;
    char *buf = NULL;
    if (pf_read_file_safe(path, max, &buf, len, &fault, &e)) {
        size_t pl = strlen(path);
        const char *msg = strncmp(e.msg, path, pl) == 0 && e.msg[pl] == ':' ? e.msg + pl + 2 : e.msg;
        int room = why_cap > 20 ? (int)(why_cap - 20) : 0;
        snprintf(why, why_cap, "%.*s%s", room, msg, fault == PF_FILE_TOO_BIG ? " (--max-file-mb)" : "");
        return -1;
    }
    *out = (uint8_t *)buf;
    return 0;
}

static int next_peer(prod *p, int role, int *rr)
{
    int n = p->n_peers;
    for (int k = 0; k < n; k++) {
        int i = (*rr + k) % n;
        if (p->peers[i].used && p->peers[i].role == role && p->peers[i].credit > 0) {
            *rr = (i + 1) % n;
            return i;
        }
    }
    return -1;
}

/* What every item message carries; the caller adds the stage's payload. */
static void item_msg(const prod *p, const flight *f, pf_msg *m)
{
    pf_msg_init(m, PF_MSG_ITEM);
    m->id = f->id;
    m->key = f->key;
    m->path = f->path;
    m->attempt = f->attempts;
    m->has_task = 1;
    m->task = f->task;
    m->meta = f->meta;
}

/* The item went out to worker PI for one credit: it is leased to it now, in memory and in the job store. */
static void lease_to(prod *p, flight *f, int pi, int stage, double lease_s, double now)
{
    int k = pf_prod_stage_index(stage);
    p->peers[pi].credit--;
    f->stage = stage;
    f->peer = pi;
    f->t_lease = now;
    pf_metric_add(p->m.leased[k], 1);
    f->deadline = now + lease_s;
    pf_err e = {{0}};
    pf_prod_tx(p);
    pf_prod_dbcheck(pf_jobstore_lease(p->js, f->id, f->key, k ? "inference" : "preprocess", p->peers[pi].name,
                                      pf_prod_unix_now() + lease_s, &e),
                    &e);
}

/* A file that cannot be read ends its item here: the producer makes its error record (stage "producer"). */
static void unreadable(prod *p, flight *f, const char *why)
{
    pf_item_key("", 0, f->settings, f->key);
    pf_err e = {{0}};
    pf_prod_tx(p);
    pf_prod_dbcheck(pf_jobstore_lease(p->js, f->id, f->key, "producer", "producer", pf_prod_unix_now(), &e), &e);
    pf_prod_make_error_record(p, f, "producer", why);
}

void pf_prod_dispatch_pre(prod *p, double now)
{
    pf_prod_release_delayed(p, now);
    pf_prod_clamp_credit(p, ROLE_PRE);
    size_t in_memory = pf_prod_count_stage(p, FL_PRE) + pf_prod_count_stage(p, FL_READY);
    while (p->raw.n > 0 && in_memory < (size_t)p->o->max_ready) {
        int pi = next_peer(p, ROLE_PRE, &p->rr_pre);
        if (pi < 0)
            return;
        pending *e = pf_prod_queue_pop(p);
        if (pf_keyset_has(&p->finished, (uint64_t)e->id, 1) || pf_prod_flight_find(p, e->id)) {
            free(e);
            continue;
        }
        flight *f = pf_prod_flight_new(p, e->id, e->path, e->attempts);
        free(e);
        if (!f) {
            pf_error(LOG, "out of memory");
            return;
        }
        pf_prod_flight_load_task(p, f);
        uint8_t *bytes = NULL;
        size_t len = 0;
        char why[400];
        double t_read = pf_now();
        int member = pf_prod_archive_read(p, f, &bytes, &len, why, sizeof why);   /* 0: not a shard's */
        if (member < 0 || (!member && read_item(f->path, p->o->max_file_bytes, &bytes, &len, why, sizeof why))) {
            unreadable(p, f, why);
            continue;
        }
        f->tm.read_s = pf_now() - t_read;
        pf_item_key(bytes, len, f->settings, f->key);
        pf_msg m;
        item_msg(p, f, &m);
        m.image_size = p->image_size;
        m.lease_s = p->o->preprocess_lease_s;
        char *canon = NULL;
        if (p->o->path_only && !member) {   /* a member travels as bytes: a worker cannot open it */
            m.path_only = 1;
            /* Workers run elsewhere (another folder, another host): a relative path would be read from
             * theirs. The record keeps the path as found (the job's identity). */
            canon = realpath(f->path, NULL);
            m.file = canon;
        } else {
            m.data = bytes ? bytes : (const uint8_t *)"";
            m.data_len = len;
        }
        /* The sink learns the lease first: it takes the worker's error record for the item only then. */
        if (pf_prod_note_lease(p, f, pi, FL_PRE)) {
            free(bytes);
            free(canon);
            pf_prod_note_unlease(p, f);
            pf_prod_queue_push(p, f->id, f->path, f->attempts, 1);
            pf_prod_flight_remove(p, f);
            return;
        }
        int bad = pf_prod_send_to(p, pi, &m);
        free(bytes);
        free(canon);
        if (bad) {   /* the worker vanished: put the item back untouched */
            pf_prod_note_unlease(p, f);
            pf_prod_queue_push(p, f->id, f->path, f->attempts, 1);
            pf_prod_flight_remove(p, f);
            pf_prod_peer_gone(p, pi, "is unreachable");
            continue;
        }
        lease_to(p, f, pi, FL_PRE, p->o->preprocess_lease_s, now);
        in_memory++;
    }
}

/* The worker an earlier task of the image (path hash H) went to, if it is still there with credit: -1 otherwise. */
static int affine_peer(prod *p, uint64_t h)
{
    if (p->n_tasks < 2 && !p->o->manifest)
        return -1;   /* one task per image: nothing to share */
    for (size_t i = 0; i < sizeof p->affinity / sizeof p->affinity[0]; i++) {
        int pi = p->affinity[i].peer - 1;   /* 0 = empty slot */
        if (p->affinity[i].h == h && pi >= 0 && pi < p->n_peers && p->peers[pi].used &&
            p->peers[pi].role == ROLE_INF && p->peers[pi].credit > 0)
            return pi;
    }
    return -1;
}

static void remember_affinity(prod *p, uint64_t h, int pi)
{
    p->affinity[p->affinity_next++ % (sizeof p->affinity / sizeof p->affinity[0])].h = h;
    p->affinity[(p->affinity_next - 1) % (sizeof p->affinity / sizeof p->affinity[0])].peer = pi + 1;
}

void pf_prod_dispatch_inf(prod *p, double now)
{
    pf_prod_clamp_credit(p, ROLE_INF);
    while (p->ready.n > 0) {
        if (next_peer(p, ROLE_INF, &(int){p->rr_inf}) < 0)
            return;   /* no inference worker with credit (probed without moving the round-robin) */
        flight *f = pf_prod_ready_pop(p);
        if (!f)
            return;
        uint64_t h = XXH3_64bits(f->path, strlen(f->path));
        int pi = affine_peer(p, h);
        if (pi < 0)
            pi = next_peer(p, ROLE_INF, &p->rr_inf);
        remember_affinity(p, h, pi);
        pf_msg m;
        item_msg(p, f, &m);
        m.image_size = f->size;
        m.width = f->width;
        m.height = f->height;
        m.data = f->rgb;
        m.data_len = (size_t)f->size * (size_t)f->size * 3;
        m.w_preprocess = f->w_pre;
        m.timings = f->tm;
        m.lease_s = p->o->inference_lease_s;
        if (pf_prod_note_lease(p, f, pi, FL_INF)) {   /* the sink takes the result only from this holder */
            pf_prod_note_unlease(p, f);
            pf_prod_ready_push(p, f, 1);
            return;
        }
        if (pf_prod_send_to(p, pi, &m)) {
            pf_prod_note_unlease(p, f);
            pf_prod_ready_push(p, f, 1);
            pf_prod_peer_gone(p, pi, "is unreachable");
            continue;
        }
        lease_to(p, f, pi, FL_INF, p->o->inference_lease_s, now);
    }
}
