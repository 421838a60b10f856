/* producer.c - see producer.h. One thread, one ROUTER socket, one job store. */
#include "pipeline/producer.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "base/file.h"
#include "base/log.h"
#include "base/metrics.h"
#include "pipeline/jobstore.h"
#include "pipeline/keyset.h"
#include "pipeline/progress.h"
#include "proto/wire.h"

#define LOG "producer"

void pf_producer_opts_defaults(pf_producer_opts *o)
{
    memset(o, 0, sizeof *o);
    pf_task_defaults(&o->task);
    o->max_attempts = 3;
    o->preprocess_lease_s = 120;
    o->inference_lease_s = 1800;
    o->ack_timeout_s = 60;
    o->hb_interval = 1.0;
    o->hb_timeout = 10.0;
    o->max_ready = 64;
    o->max_file_bytes = 48u << 20;
    o->lim = pf_proto_default_limits();
    o->progress = -1;
    o->progress_interval = 10;
}

enum { ROLE_PRE = 1, ROLE_INF, ROLE_SINK };
enum { FL_PRE = 1, FL_READY, FL_INF, FL_ACK, FL_SINKQ };

typedef struct peer {
    int used;
    uint8_t ident[256];
    size_t ident_len;
    char name[128];
    int role;
    int64_t credit;
    double last_seen;
} peer;

typedef struct flight {
    int64_t id;
    char key[PF_KEY_LEN + 1];
    char *path;
    int attempts;
    int stage;
    int peer;            /* lease holder (index into peers), -1 none */
    double deadline;
    uint8_t *rgb;        /* READY / INF: the preprocessed image */
    int size, width, height;
    char *w_pre;
    pf_timings tm;
    int started;         /* the lease holder reported it started working on it */
    double t_lease;      /* when the current lease began (metrics) */
    int is_error;        /* the record is a producer-made error record */
    char *err_stage, *err_msg;
} flight;

typedef struct pending {
    int64_t id;
    char *path;
    int attempts;
} pending;

typedef struct prod {
    const pf_producer_opts *o;
    pf_jobstore *js;
    void *sock;
    char instance[40];
    pf_task task;           /* the job's task (strings owned below) */
    char *prompt;
    int image_size;
    uint64_t settings;
    peer *peers;
    int n_peers;
    flight **fl;
    size_t n_fl, cap_fl;
    pending *pq;            /* deque of items to preprocess */
    size_t pq_head, pq_n, pq_cap;
    flight **ready;         /* FIFO of preprocessed items */
    size_t rd_head, rd_n, rd_cap;
    int64_t cursor;         /* last item id loaded from the job store */
    int db_exhausted;       /* no queued items with id > cursor (until the scan adds more) */
    pf_scan *scan;
    int scanning;
    pf_keyset finished;     /* ids finished in this run (to skip stale pending entries) */
    int64_t total, done, failed;
    int64_t at_start_done;
    double t0;
    pf_progress prog;
    int rr_pre, rr_inf;
    pf_zap *zap;
    double t0_unix;
    /* this run's statistics (metrics and the job report); index 0 preprocess, 1 inference */
    int64_t requeued[2], expired[2], handed_back[2], joined[4], lost[4];
    int64_t done_run, failed_run;
    pf_rate rate;
    double last_gauges;
    struct {
        pf_metric *items[6], *queue[2], *job_items, *leased[2], *retried[2], *expired[2], *handed_back[2];
        pf_metric *finished[2], *errors[3], *workers[4], *joined[4], *lost[4], *hb_age[4], *stage_s[2];
        pf_metric *ips, *complete, *scanning;
    } m;
} prod;

static void metrics_init(prod *p)
{
    static const char *const states[6] = {"queued", "leased", "ready", "awaiting_ack", "done", "failed"};
    static const char *const stages[2] = {"stage=\"preprocess\"", "stage=\"inference\""};
    static const char *const roles[4] = {"", "role=\"preprocess\"", "role=\"inference\"", "role=\"sink\""};
    char l[64];
    for (int i = 0; i < 6; i++) {
        snprintf(l, sizeof l, "state=\"%s\"", states[i]);
        p->m.items[i] = pf_gauge("paliflow_producer_items", l,
                                 "Items of the job by state (queued: not handed out yet; leased: held by a worker; "
                                 "ready: preprocessed, waiting for inference; awaiting_ack: record sent, not yet on "
                                 "disk; done; failed: error record written)");
    }
    p->m.queue[0] = pf_gauge("paliflow_producer_queue_depth", "queue=\"preprocess\"",
                             "Items waiting for a worker: raw (preprocess) or preprocessed (inference)");
    p->m.queue[1] = pf_gauge("paliflow_producer_queue_depth", "queue=\"inference\"",
                             "Items waiting for a worker: raw (preprocess) or preprocessed (inference)");
    p->m.job_items = pf_gauge("paliflow_producer_job_items", "", "Items in the job (grows while the scan runs)");
    for (int k = 0; k < 2; k++) {
        p->m.leased[k] = pf_counter("paliflow_producer_leased_total", stages[k], "Items handed to a worker (leases)");
        p->m.retried[k] = pf_counter("paliflow_producer_retried_total", stages[k],
                                     "Leases lost (expired, worker gone, handed back, retry asked) and requeued");
        p->m.expired[k] = pf_counter("paliflow_producer_leases_expired_total", stages[k],
                                     "Leases whose deadline passed");
        p->m.handed_back[k] = pf_counter("paliflow_producer_handed_back_total", stages[k],
                                         "Items a leaving worker handed back (no attempt counted)");
        p->m.stage_s[k] = pf_histogram("paliflow_producer_lease_seconds", stages[k],
                                       "Seconds from handing an item out to getting its result back",
                                       pf_buckets_seconds, pf_buckets_seconds_n);
    }
    p->m.finished[0] = pf_counter("paliflow_producer_finished_total", "outcome=\"done\"",
                                  "Items finished in this run (record on disk)");
    p->m.finished[1] = pf_counter("paliflow_producer_finished_total", "outcome=\"failed\"",
                                  "Items finished in this run (record on disk)");
    static const char *const estages[3] = {"stage=\"producer\"", "stage=\"preprocess\"", "stage=\"inference\""};
    for (int k = 0; k < 3; k++)
        p->m.errors[k] = pf_counter("paliflow_producer_error_records_total", estages[k],
                                    "Error records the producer made (unreadable file, gave up after N attempts)");
    for (int r = 1; r < 4; r++) {
        p->m.workers[r] = pf_gauge("paliflow_producer_workers", roles[r], "Connected peers by role");
        p->m.joined[r] = pf_counter("paliflow_producer_workers_joined_total", roles[r], "Peers that joined");
        p->m.lost[r] = pf_counter("paliflow_producer_workers_lost_total", roles[r],
                                  "Peers that left or went silent");
        p->m.hb_age[r] = pf_gauge("paliflow_producer_heartbeat_age_seconds", roles[r],
                                  "Longest time since a connected peer of this role was heard from");
    }
    p->m.ips = pf_gauge("paliflow_producer_images_per_second", "", "Items finished per second (last 60 s)");
    p->m.complete = pf_gauge("paliflow_producer_job_complete", "", "1 once every item is done or failed");
    p->m.scanning = pf_gauge("paliflow_producer_scanning", "", "1 while the inputs are being listed");
    pf_rate_init(&p->rate, 60);
}

static int stage_index(int fl_stage) { return fl_stage == FL_INF ? 1 : 0; }

/* ---------- small containers ---------- */

static int pq_push(prod *p, int64_t id, const char *path, int attempts, int front)
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

static int pq_pop(prod *p, pending *out)
{
    if (!p->pq_n)
        return 0;
    *out = p->pq[p->pq_head];
    p->pq_head = (p->pq_head + 1) % p->pq_cap;
    p->pq_n--;
    return 1;
}

static int rd_push(prod *p, flight *f, int front)
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

static flight *rd_pop(prod *p)
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

static flight *fl_find(prod *p, int64_t id)
{
    for (size_t i = 0; i < p->n_fl; i++)
        if (p->fl[i]->id == id)
            return p->fl[i];
    return NULL;
}

static flight *fl_new(prod *p, int64_t id, const char *path, int attempts)
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

static void fl_drop_tensor(flight *f)
{
    free(f->rgb);
    f->rgb = NULL;
}

static void fl_remove(prod *p, flight *f)
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

/* ---------- job store helpers ---------- */

static int tx(prod *p)
{
    pf_err e = {{0}};
    if (!pf_jobstore_in_tx(p->js) && pf_jobstore_begin(p->js, &e)) {
        pf_error(LOG, "%s", e.msg);
        return -1;
    }
    return 0;
}

static void dbcheck(int rc, const pf_err *e)
{
    if (rc)
        pf_error(LOG, "%s", e->msg);
}

static double unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---------- peers ---------- */

static int peer_find(prod *p, const uint8_t *ident, size_t len)
{
    for (int i = 0; i < p->n_peers; i++)
        if (p->peers[i].used && p->peers[i].ident_len == len && memcmp(p->peers[i].ident, ident, len) == 0)
            return i;
    return -1;
}

static const char *role_name(int role)
{
    return role == ROLE_PRE ? "preprocess" : role == ROLE_INF ? "inference" : "sink";
}

static int count_role(const prod *p, int role)
{
    int n = 0;
    for (int i = 0; i < p->n_peers; i++)
        n += p->peers[i].used && p->peers[i].role == role;
    return n;
}

static int send_to(prod *p, int pi, pf_msg *m)
{
    pf_err e = {{0}};
    m->instance = p->instance;
    if (pf_wire_send(p->sock, p->peers[pi].ident, p->peers[pi].ident_len, m, &e)) {
        pf_debug(LOG, "to %s (%s): %s", p->peers[pi].name, pf_msg_type_name(m->type), e.msg);
        return -1;
    }
    return 0;
}

static void send_reset(prod *p, const uint8_t *ident, size_t len)
{
    pf_msg m;
    pf_msg_init(&m, PF_MSG_RESET);
    m.instance = p->instance;
    pf_err e = {{0}};
    pf_wire_send(p->sock, ident, len, &m, &e);
}

/* ---------- item outcomes ---------- */

static void make_error_record(prod *p, flight *f, const char *stage, const char *msg)
{
    fl_drop_tensor(f);
    free(f->err_stage);
    free(f->err_msg);
    f->err_stage = strdup(stage);
    f->err_msg = strdup(msg);
    f->is_error = 1;
    f->stage = FL_SINKQ;
    f->peer = -1;
    pf_metric_add(p->m.errors[!strcmp(stage, "producer") ? 0 : !strcmp(stage, "preprocess") ? 1 : 2], 1);
    pf_info(LOG, "%s: error record (%s): %s", f->path, stage, msg);
}

/* A lease was lost (worker died, deadline passed, worker asked to retry). */
static void lease_lost(prod *p, flight *f, int count_attempt, const char *why)
{
    pf_err e = {{0}};
    const char *stage = f->stage == FL_INF ? "inference" : "preprocess";
    if (count_attempt)
        f->attempts++;
    f->peer = -1;
    f->started = 0;
    if (count_attempt && f->attempts >= p->o->max_attempts) {
        char msg[700];
        snprintf(msg, sizeof msg, "gave up after %d attempts: %s", f->attempts, why);
        tx(p);
        dbcheck(pf_jobstore_requeue(p->js, f->id, f->attempts, why, &e), &e);
        make_error_record(p, f, stage, msg);
        return;
    }
    p->requeued[stage_index(f->stage)]++;
    pf_metric_add(p->m.retried[stage_index(f->stage)], 1);
    pf_info(LOG, "%s: %s; retrying (attempt %d of %d)", f->path, why, f->attempts + 1, p->o->max_attempts);
    tx(p);
    dbcheck(pf_jobstore_requeue(p->js, f->id, f->attempts, why, &e), &e);
    if (f->stage == FL_INF && f->rgb) {   /* the preprocessed image is still good: straight back to inference */
        f->stage = FL_READY;
        if (rd_push(p, f, 1) == 0)
            return;
    }
    if (pq_push(p, f->id, f->path, f->attempts, 1))
        pf_error(LOG, "out of memory requeueing %s", f->path);
    fl_remove(p, f);
}

static void peer_gone(prod *p, int pi, const char *why)
{
    peer *w = &p->peers[pi];
    int n = 0;
    /* If it reported no start at all (the start may die with the process), charge all its items: every
     * worker death must charge something, or a poison item could crash workers forever. */
    int any_started = 0;
    for (size_t i = 0; i < p->n_fl; i++)
        any_started |= p->fl[i]->peer == pi && p->fl[i]->started;
    for (size_t i = 0; i < p->n_fl;) {
        flight *f = p->fl[i];
        if (f->peer == pi && (f->stage == FL_PRE || f->stage == FL_INF)) {
            char reason[300];
            snprintf(reason, sizeof reason, "worker %s %s", w->name, why);
            size_t before = p->n_fl;
            /* Only items the worker had started are suspects (a poison item kills its worker every time);
             * items still waiting in its queue go back without an attempt counted. */
            lease_lost(p, f, f->started || !any_started, reason);
            n++;
            if (p->n_fl < before)
                continue;   /* f was removed: the same index now holds another flight */
        } else if (f->peer == pi) {
            f->peer = -1;
        }
        i++;
    }
    pf_warn(LOG, "%s worker %s %s; %d of its items requeued", role_name(w->role), w->name, why, n);
    p->lost[w->role]++;
    pf_metric_add(p->m.lost[w->role], 1);
    w->used = 0;
}

static void finish(prod *p, int64_t id, const char *key, int ok, const char *errmsg)
{
    pf_err e = {{0}};
    int changed = 0;
    tx(p);
    if (pf_jobstore_finish(p->js, id, key, ok, errmsg, &changed, &e)) {
        pf_error(LOG, "%s", e.msg);
        return;
    }
    if (changed) {
        if (ok)
            p->done++, p->done_run++;
        else
            p->failed++, p->failed_run++;
        pf_metric_add(p->m.finished[ok ? 0 : 1], 1);
        pf_keyset_add(&p->finished, (uint64_t)id, 1);
    }
}

/* ---------- messages ---------- */

static void on_hello(prod *p, pf_wire_in *in, double now)
{
    pf_msg *m = &in->msg;
    int pi = peer_find(p, in->ident, in->ident_len);
    if (pi < 0) {
        for (pi = 0; pi < p->n_peers && p->peers[pi].used; pi++)
            ;
        if (pi == p->n_peers) {
            peer *np = realloc(p->peers, (size_t)(p->n_peers + 1) * sizeof *np);
            if (!np)
                return;
            p->peers = np;
            p->n_peers++;
        }
        peer *w = &p->peers[pi];
        memset(w, 0, sizeof *w);
        w->used = 1;
        memcpy(w->ident, in->ident, in->ident_len);
        w->ident_len = in->ident_len;
        snprintf(w->name, sizeof w->name, "%s", m->name);
        w->role = !strcmp(m->role, "preprocess") ? ROLE_PRE : !strcmp(m->role, "inference") ? ROLE_INF : ROLE_SINK;
        pf_info(LOG, "%s %s joined (%s, pid %lld, capacity %lld)", role_name(w->role), w->name,
                m->host ? m->host : "?", (long long)m->pid, (long long)m->capacity);
        p->joined[w->role]++;
        pf_metric_add(p->m.joined[w->role], 1);
        if (w->role == ROLE_SINK) {   /* results may be waiting in worker queues for this sink: give it time */
            for (size_t i = 0; i < p->n_fl; i++)
                if (p->fl[i]->stage == FL_ACK)
                    p->fl[i]->deadline = now + p->o->ack_timeout_s;
        }
    }
    /* A repeated hello keeps the worker's leases (it still holds them) but restarts its credit: it
     * re-announces its free slots after our welcome. */
    p->peers[pi].credit = 0;
    p->peers[pi].last_seen = now;
    pf_msg w;
    pf_msg_init(&w, PF_MSG_WELCOME);
    send_to(p, pi, &w);
}

static void add_credit(prod *p, int pi, const pf_msg *m)
{
    if (m->instance && strcmp(m->instance, p->instance) == 0) {
        p->peers[pi].credit += m->credit;
        if (p->peers[pi].credit > (1 << 20))
            p->peers[pi].credit = 1 << 20;
    }
}

static int key_matches(const flight *f, const pf_msg *m) { return m->key && strcmp(f->key, m->key) == 0; }

static void on_tensor(prod *p, int pi, pf_wire_in *in)
{
    pf_msg *m = &in->msg;
    add_credit(p, pi, m);
    flight *f = fl_find(p, m->id);
    if (!f || f->stage != FL_PRE || !key_matches(f, m)) {
        pf_debug(LOG, "stale tensor for item %lld from %s dropped", (long long)m->id, p->peers[pi].name);
        return;
    }
    if (m->image_size != p->image_size) {
        char msg[200];
        snprintf(msg, sizeof msg, "preprocess worker %s made a %d px image, the job needs %d", p->peers[pi].name,
                 m->image_size, p->image_size);
        lease_lost(p, f, 1, msg);
        return;
    }
    f->rgb = malloc(m->data_len);
    if (!f->rgb) {
        lease_lost(p, f, 0, "out of memory holding a preprocessed image");
        return;
    }
    memcpy(f->rgb, m->data, m->data_len);
    pf_metric_observe(p->m.stage_s[0], pf_now() - f->t_lease);
    f->size = m->image_size;
    f->width = m->width;
    f->height = m->height;
    free(f->w_pre);
    f->w_pre = strdup(m->w_preprocess ? m->w_preprocess : p->peers[pi].name);
    f->tm.preprocess_s = m->timings.preprocess_s;
    if (m->timings.read_s >= 0)
        f->tm.read_s = m->timings.read_s;
    f->stage = FL_READY;
    f->peer = -1;
    f->started = 0;
    rd_push(p, f, 0);
}

static void on_done(prod *p, int pi, pf_wire_in *in, double now)
{
    pf_msg *m = &in->msg;
    add_credit(p, pi, m);
    flight *f = fl_find(p, m->id);
    if (!f || (f->stage != FL_PRE && f->stage != FL_INF) || !key_matches(f, m))
        return;
    pf_metric_observe(p->m.stage_s[stage_index(f->stage)], now - f->t_lease);
    if (m->stage && m->message) {   /* an error record: its reason goes to the job store on the ack */
        free(f->err_stage);
        free(f->err_msg);
        f->err_stage = strdup(m->stage);
        f->err_msg = strdup(m->message);
    }
    fl_drop_tensor(f);
    f->stage = FL_ACK;
    f->peer = -1;
    f->started = 0;
    f->deadline = now + p->o->ack_timeout_s;
}

static void on_nack(prod *p, int pi, pf_wire_in *in)
{
    pf_msg *m = &in->msg;
    add_credit(p, pi, m);
    flight *f = fl_find(p, m->id);
    if (!f || (f->stage != FL_PRE && f->stage != FL_INF) || f->peer != pi || !key_matches(f, m))
        return;
    char why[700];
    snprintf(why, sizeof why, "%s worker %s: %s", m->stage ? m->stage : "?", p->peers[pi].name,
             m->message ? m->message : "gave the item back");
    if (m->handback) {
        p->handed_back[stage_index(f->stage)]++;
        pf_metric_add(p->m.handed_back[stage_index(f->stage)], 1);
    }
    lease_lost(p, f, !m->handback, why);
}

static void on_ack(prod *p, pf_wire_in *in)
{
    pf_msg *m = &in->msg;
    for (size_t i = 0; i < m->n_acks; i++) {
        const pf_ack *a = &m->acks[i];
        flight *f = fl_find(p, a->id);
        if (f && strcmp(f->key, a->key) == 0) {
            /* the job store keeps "stage: reason" of error records (the job report groups them) */
            char reason[800];
            snprintf(reason, sizeof reason, "%s: %s", f->err_stage ? f->err_stage : "unknown",
                     f->err_msg ? f->err_msg : "error record");
            finish(p, a->id, a->key, a->ok, a->ok ? NULL : reason);
            fl_remove(p, f);
        } else {
            /* From a previous run, or a late duplicate: the store ignores it unless the key matches. */
            finish(p, a->id, a->key, a->ok, a->ok ? NULL : "error record");
        }
    }
}

static void handle(prod *p, pf_wire_in *in, double now)
{
    pf_msg *m = &in->msg;
    if (m->type == PF_MSG_HELLO) {
        on_hello(p, in, now);
        return;
    }
    int pi = peer_find(p, in->ident, in->ident_len);
    if (pi < 0) {
        if (m->type != PF_MSG_BYE)
            send_reset(p, in->ident, in->ident_len);
        /* Outcomes from workers of a previous run still count: a result the sink wrote is acknowledged
         * by the sink, a tensor for an item we do not track is dropped. */
        if (m->type == PF_MSG_ACK)
            on_ack(p, in);
        return;
    }
    p->peers[pi].last_seen = now;
    switch (m->type) {
    case PF_MSG_HB:
        break;
    case PF_MSG_CREDIT:
        add_credit(p, pi, m);
        break;
    case PF_MSG_TENSOR:
        on_tensor(p, pi, in);
        break;
    case PF_MSG_DONE:
        on_done(p, pi, in, now);
        break;
    case PF_MSG_NACK:
        on_nack(p, pi, in);
        break;
    case PF_MSG_ACK:
        on_ack(p, in);
        break;
    case PF_MSG_START: {
        flight *f = fl_find(p, m->id);
        if (f && f->peer == pi && key_matches(f, m))
            f->started = 1;
        break;
    }
    case PF_MSG_BYE:
        pf_info(LOG, "%s %s left", role_name(p->peers[pi].role), p->peers[pi].name);
        peer_gone(p, pi, "left");
        break;
    default:
        pf_debug(LOG, "ignoring %s from %s", pf_msg_type_name(m->type), p->peers[pi].name);
    }
}

/* ---------- dispatch ---------- */

/* Read a whole regular file without blocking on fifos or devices. */
static int read_item(const char *path, size_t max, uint8_t **out, size_t *len, char *why, size_t why_cap)
{
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, why_cap, "cannot open: %s", strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, why_cap, "not a regular file");
        close(fd);
        return -1;
    }
    if ((uint64_t)st.st_size > max) {
        snprintf(why, why_cap, "file of %lld bytes exceeds the limit of %zu bytes (--max-file-mb)",
                 (long long)st.st_size, max);
        close(fd);
        return -1;
    }
    size_t cap = (size_t)st.st_size + 1;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        snprintf(why, why_cap, "out of memory for %zu bytes", cap);
        close(fd);
        return -1;
    }
    size_t n = 0;
    for (;;) {
        if (n == cap - 1)   /* the file grew since fstat: read what the limit allows */
            break;
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            snprintf(why, why_cap, "read error: %s", strerror(errno));
            free(buf);
            close(fd);
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    *out = buf;
    *len = n;
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

static int sink_alive(const prod *p) { return count_role(p, ROLE_SINK) > 0; }

static size_t count_stage(const prod *p, int stage)
{
    size_t n = 0;
    for (size_t i = 0; i < p->n_fl; i++)
        n += p->fl[i]->stage == stage;
    return n;
}

static void dispatch_pre(prod *p, double now)
{
    size_t in_memory = count_stage(p, FL_PRE) + count_stage(p, FL_READY);
    while (p->pq_n > 0 && in_memory < (size_t)p->o->max_ready) {
        int pi = next_peer(p, ROLE_PRE, &p->rr_pre);
        if (pi < 0)
            return;
        pending e;
        pq_pop(p, &e);
        if (pf_keyset_has(&p->finished, (uint64_t)e.id, 1) || fl_find(p, e.id)) {
            free(e.path);
            continue;
        }
        flight *f = fl_new(p, e.id, e.path, e.attempts);
        free(e.path);
        if (!f) {
            pf_error(LOG, "out of memory");
            return;
        }
        uint8_t *bytes = NULL;
        size_t len = 0;
        char why[400];
        double t_read = pf_now();
        if (read_item(f->path, p->o->max_file_bytes, &bytes, &len, why, sizeof why)) {
            pf_item_key("", 0, p->settings, f->key);
            pf_err e2 = {{0}};
            tx(p);
            dbcheck(pf_jobstore_lease(p->js, f->id, f->key, "producer", "producer", unix_now(), &e2), &e2);
            make_error_record(p, f, "producer", why);
            continue;
        }
        f->tm.read_s = pf_now() - t_read;
        pf_item_key(bytes, len, p->settings, f->key);
        pf_msg m;
        pf_msg_init(&m, PF_MSG_ITEM);
        m.id = f->id;
        m.key = f->key;
        m.path = f->path;
        m.attempt = f->attempts;
        m.has_task = 1;
        m.task = p->task;
        m.image_size = p->image_size;
        m.lease_s = p->o->preprocess_lease_s;
        if (p->o->path_only) {
            m.path_only = 1;
        } else {
            m.data = bytes ? bytes : (const uint8_t *)"";
            m.data_len = len;
        }
        int bad = send_to(p, pi, &m);
        free(bytes);
        if (bad) {   /* the worker vanished: put the item back untouched */
            pq_push(p, f->id, f->path, f->attempts, 1);
            fl_remove(p, f);
            peer_gone(p, pi, "is unreachable");
            continue;
        }
        p->peers[pi].credit--;
        f->stage = FL_PRE;
        f->peer = pi;
        f->t_lease = now;
        pf_metric_add(p->m.leased[0], 1);
        f->deadline = now + p->o->preprocess_lease_s;
        pf_err e2 = {{0}};
        tx(p);
        dbcheck(pf_jobstore_lease(p->js, f->id, f->key, "preprocess", p->peers[pi].name,
                                  unix_now() + p->o->preprocess_lease_s, &e2),
                &e2);
        in_memory++;
    }
}

static void dispatch_inf(prod *p, double now)
{
    while (p->rd_n > 0) {
        int pi = next_peer(p, ROLE_INF, &p->rr_inf);
        if (pi < 0)
            return;
        flight *f = rd_pop(p);
        if (!f)
            return;
        pf_msg m;
        pf_msg_init(&m, PF_MSG_ITEM);
        m.id = f->id;
        m.key = f->key;
        m.path = f->path;
        m.attempt = f->attempts;
        m.has_task = 1;
        m.task = p->task;
        m.image_size = f->size;
        m.width = f->width;
        m.height = f->height;
        m.data = f->rgb;
        m.data_len = (size_t)f->size * (size_t)f->size * 3;
        m.w_preprocess = f->w_pre;
        m.timings = f->tm;
        m.lease_s = p->o->inference_lease_s;
        if (send_to(p, pi, &m)) {
            rd_push(p, f, 1);
            peer_gone(p, pi, "is unreachable");
            continue;
        }
        p->peers[pi].credit--;
        f->stage = FL_INF;
        f->peer = pi;
        f->t_lease = now;
        pf_metric_add(p->m.leased[1], 1);
        f->deadline = now + p->o->inference_lease_s;
        pf_err e2 = {{0}};
        tx(p);
        dbcheck(pf_jobstore_lease(p->js, f->id, f->key, "inference", p->peers[pi].name,
                                  unix_now() + p->o->inference_lease_s, &e2),
                &e2);
    }
}

/* Producer-made error records go to a live sink; they are acknowledged like any record. */
static void flush_sink_queue(prod *p, double now)
{
    int si = -1;
    for (int i = 0; i < p->n_peers; i++)
        if (p->peers[i].used && p->peers[i].role == ROLE_SINK)
            si = i;
    if (si < 0)
        return;
    for (size_t i = 0; i < p->n_fl; i++) {
        flight *f = p->fl[i];
        if (f->stage != FL_SINKQ)
            continue;
        pf_msg m;
        pf_msg_init(&m, PF_MSG_ERROR);
        m.id = f->id;
        m.key = f->key;
        m.path = f->path;
        m.has_task = 1;
        m.task = p->task;
        m.image_size = p->image_size;
        m.stage = f->err_stage;
        m.message = f->err_msg;
        m.w_preprocess = f->w_pre;
        if (send_to(p, si, &m) == 0) {
            f->stage = FL_ACK;
            f->deadline = now + p->o->ack_timeout_s;
        }
    }
}

static void expire(prod *p, double now)
{
    for (int i = 0; i < p->n_peers; i++)
        if (p->peers[i].used && now - p->peers[i].last_seen > p->o->hb_timeout) {
            char why[64];
            snprintf(why, sizeof why, "silent for %.1f s", now - p->peers[i].last_seen);
            peer_gone(p, i, why);
        }
    int have_sink = sink_alive(p);
    for (size_t i = 0; i < p->n_fl;) {
        flight *f = p->fl[i];
        size_t before = p->n_fl;
        if ((f->stage == FL_PRE || f->stage == FL_INF) && now > f->deadline) {
            char why[200];
            snprintf(why, sizeof why, "lease expired on worker %s",
                     f->peer >= 0 ? p->peers[f->peer].name : "(gone)");
            p->expired[stage_index(f->stage)]++;
            pf_metric_add(p->m.expired[stage_index(f->stage)], 1);
            lease_lost(p, f, 1, why);
        } else if (f->stage == FL_ACK && have_sink && now > f->deadline) {
            if (f->is_error) {
                f->stage = FL_SINKQ;   /* send the error record again */
            } else {
                /* The record never reached the sink (lost with a crashed sink or worker): redo the item.
                 * Not counted as an attempt: the item did nothing wrong. */
                pf_warn(LOG, "%s: no acknowledgement from the sink in %.0f s; redoing it", f->path,
                        p->o->ack_timeout_s);
                lease_lost(p, f, 0, "no acknowledgement from the sink");
            }
        }
        if (p->n_fl == before)
            i++;
    }
}

static void refill(prod *p)
{
    if (p->pq_n >= 256 || p->db_exhausted)
        return;
    pf_item_row rows[256];
    size_t n = 0;
    pf_err e = {{0}};
    if (pf_jobstore_next_queued(p->js, p->cursor, 256, rows, &n, &e)) {
        pf_error(LOG, "%s", e.msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!fl_find(p, rows[i].id))
            pq_push(p, rows[i].id, rows[i].path, rows[i].attempts, 0);
        p->cursor = rows[i].id;
    }
    pf_item_rows_free(rows, n);
    if (n < 256)
        p->db_exhausted = 1;
}

/* Scan a bounded chunk of the inputs so the sockets stay served while millions of files are listed. */
static int scan_some(prod *p, double budget_s, pf_err *err)
{
    double t_end = pf_now() + budget_s;
    int added = 0;
    for (int k = 0; k < 2000; k++) {
        const char *path;
        int r = pf_scan_next(p->scan, &path, err);
        if (r < 0)
            return -1;
        if (r == 0) {
            p->scanning = 0;
            tx(p);
            if (pf_jobstore_meta_set(p->js, "scan_complete", "1", err))
                return -1;
            pf_info(LOG, "scan complete: %lld items in the job", (long long)p->total);
            break;
        }
        struct stat st;
        int64_t size = stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
        int64_t id;
        tx(p);
        if (pf_jobstore_add(p->js, path, size, &id, err))
            return -1;
        if (id >= 0) {
            p->total++;
            added++;
        }
        if ((k & 63) == 63 && pf_now() > t_end)
            break;
    }
    if (added)
        p->db_exhausted = 0;
    return 0;
}

/* ---------- job settings ---------- */

static char *task_json(const pf_task *t, int image_size)
{
    json_t *j = json_pack("{s:s, s:i, s:f, s:i, s:f, s:f, s:I, s:b, s:i}", "prompt", t->prompt ? t->prompt : "",
                          "max_new_tokens", t->max_new_tokens, "temperature", t->temperature, "top_k", t->top_k,
                          "top_p", t->top_p, "repetition_penalty", t->repetition_penalty, "seed",
                          (json_int_t)t->seed, "autorotate", t->autorotate, "image_size", image_size);
    char *s = j ? json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

static int task_from_json(const char *s, pf_task *t, char **prompt, int *image_size, pf_err *err)
{
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);
    if (!j)
        return pf_errf(err, "job store: task settings are not JSON: %s", je.text);
    pf_task_defaults(t);
    const char *pr = NULL;
    json_int_t seed = 0;
    int autorot = 0;
    if (json_unpack_ex(j, &je, 0, "{s:s, s:i, s:F, s:i, s:F, s:F, s:I, s:b, s:i}", "prompt", &pr, "max_new_tokens",
                       &t->max_new_tokens, "temperature", &t->temperature, "top_k", &t->top_k, "top_p", &t->top_p,
                       "repetition_penalty", &t->repetition_penalty, "seed", &seed, "autorotate", &autorot,
                       "image_size", image_size)) {
        json_decref(j);
        return pf_errf(err, "job store: task settings: %s", je.text);
    }
    t->seed = (uint64_t)seed;
    t->autorotate = autorot;
    *prompt = strdup(pr);
    json_decref(j);
    t->prompt = *prompt;
    return *prompt ? 0 : pf_errf(err, "out of memory");
}

static int setup_job(prod *p, pf_err *err)
{
    const pf_producer_opts *o = p->o;
    char *stored = NULL;
    if (pf_jobstore_meta_get(p->js, "task", &stored, err))
        return -1;
    if (stored) {
        pf_task st;
        char *sprompt = NULL;
        int ssize = 0;
        int rc = task_from_json(stored, &st, &sprompt, &ssize, err);
        free(stored);
        if (rc)
            return -1;
        if (o->have_task) {
            uint64_t a = pf_task_hash(&st, ssize), b = pf_task_hash(&o->task, o->image_size);
            if (a != b) {
                pf_errf(err, "%s holds a job for task '%s' (image size %d) with other settings than given; "
                        "resume with the same --task and settings, or use a new --db", o->db, sprompt, ssize);
                free(sprompt);
                return -1;
            }
        }
        p->task = st;
        p->prompt = sprompt;
        p->image_size = ssize;
        pf_info(LOG, "resuming the job in %s: task '%s', image size %d", o->db, p->prompt, p->image_size);
    } else {
        if (!o->have_task)
            return pf_errf(err, "%s holds no job yet: give --task and --image-size", o->db);
        p->task = o->task;
        p->prompt = strdup(o->task.prompt);
        if (!p->prompt)
            return pf_errf(err, "out of memory");
        p->task.prompt = p->prompt;
        p->image_size = o->image_size;
        char *js = task_json(&p->task, p->image_size);
        if (!js)
            return pf_errf(err, "out of memory");
        int rc = pf_jobstore_meta_set(p->js, "task", js, err);
        free(js);
        if (rc)
            return -1;
    }
    p->settings = pf_task_hash(&p->task, p->image_size);
    return 0;
}

/* Inputs: the given ones (stored for later resumes), or the stored ones when none are given. */
static int setup_scan(prod *p, pf_err *err)
{
    const pf_producer_opts *o = p->o;
    int given = o->scan.n_roots > 0 || o->scan.list_file;
    char *scan_complete = NULL;
    if (pf_jobstore_meta_get(p->js, "scan_complete", &scan_complete, err))
        return -1;
    int complete = scan_complete && !strcmp(scan_complete, "1");
    free(scan_complete);
    if (given) {
        json_t *roots = json_array();
        for (size_t i = 0; i < o->scan.n_roots; i++)
            json_array_append_new(roots, json_string(o->scan.roots[i]));
        json_t *inc = json_array(), *exc = json_array();
        for (size_t i = 0; i < o->scan.n_include; i++)
            json_array_append_new(inc, json_string(o->scan.include[i]));
        for (size_t i = 0; i < o->scan.n_exclude; i++)
            json_array_append_new(exc, json_string(o->scan.exclude[i]));
        json_t *j = json_pack("{s:o, s:o, s:o, s:s?}", "roots", roots, "include", inc, "exclude", exc, "list",
                              o->scan.list_file);
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!s || pf_jobstore_meta_set(p->js, "inputs", s, err) || pf_jobstore_meta_set(p->js, "scan_complete", "0", err)) {
            free(s);
            return s ? -1 : pf_errf(err, "out of memory");
        }
        free(s);
        if (pf_scan_open(&o->scan, &p->scan, err))
            return -1;
        p->scanning = 1;
        return 0;
    }
    if (complete)
        return 0;
    char *s = NULL;
    if (pf_jobstore_meta_get(p->js, "inputs", &s, err))
        return -1;
    if (!s) {
        if (p->total == 0)
            return pf_errf(err, "no inputs: give folders, files or --list");
        return 0;
    }
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);
    free(s);
    if (!j)
        return pf_errf(err, "job store: stored inputs are not JSON");
    json_t *roots = json_object_get(j, "roots"), *inc = json_object_get(j, "include"),
           *exc = json_object_get(j, "exclude"), *list = json_object_get(j, "list");
    size_t nr = json_array_size(roots), ni = json_array_size(inc), ne = json_array_size(exc);
    const char **vr = calloc(nr + 1, sizeof *vr), **vi = calloc(ni + 1, sizeof *vi), **ve = calloc(ne + 1, sizeof *ve);
    int rc = -1;
    if (vr && vi && ve) {
        for (size_t i = 0; i < nr; i++)
            vr[i] = json_string_value(json_array_get(roots, i));
        for (size_t i = 0; i < ni; i++)
            vi[i] = json_string_value(json_array_get(inc, i));
        for (size_t i = 0; i < ne; i++)
            ve[i] = json_string_value(json_array_get(exc, i));
        pf_scan_opts so = {vr, nr, json_string_value(list), vi, ni, ve, ne};
        rc = pf_scan_open(&so, &p->scan, err);   /* copies the strings */
    } else {
        pf_errf(err, "out of memory");
    }
    free(vr);
    free(vi);
    free(ve);
    json_decref(j);
    if (rc)
        return -1;
    p->scanning = 1;
    pf_info(LOG, "continuing the interrupted scan of the stored inputs");
    return 0;
}

static void send_heartbeats(prod *p, int finished)
{
    for (int i = 0; i < p->n_peers; i++) {
        if (!p->peers[i].used)
            continue;
        pf_msg m;
        pf_msg_init(&m, PF_MSG_HB);
        m.finished = finished;
        m.n_total = p->total ? p->total : 1;
        m.n_done = p->done;
        m.n_failed = p->failed;
        send_to(p, i, &m);
    }
}

static void update_gauges(prod *p, double now)
{
    int64_t n[6] = {0};
    for (size_t i = 0; i < p->n_fl; i++) {
        int st = p->fl[i]->stage;
        n[st == FL_PRE || st == FL_INF ? 1 : st == FL_READY ? 2 : 3]++;
    }
    n[0] = p->total - p->done - p->failed - (int64_t)p->n_fl;
    n[4] = p->done;
    n[5] = p->failed;
    for (int i = 0; i < 6; i++)
        pf_metric_set(p->m.items[i], (double)(n[i] > 0 ? n[i] : 0));
    pf_metric_set(p->m.queue[0], (double)(n[0] > 0 ? n[0] : 0));
    pf_metric_set(p->m.queue[1], (double)n[2]);
    pf_metric_set(p->m.job_items, (double)p->total);
    for (int r = 1; r < 4; r++) {
        double age = 0;
        for (int i = 0; i < p->n_peers; i++)
            if (p->peers[i].used && p->peers[i].role == r && now - p->peers[i].last_seen > age)
                age = now - p->peers[i].last_seen;
        pf_metric_set(p->m.workers[r], count_role(p, r));
        pf_metric_set(p->m.hb_age[r], age);
    }
    pf_metric_set(p->m.ips, pf_rate_update(&p->rate, now, (double)(p->done_run + p->failed_run)));
    pf_metric_set(p->m.scanning, p->scanning);
    p->last_gauges = now;
}

/* SIGHUP: the command re-reads its config file into the reloadable options; the allow-list is re-read. */
static void reload(prod *p)
{
    *p->o->reload = 0;
    if (p->o->on_reload)
        p->o->on_reload(p->o->reload_arg);
    pf_err e = {{0}};
    if (p->zap && pf_zap_reload(p->zap, p->o->sec->allow_path, &e))
        pf_error(LOG, "reload: %s (the previous allow-list stays)", e.msg);
    p->prog.interval = p->o->progress_interval;
}

static void iso_time(double unix_s, char *buf, size_t cap)
{
    time_t t = (time_t)unix_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

typedef struct reasons_acc {
    json_t *by_reason, *by_stage;
    int64_t n;
} reasons_acc;

static void add_reason(const char *reason, int64_t n, void *arg)
{
    reasons_acc *a = arg;
    /* "stage: message" (what the producer stores); older stores may hold the message alone */
    const char *colon = strstr(reason, ": ");
    char stage[32] = "unknown";
    if (colon && (size_t)(colon - reason) < sizeof stage && strspn(reason, "abcdefghijklmnopqrstuvwxyz") ==
                                                                  (size_t)(colon - reason)) {
        memcpy(stage, reason, (size_t)(colon - reason));
        stage[colon - reason] = '\0';
    }
    json_t *prev = json_object_get(a->by_stage, stage);
    json_object_set_new(a->by_stage, stage, json_integer(json_integer_value(prev) + n));
    json_array_append_new(a->by_reason, json_pack("{s:s, s:I}", "reason", reason, "count", (json_int_t)n));
    a->n += n;
}

static int write_report(prod *p, int complete, pf_err *err)
{
    double now_unix = unix_now(), secs = pf_now() - p->t0;
    char started[32], finished[32];
    iso_time(p->t0_unix, started, sizeof started);
    iso_time(now_unix, finished, sizeof finished);
    reasons_acc acc = {json_array(), json_object(), 0};
    /* Reasons of every failed item of the job (not only this run's), largest groups first. */
    if (pf_jobstore_error_reasons(p->js, 50, add_reason, &acc, err)) {
        json_decref(acc.by_reason);
        json_decref(acc.by_stage);
        return -1;
    }
    int64_t done_run = p->done_run, failed_run = p->failed_run;
    json_t *workers = json_object();
    for (int r = 1; r < 4; r++)
        json_object_set_new(workers, role_name(r),
                            json_pack("{s:I, s:I}", "joined", (json_int_t)p->joined[r], "lost", (json_int_t)p->lost[r]));
    json_t *j = json_pack(
        "{s:s, s:s, s:{s:s, s:s, s:i, s:s}, s:s, s:s, s:f,"
        " s:{s:I, s:I, s:I, s:I, s:I, s:I},"
        " s:{s:f, s:f},"
        " s:{s:I, s:I, s:I, s:{s:{s:I, s:I, s:I}, s:{s:I, s:I, s:I}}},"
        " s:o, s:{s:I, s:o, s:o}}",
        "paliflow_report", "job", "status", complete ? "complete" : "interrupted",
        "job", "db", p->o->db, "task", p->prompt ? p->prompt : "", "image_size", p->image_size, "instance", p->instance,
        "started_at", started, "finished_at", finished, "seconds", secs,
        "items", "total", (json_int_t)p->total, "done", (json_int_t)p->done, "failed", (json_int_t)p->failed,
        "remaining", (json_int_t)(p->total - p->done - p->failed), "done_this_run", (json_int_t)done_run,
        "failed_this_run", (json_int_t)failed_run,
        "throughput", "items_per_second", secs > 0 ? (double)(done_run + failed_run) / secs : 0.0,
        "done_per_second", secs > 0 ? (double)done_run / secs : 0.0,
        "retries", "requeued", (json_int_t)(p->requeued[0] + p->requeued[1]),
        "leases_expired", (json_int_t)(p->expired[0] + p->expired[1]),
        "handed_back", (json_int_t)(p->handed_back[0] + p->handed_back[1]),
        "by_stage", "preprocess", "requeued", (json_int_t)p->requeued[0], "leases_expired", (json_int_t)p->expired[0],
        "handed_back", (json_int_t)p->handed_back[0], "inference", "requeued", (json_int_t)p->requeued[1],
        "leases_expired", (json_int_t)p->expired[1], "handed_back", (json_int_t)p->handed_back[1],
        "workers", workers,
        "errors", "count", (json_int_t)p->failed, "by_stage", acc.by_stage, "by_reason", acc.by_reason);
    if (!j)
        return pf_errf(err, "--report %s: cannot build the report (out of memory?)", p->o->report);
    char *txt = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!txt)
        return pf_errf(err, "--report %s: out of memory", p->o->report);
    size_t n = strlen(txt);
    char *withnl = realloc(txt, n + 2);
    if (!withnl) {
        free(txt);
        return pf_errf(err, "--report %s: out of memory", p->o->report);
    }
    withnl[n] = '\n';
    withnl[n + 1] = '\0';
    int rc = pf_write_file_atomic(p->o->report, withnl, n + 1, err);
    free(withnl);
    return rc ? pf_err_prefix(err, "--report") : 0;
}

int pf_producer_run(const pf_producer_opts *o, pf_job_stats *stats, pf_err *err)
{
    prod P = {0}, *p = &P;
    p->o = o;
    p->t0 = pf_now();
    p->t0_unix = unix_now();
    pf_keyset_init(&p->finished);
    metrics_init(p);
    pf_health_register("producer", 60);
    int rc = -1;
    void *ctx = o->zctx ? o->zctx : zmq_ctx_new();
    if (!ctx)
        return pf_errf(err, "zmq_ctx_new failed");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(p->instance, sizeof p->instance, "%08lx%04x", (unsigned long)ts.tv_sec,
             (unsigned)((ts.tv_nsec ^ getpid()) & 0xffff));
    if (pf_jobstore_open(o->db, &p->js, err))
        goto out;
    if (pf_jobstore_begin(p->js, err) || setup_job(p, err))
        goto out;
    int64_t reset = 0, counts[4];
    if (pf_jobstore_reset_leases(p->js, &reset, err) || pf_jobstore_counts(p->js, counts, err))
        goto out;
    p->total = counts[0] + counts[1] + counts[2] + counts[3];
    p->done = p->at_start_done = counts[PF_ITEM_DONE];
    p->failed = counts[PF_ITEM_FAILED];
    if (p->total)
        pf_info(LOG, "job store: %lld items, %lld done, %lld failed, %lld to do (%lld leases of the previous run "
                "returned to the queue)", (long long)p->total, (long long)p->done, (long long)p->failed,
                (long long)(p->total - p->done - p->failed), (long long)reset);
    if (setup_scan(p, err) || pf_jobstore_commit(p->js, err))
        goto out;
    p->sock = pf_wire_socket(ctx, ZMQ_ROUTER, &o->lim, 1000, err);
    if (!p->sock)
        goto out;
    int one = 1;
    zmq_setsockopt(p->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    if (pf_security_curve_bind(o->sec, o->bind) &&
        pf_zap_start(ctx, o->sec->allow_path, o->sec->server.public_key, &p->zap, err))
        goto out;
    if (pf_secure_bind(p->sock, o->bind, o->sec, err))
        goto out;
    pf_health_ready("producer", 1);
    pf_info(LOG, "job: task '%s', image size %d, bound %s (instance %s)", p->prompt, p->image_size, o->bind,
            p->instance);
    pf_progress_init(&p->prog, o->progress, o->progress_interval, "producer");
    double last_hb = 0;
    int complete = 0;
    while (!(o->stop && *o->stop)) {
        zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLIN, 0};
        int busy = p->scanning;
        if (zmq_poll(&it, 1, busy ? 0 : 50) < 0 && errno == ETERM)
            break;
        double now = pf_now();
        pf_health_tick("producer");
        if (o->reload && *o->reload)
            reload(p);
        for (int k = 0; k < 1000; k++) {
            pf_wire_in in;
            pf_err e = {{0}};
            int got = pf_wire_recv(p->sock, 1, &o->lim, &in, &e);
            if (got == 0)
                break;
            if (got == -2)
                goto stopped;
            if (got < 0) {
                char id[128];
                pf_warn(LOG, "bad message from %s: %s", pf_wire_ident_str(in.ident, in.ident_len, id, sizeof id),
                        e.msg);
                continue;
            }
            handle(p, &in, now);
            pf_wire_in_close(&in);
        }
        if (p->scanning && scan_some(p, 0.05, err))
            goto out;
        refill(p);
        expire(p, now);
        if (sink_alive(p)) {
            dispatch_pre(p, now);
            dispatch_inf(p, now);
            flush_sink_queue(p, now);
        }
        if (pf_jobstore_commit(p->js, err))
            goto out;
        if (now - last_hb >= o->hb_interval) {
            send_heartbeats(p, complete);
            last_hb = now;
        }
        pf_progress_update(&p->prog, p->total, p->done, p->failed, p->done - p->at_start_done,
                           count_role(p, ROLE_PRE), count_role(p, ROLE_INF), sink_alive(p), p->scanning);
        if (now - p->last_gauges >= 0.1)
            update_gauges(p, now);
        if (!complete && !p->scanning && p->total == p->done + p->failed && p->n_fl == 0 && p->pq_n == 0) {
            complete = 1;
            if (!o->stay)
                break;
            /* --stay: keep answering peers (the job is finished) and serving metrics until stopped */
            send_heartbeats(p, 1);
            last_hb = now;
            pf_metric_set(p->m.complete, 1);
            pf_info(LOG, "job complete: %lld items, %lld done, %lld failed, %.1f s; staying up (--stay) until "
                    "SIGTERM", (long long)p->total, (long long)p->done, (long long)p->failed, pf_now() - p->t0);
            pf_err re = {{0}};
            if (o->report && write_report(p, 1, &re))
                pf_error(LOG, "%s", re.msg);
        }
    }
stopped:
    if (pf_jobstore_commit(p->js, err))
        goto out;
    pf_progress_finish(&p->prog, p->total, p->done, p->failed);
    if (complete) {
        /* Tell everyone; workers started with --exit-when-done leave. */
        for (int k = 0; k < 3; k++) {
            send_heartbeats(p, 1);
            zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLIN, 0};
            zmq_poll(&it, 1, 100);
            for (int j = 0; j < 100; j++) {
                pf_wire_in in;
                pf_err e = {{0}};
                int got = pf_wire_recv(p->sock, 1, &o->lim, &in, &e);
                if (got <= 0)
                    break;
                pf_wire_in_close(&in);
            }
        }
        pf_info(LOG, "job complete: %lld items, %lld done, %lld failed, %.1f s", (long long)p->total,
                (long long)p->done, (long long)p->failed, pf_now() - p->t0);
        pf_metric_set(p->m.complete, 1);
        rc = 0;
    } else {
        pf_info(LOG, "stopped: %lld of %lld items finished; rerun with --db %s to resume",
                (long long)(p->done + p->failed), (long long)p->total, o->db);
        rc = 1;
    }
out:
    if (stats) {
        stats->total = p->total;
        stats->done = p->done;
        stats->failed = p->failed;
        stats->seconds = pf_now() - p->t0;
    }
    update_gauges(p, pf_now());
    if (o->report && p->js && rc >= 0) {
        pf_err re = {{0}};
        if (write_report(p, rc == 0, &re))
            pf_error(LOG, "%s", re.msg);
        else
            pf_info(LOG, "job report written to %s", o->report);
    }
    pf_health_ready("producer", 0);
    pf_health_unregister("producer");
    if (p->sock)
        zmq_close(p->sock);
    pf_zap_stop(p->zap);
    if (!o->zctx)
        zmq_ctx_term(ctx);
    pf_scan_close(p->scan);
    pf_jobstore_close(p->js);
    while (p->n_fl)
        fl_remove(p, p->fl[p->n_fl - 1]);
    free(p->fl);
    pending e;
    while (pq_pop(p, &e))
        free(e.path);
    free(p->pq);
    free(p->ready);
    free(p->peers);
    free(p->prompt);
    pf_keyset_free(&p->finished);
    return rc;
}
