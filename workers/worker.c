/* worker.c - the generic worker runtime (see worker.h). One main thread owns the sockets; compute threads
 * run the stage and hand finished works back through a queue plus an eventfd the main thread polls. */
#include "workers/worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "base/file.h"
#include "base/log.h"
#include "base/metrics.h"
#include "proto/wire.h"

void pf_work_fail(pf_work *w, int status, const char *fmt, ...)
{
    w->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->message, sizeof w->message, fmt, ap);
    va_end(ap);
}

void pf_worker_opts_defaults(pf_worker_opts *o)
{
    memset(o, 0, sizeof *o);
    o->threads = 1;
    o->max_batch = 8;
    o->max_delay_ms = 20;
    o->hb_interval = 1.0;
    o->hb_timeout = 10.0;
    o->drain_timeout = 30.0;
    o->lim = pf_proto_default_limits();
}

static void work_free(pf_work *w)
{
    if (!w)
        return;
    pf_msg_free(&w->in);
    free(w->buf_);
    free(w->rgb);
    free(w->text);
    free(w->ids);
    free(w);
}

/* ---------- queues shared with the compute threads ---------- */

typedef struct wq {
    pf_work **v;
    size_t head, n, cap;
} wq;

static int wq_push(wq *q, pf_work *w)
{
    if (q->n == q->cap) {
        size_t nc = q->cap ? 2 * q->cap : 16;
        pf_work **nv = malloc(nc * sizeof *nv);
        if (!nv)
            return -1;
        for (size_t i = 0; i < q->n; i++)
            nv[i] = q->v[(q->head + i) % q->cap];
        free(q->v);
        q->v = nv;
        q->cap = nc;
        q->head = 0;
    }
    q->v[(q->head + q->n) % q->cap] = w;
    q->n++;
    return 0;
}

static pf_work *wq_pop(wq *q)
{
    if (!q->n)
        return NULL;
    pf_work *w = q->v[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    return w;
}

typedef struct rt rt;

typedef struct compute {
    rt *r;
    void *inst;
    pthread_t th;
    int started;
} compute;

struct rt {
    const pf_worker_opts *o;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    wq in, out, started;
    int efd;
    int quit;        /* compute threads: exit */
    int fatal;       /* a batched step failed */
    char fatal_msg[PF_ERR_MAX];
    compute *cs;
    int n_cs;
    pf_metric *m_batch;
};

static void wake_main(rt *r)
{
    uint64_t one = 1;
    ssize_t n = write(r->efd, &one, sizeof one);
    (void)n;
}

/* Tell the main thread an item left the queue for a compute thread: the producer then knows which items
 * were being worked on if this worker dies (only those are charged an attempt). */
static void started_work(rt *r, pf_work *w)
{
    pthread_mutex_lock(&r->mu);
    wq_push(&r->started, w);
    wake_main(r);
    /* Wait (briefly) until the main thread has sent the start: if this item crashes the process, the
     * producer should know it was this one. */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_nsec += 200 * 1000000L;
    dl.tv_sec += dl.tv_nsec / 1000000000L;
    dl.tv_nsec %= 1000000000L;
    while (!w->start_sent_ && !r->quit)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&r->mu);
}

static void finish_work(rt *r, pf_work *w)
{
    w->t_end = pf_now();
    pthread_mutex_lock(&r->mu);
    if (wq_push(&r->out, w))
        pf_error("worker", "out of memory queueing a finished item (id %lld)", (long long)w->in.id);
    pthread_mutex_unlock(&r->mu);
    wake_main(r);
}

static void *item_thread(void *arg)
{
    compute *c = arg;
    rt *r = c->r;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (!r->quit && r->in.n == 0)
            pthread_cond_wait(&r->cv, &r->mu);
        if (r->quit) {
            pthread_mutex_unlock(&r->mu);
            break;
        }
        pf_work *w = wq_pop(&r->in);
        pthread_mutex_unlock(&r->mu);
        w->t_start = pf_now();
        started_work(r, w);
        r->o->ops->process(c->inst, w);
        finish_work(r, w);
    }
    return NULL;
}

static void *batch_thread(void *arg)
{
    compute *c = arg;
    rt *r = c->r;
    const pf_stage_ops *ops = r->o->ops;
    size_t max_batch = r->o->max_batch > 0 ? (size_t)r->o->max_batch : 1;
    pf_work **take = calloc(max_batch, sizeof *take);
    if (!take) {
        pthread_mutex_lock(&r->mu);
        r->fatal = 1;
        snprintf(r->fatal_msg, sizeof r->fatal_msg, "out of memory");
        pthread_mutex_unlock(&r->mu);
        wake_main(r);
        return NULL;
    }
    for (;;) {
        size_t active = ops->active(c->inst);
        pthread_mutex_lock(&r->mu);
        while (!r->quit && r->in.n == 0 && active == 0)
            pthread_cond_wait(&r->cv, &r->mu);
        if (r->quit) {
            pthread_mutex_unlock(&r->mu);
            break;
        }
        /* Dynamic batching: when idle, give a burst of items max_delay_ms to arrive together. */
        if (active == 0 && r->in.n < max_batch && r->o->max_delay_ms > 0) {
            struct timespec dl;
            clock_gettime(CLOCK_REALTIME, &dl);
            long ns = dl.tv_nsec + (long)r->o->max_delay_ms * 1000000L;
            dl.tv_sec += ns / 1000000000L;
            dl.tv_nsec = ns % 1000000000L;
            while (!r->quit && r->in.n < max_batch)
                if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) == ETIMEDOUT)
                    break;
        }
        size_t k = 0;
        while (active + k < max_batch && r->in.n > 0)
            take[k++] = wq_pop(&r->in);
        pthread_mutex_unlock(&r->mu);
        for (size_t i = 0; i < k; i++) {
            pf_err e = {{0}};
            take[i]->t_start = pf_now();
            started_work(r, take[i]);
            if (ops->submit(c->inst, take[i], &e)) {
                pf_work_fail(take[i], PF_WORK_RETRY, "%s", e.msg);
                finish_work(r, take[i]);
            }
        }
        size_t batch = ops->active(c->inst);
        if (batch)
            pf_metric_observe(r->m_batch, (double)batch);
        pf_work **done = NULL;
        size_t n_done = 0;
        pf_err e = {{0}};
        if (ops->step(c->inst, &done, &n_done, &e)) {
            pthread_mutex_lock(&r->mu);
            r->fatal = 1;
            snprintf(r->fatal_msg, sizeof r->fatal_msg, "%s", e.msg);
            pthread_mutex_unlock(&r->mu);
            wake_main(r);
            break;
        }
        for (size_t i = 0; i < n_done; i++)
            finish_work(r, done[i]);
    }
    free(take);
    return NULL;
}

/* ---------- the main loop ---------- */

typedef struct wstate {
    const pf_worker_opts *o;
    rt *r;
    void *prod, *sink;
    char name[128];
    char host[64];
    char instance[64];      /* current producer instance ("" = none yet) */
    int welcomed;
    int capacity;
    pf_work **held;         /* works received and not yet answered */
    size_t n_held, cap_held;
    double last_heard, last_hb, last_hello;
    int producer_silent;
    int finished_seen;
    int stopping;
    double stop_at;
    char health[48];
    pf_sock_watch *watch_prod, *watch_sink;
    int64_t n_items, n_tokens;
    pf_rate rate_items, rate_tokens;
    struct {
        pf_metric *items[3], *handed_back, *held, *capacity, *stage_s, *queue_s, *tokens, *ips, *tps, *connected;
    } m;
} wstate;

static void metrics_init(wstate *s)
{
    char l[64];
    const char *role = s->o->ops->name;
    static const char *const outcomes[3] = {"ok", "failed", "retry"};
    for (int i = 0; i < 3; i++) {
        snprintf(l, sizeof l, "role=\"%s\",outcome=\"%s\"", role, outcomes[i]);
        s->m.items[i] = pf_counter("paliflow_worker_items_total", l,
                                   "Items this worker finished: ok, failed (error record), retry (given back)");
    }
    snprintf(l, sizeof l, "role=\"%s\"", role);
    s->m.handed_back = pf_counter("paliflow_worker_handed_back_total", l,
                                  "Items handed back unfinished (shutting down, drain timeout, stage failure)");
    s->m.held = pf_gauge("paliflow_worker_items_held", l, "Items held (queued here or in progress)");
    s->m.capacity = pf_gauge("paliflow_worker_capacity", l, "Items this worker holds at most (its credit)");
    s->m.stage_s = pf_histogram("paliflow_worker_stage_seconds", l, "Seconds of compute per item",
                                pf_buckets_seconds, pf_buckets_seconds_n);
    s->m.queue_s = pf_histogram("paliflow_worker_queue_seconds", l,
                                "Seconds an item waited in this worker before compute", pf_buckets_seconds,
                                pf_buckets_seconds_n);
    s->m.tokens = pf_counter("paliflow_worker_tokens_total", l, "Tokens generated");
    s->m.ips = pf_gauge("paliflow_worker_images_per_second", l, "Items finished per second (last 30 s)");
    s->m.tps = pf_gauge("paliflow_worker_tokens_per_second", l, "Tokens generated per second (last 30 s)");
    s->m.connected = pf_gauge("paliflow_worker_producer_connected", l, "1 while welcomed by a live producer");
    s->r->m_batch = pf_histogram("paliflow_worker_batch_size", l, "Sequences advanced together per step",
                                 pf_buckets_batch, pf_buckets_batch_n);
    pf_metric_set(s->m.capacity, s->capacity);
    pf_rate_init(&s->rate_items, 30);
    pf_rate_init(&s->rate_tokens, 30);
}

static const char *role_of(const pf_worker_opts *o) { return o->ops->name; }

static void send_prod(wstate *s, pf_msg *m)
{
    pf_err e = {{0}};
    m->name = s->name;
    if (!m->instance && s->instance[0])
        m->instance = s->instance;
    if (pf_wire_send(s->prod, NULL, 0, m, &e)) {
        /* EAGAIN: not connected (producer down, or our key refused: the socket watch says which) */
        if (errno == EAGAIN)
            pf_debug(role_of(s->o), "to producer (%s): %s", pf_msg_type_name(m->type), e.msg);
        else
            pf_warn(role_of(s->o), "to producer (%s): %s", pf_msg_type_name(m->type), e.msg);
    }
}

static void send_sink(wstate *s, pf_msg *m)
{
    pf_err e = {{0}};
    if (pf_wire_send(s->sink, NULL, 0, m, &e))
        pf_warn(role_of(s->o), "to sink (%s, item %lld): %s", pf_msg_type_name(m->type), (long long)m->id, e.msg);
}

static void send_hello(wstate *s, double now)
{
    pf_msg m;
    pf_msg_init(&m, PF_MSG_HELLO);
    m.role = role_of(s->o);
    m.host = s->host;
    m.pid = getpid();
    m.capacity = s->capacity;
    m.instance = NULL;
    pf_err e = {{0}};
    m.name = s->name;
    if (pf_wire_send(s->prod, NULL, 0, &m, &e))
        pf_debug(role_of(s->o), "hello: %s", e.msg);
    s->last_hello = now;
}

static int held_add(wstate *s, pf_work *w)
{
    if (s->n_held == s->cap_held) {
        size_t nc = s->cap_held ? 2 * s->cap_held : 16;
        pf_work **nh = realloc(s->held, nc * sizeof *nh);
        if (!nh)
            return -1;
        s->held = nh;
        s->cap_held = nc;
    }
    s->held[s->n_held++] = w;
    return 0;
}

static void held_remove(wstate *s, pf_work *w)
{
    for (size_t i = 0; i < s->n_held; i++)
        if (s->held[i] == w) {
            s->held[i] = s->held[--s->n_held];
            return;
        }
}

static int free_slots(const wstate *s)
{
    int f = s->capacity - (int)s->n_held;
    return f > 0 ? f : 0;
}

static void send_credit(wstate *s, int n)
{
    if (n <= 0 || !s->instance[0] || s->stopping)
        return;
    pf_msg m;
    pf_msg_init(&m, PF_MSG_CREDIT);
    m.credit = n;
    send_prod(s, &m);
}

/* Tell the producer to take an item back. handback: not the item's fault (we are leaving). */
static void send_nack(wstate *s, const pf_msg *in, int handback, const char *why)
{
    pf_msg m;
    pf_msg_init(&m, PF_MSG_NACK);
    m.id = in->id;
    m.key = in->key;
    m.stage = role_of(s->o);
    m.message = why;
    m.handback = handback;
    m.credit = s->stopping ? 0 : 1;
    if (handback)
        pf_metric_add(s->m.handed_back, 1);
    send_prod(s, &m);
}

static void fill_item_fields(pf_msg *m, const pf_msg *in)
{
    m->id = in->id;
    m->key = in->key;
    m->path = in->path;
    m->has_task = 1;
    m->task = in->task;
    m->image_size = in->image_size;
    m->attempt = in->attempt;
}

/* A finished work: send its outcome where it belongs and return its credit. */
static void answer(wstate *s, pf_work *w)
{
    const pf_msg *in = &w->in;
    int inference = in->width > 0;   /* an inference item carries the preprocessed tensor */
    pf_timings tm = in->timings;
    double took = w->t_end - w->t_start;
    if (!inference) {
        tm.preprocess_s = took;
        if (w->read_s > 0)
            tm.read_s = w->read_s;
    } else {
        tm.inference_s = took;
        tm.queue_s = w->t_start - w->t_received;
        tm.prefill_s = w->prefill_s;
        tm.decode_s = w->decode_s;
    }
    const char *wpre = inference ? in->w_preprocess : s->name;
    const char *winf = inference ? s->name : NULL;
    pf_metric_add(s->m.items[w->status == PF_WORK_OK ? 0 : w->status == PF_WORK_FAILED ? 1 : 2], 1);
    pf_metric_observe(s->m.stage_s, took);
    pf_metric_observe(s->m.queue_s, w->t_start - w->t_received);
    s->n_items++;
    if (w->status == PF_WORK_OK && inference) {
        s->n_tokens += (int64_t)w->n_ids;
        pf_metric_add(s->m.tokens, (double)w->n_ids);
    }
    if (w->status == PF_WORK_RETRY) {
        pf_warn(role_of(s->o), "%s: %s (handing it back to be retried)", in->path, w->message);
        send_nack(s, in, 0, w->message);
        return;
    }
    if (w->status == PF_WORK_OK && !inference) {
        pf_msg m;
        pf_msg_init(&m, PF_MSG_TENSOR);
        m.id = in->id;
        m.key = in->key;
        m.image_size = w->size;
        m.width = w->width;
        m.height = w->height;
        m.data = w->rgb;
        m.data_len = (size_t)w->size * (size_t)w->size * 3;
        m.timings = tm;
        m.w_preprocess = wpre;
        m.credit = s->stopping ? 0 : 1;
        send_prod(s, &m);
        return;
    }
    pf_msg r;
    if (w->status == PF_WORK_OK) {
        pf_msg_init(&r, PF_MSG_RESULT);
        r.text = w->text ? w->text : "";
        r.text_len = w->text ? w->text_len : 0;
        r.ids = w->ids;
        r.n_ids = w->n_ids;
        r.stopped_by_eos = w->stopped_by_eos;
        r.width = in->width;
        r.height = in->height;
    } else {
        pf_msg_init(&r, PF_MSG_ERROR);
        r.stage = role_of(s->o);
        r.message = w->message[0] ? w->message : "failed";
        r.width = in->width;
        r.height = in->height;
        pf_info(role_of(s->o), "%s: %s", in->path, r.message);
    }
    fill_item_fields(&r, in);
    r.timings = tm;
    r.w_preprocess = wpre;
    r.w_inference = winf;
    send_sink(s, &r);
    r.ids = NULL;   /* owned by the work */
    pf_msg d;
    pf_msg_init(&d, PF_MSG_DONE);
    d.id = in->id;
    d.key = in->key;
    d.credit = s->stopping ? 0 : 1;
    if (r.type == PF_MSG_ERROR) {   /* the reason, for the job store and the job report */
        d.stage = r.stage;
        d.message = r.message;
    }
    send_prod(s, &d);
}

static void drain_outputs(wstate *s)
{
    /* Take both queues in one critical section: a compute thread queues a work's start before its output,
     * so every output taken here has its start taken here or earlier, and no start can refer to a work
     * freed below. */
    rt *r = s->r;
    pthread_mutex_lock(&r->mu);
    wq started = r->started, out = r->out;
    memset(&r->started, 0, sizeof r->started);
    memset(&r->out, 0, sizeof r->out);
    pthread_mutex_unlock(&r->mu);
    pf_work *w;
    if (started.n) {
        while ((w = wq_pop(&started))) {
            pf_msg m;
            pf_msg_init(&m, PF_MSG_START);
            m.id = w->in.id;
            m.key = w->in.key;
            send_prod(s, &m);
            pthread_mutex_lock(&r->mu);
            w->start_sent_ = 1;
            pthread_mutex_unlock(&r->mu);
        }
        pthread_mutex_lock(&r->mu);
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
    while ((w = wq_pop(&out))) {
        answer(s, w);
        held_remove(s, w);
        work_free(w);
    }
    free(started.v);
    free(out.v);
}

static void on_item(wstate *s, pf_wire_in *in)
{
    pf_msg *m = &in->msg;
    if (s->stopping) {
        send_nack(s, m, 1, "worker is shutting down");
        return;
    }
    int want_inference = s->o->ops->process == NULL;   /* batched stages take tensors */
    if ((m->width > 0) != want_inference) {
        send_nack(s, m, 1, want_inference ? "inference worker got a raw item" : "preprocess worker got a tensor");
        return;
    }
    pf_work *w = calloc(1, sizeof *w);
    if (!w) {
        send_nack(s, m, 1, "out of memory");
        return;
    }
    /* Own a copy of the frame and re-decode into it, so every pointer of w->in lives with the work. */
    size_t len = zmq_msg_size(&in->frame);
    w->buf_ = malloc(len ? len : 1);
    pf_err e = {{0}};
    if (!w->buf_) {
        free(w);
        send_nack(s, m, 1, "out of memory");
        return;
    }
    memcpy(w->buf_, zmq_msg_data(&in->frame), len);
    w->buf_len_ = len;
    if (pf_msg_decode(w->buf_, len, &s->o->lim, &w->in, &e)) {   /* cannot fail: same bytes */
        work_free(w);
        send_nack(s, m, 1, e.msg);
        return;
    }
    w->t_received = pf_now();
    if (held_add(s, w)) {
        work_free(w);
        send_nack(s, m, 1, "out of memory");
        return;
    }
    pthread_mutex_lock(&s->r->mu);
    int bad = wq_push(&s->r->in, w);
    pthread_cond_broadcast(&s->r->cv);
    pthread_mutex_unlock(&s->r->mu);
    if (bad) {
        held_remove(s, w);
        send_nack(s, &w->in, 1, "out of memory");
        work_free(w);
    }
}

static void on_producer_msg(wstate *s, pf_wire_in *in, double now)
{
    pf_msg *m = &in->msg;
    s->last_heard = now;
    if (s->producer_silent) {
        pf_info(role_of(s->o), "producer is back");
        s->producer_silent = 0;
    }
    switch (m->type) {
    case PF_MSG_WELCOME:
        if (strcmp(s->instance, m->instance) != 0 || !s->welcomed) {
            pf_info(role_of(s->o), "joined producer %s as %s (%d free slots)", m->instance, s->name, free_slots(s));
            snprintf(s->instance, sizeof s->instance, "%s", m->instance);
        }
        s->welcomed = 1;
        send_credit(s, free_slots(s));
        break;
    case PF_MSG_RESET:
        s->welcomed = 0;
        if (now - s->last_hello > 0.2)
            send_hello(s, now);
        break;
    case PF_MSG_HB:
        if (m->instance && strcmp(m->instance, s->instance) != 0 && now - s->last_hello > 0.2) {
            s->welcomed = 0;
            send_hello(s, now);
        }
        if (m->finished && !s->finished_seen) {
            s->finished_seen = 1;
            pf_info(role_of(s->o), "producer reports the job complete");
        }
        break;
    case PF_MSG_ITEM:
        on_item(s, in);
        break;
    default:
        pf_debug(role_of(s->o), "ignoring %s from the producer", pf_msg_type_name(m->type));
    }
}

static void make_name(wstate *s)
{
    if (s->o->name) {
        snprintf(s->name, sizeof s->name, "%s", s->o->name);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned r = (unsigned)(ts.tv_nsec ^ (getpid() << 16));
    snprintf(s->name, sizeof s->name, "%s-%s-%d-%04x", s->host, role_of(s->o), (int)getpid(), r & 0xffff);
}

static int start_compute(rt *r, const pf_worker_opts *o, pf_err *err)
{
    int batched = o->ops->process == NULL;
    r->n_cs = batched ? 1 : (o->threads > 0 ? o->threads : 1);
    r->cs = calloc((size_t)r->n_cs, sizeof *r->cs);
    if (!r->cs)
        return pf_errf(err, "out of memory");
    for (int i = 0; i < r->n_cs; i++) {
        compute *c = &r->cs[i];
        c->r = r;
        if (o->instances && i < o->n_instances) {
            c->inst = o->instances[i];
        } else {
            c->inst = o->ops->create(o->stage_cfg, err);
            if (!c->inst)
                return pf_err_prefix(err, "%s stage", o->ops->name);
        }
        if (pthread_create(&c->th, NULL, batched ? batch_thread : item_thread, c) != 0)
            return pf_errf(err, "cannot start a compute thread");
        c->started = 1;
    }
    return 0;
}

static void stop_compute(rt *r, const pf_worker_opts *o)
{
    pthread_mutex_lock(&r->mu);
    r->quit = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < r->n_cs; i++) {
        compute *c = &r->cs[i];
        if (c->started)
            pthread_join(c->th, NULL);
        int premade = o->instances && i < o->n_instances;
        if (c->inst && !premade)
            o->ops->destroy(c->inst);
    }
    free(r->cs);
    r->cs = NULL;
}

int pf_worker_run(const pf_worker_opts *o, pf_err *err)
{
    if (!o->ops || (!o->ops->process && (!o->ops->submit || !o->ops->step || !o->ops->active)))
        return pf_errf(err, "worker: incomplete stage");
    rt R = {0};
    rt *r = &R;
    r->o = o;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    wstate S = {0};
    wstate *s = &S;
    s->o = o;
    s->r = r;
    gethostname(s->host, sizeof s->host - 1);
    make_name(s);
    int batched = o->ops->process == NULL;
    s->capacity = o->capacity > 0 ? o->capacity
                  : batched      ? (o->max_batch > 0 ? o->max_batch : 1) + 2
                                 : 2 * (o->threads > 0 ? o->threads : 1);
    metrics_init(s);
    snprintf(s->health, sizeof s->health, "worker-%s", o->ops->name);
    pf_health_register(s->health, 60);
    void *ctx = o->zctx ? o->zctx : zmq_ctx_new();
    int rc = -1;
    if (r->efd < 0) {
        pf_errf(err, "eventfd: %s", strerror(errno));
        goto out;
    }
    if (!ctx) {
        pf_errf(err, "zmq_ctx_new failed");
        goto out;
    }
    if (start_compute(r, o, err))
        goto out;
    s->prod = pf_wire_socket(ctx, ZMQ_DEALER, &o->lim, 2000, err);
    s->sink = s->prod ? pf_wire_socket(ctx, ZMQ_DEALER, &o->lim, 5000, err) : NULL;
    if (!s->sink)
        goto out;
    zmq_setsockopt(s->prod, ZMQ_ROUTING_ID, s->name, strlen(s->name));
    if (o->sec) {
        char peer[300];
        if (pf_endpoint_is_network(o->producer)) {
            snprintf(peer, sizeof peer, "producer %s", o->producer);
            s->watch_prod = pf_sock_watch_start(ctx, s->prod, o->producer, peer);
        }
        if (pf_endpoint_is_network(o->sink)) {
            snprintf(peer, sizeof peer, "sink %s", o->sink);
            s->watch_sink = pf_sock_watch_start(ctx, s->sink, o->sink, peer);
        }
    }
    if (pf_secure_connect(s->prod, o->producer, o->sec, o->sec ? o->sec->server_public : NULL, err) ||
        pf_secure_connect(s->sink, o->sink, o->sec, o->sec ? o->sec->sink_public : NULL, err))
        goto out;
    pf_info(role_of(o), "%s: producer %s, sink %s, capacity %d", s->name, o->producer, o->sink, s->capacity);
    double now = pf_now();
    s->last_heard = now;
    send_hello(s, now);
    for (;;) {
        zmq_pollitem_t items[2] = {{s->prod, 0, ZMQ_POLLIN, 0}, {NULL, r->efd, ZMQ_POLLIN, 0}};
        int pr = zmq_poll(items, 2, 100);
        if (pr < 0 && errno == ETERM)
            break;
        now = pf_now();
        pf_health_tick(s->health);
        pf_sock_watch_poll(s->watch_prod);
        pf_sock_watch_poll(s->watch_sink);
        if (o->reload && *o->reload) {
            *o->reload = 0;
            if (o->on_reload)
                o->on_reload(o->reload_arg);
        }
        if (items[1].revents & ZMQ_POLLIN) {
            uint64_t v;
            ssize_t nr = read(r->efd, &v, sizeof v);
            (void)nr;
        }
        for (int i = 0; i < 256; i++) {
            pf_wire_in in;
            pf_err e = {{0}};
            int got = pf_wire_recv(s->prod, 0, &o->lim, &in, &e);
            if (got == 0)
                break;
            if (got == -2)
                goto done_loop;
            if (got < 0) {
                pf_warn(role_of(o), "bad message from the producer: %s", e.msg);
                continue;
            }
            on_producer_msg(s, &in, now);
            pf_wire_in_close(&in);
        }
        drain_outputs(s);
        pthread_mutex_lock(&r->mu);
        int fatal = r->fatal;
        pthread_mutex_unlock(&r->mu);
        if (fatal) {
            pf_error(role_of(o), "stage failed: %s; handing back %zu items", r->fatal_msg, s->n_held);
            s->stopping = 1;
            for (size_t i = 0; i < s->n_held; i++)
                send_nack(s, &s->held[i]->in, 1, "worker failed");
            pf_errf(err, "%s stage: %s", o->ops->name, r->fatal_msg);
            goto out_bye;
        }
        if (now - s->last_hb >= o->hb_interval) {
            pf_msg hb;
            pf_msg_init(&hb, PF_MSG_HB);
            send_prod(s, &hb);
            s->last_hb = now;
            if (!s->welcomed && now - s->last_hello >= o->hb_interval)
                send_hello(s, now);
        }
        if (!s->producer_silent && now - s->last_heard > o->hb_timeout) {
            pf_warn(role_of(o), "producer silent for %.1f s; keeping my items and waiting for it",
                    now - s->last_heard);
            s->producer_silent = 1;
            s->welcomed = 0;
        }
        if (!s->stopping && o->stop && *o->stop) {
            s->stopping = 1;
            s->stop_at = now;
            /* Items not started yet go straight back; running ones get drain_timeout to finish. */
            pthread_mutex_lock(&r->mu);
            pf_work *w;
            size_t handed = 0;
            while ((w = wq_pop(&r->in))) {
                send_nack(s, &w->in, 1, "worker is shutting down");
                held_remove(s, w);
                work_free(w);
                handed++;
            }
            pthread_mutex_unlock(&r->mu);
            pf_info(role_of(o), "stopping: handed back %zu waiting items, finishing %zu in progress", handed,
                    s->n_held);
        }
        if (s->stopping) {
            if (s->n_held == 0)
                break;
            if (now - s->stop_at > o->drain_timeout) {
                pf_warn(role_of(o), "drain timeout: handing back %zu items in progress", s->n_held);
                for (size_t i = 0; i < s->n_held; i++)
                    send_nack(s, &s->held[i]->in, 1, "worker is shutting down");
                break;
            }
        }
        int connected = s->welcomed && !s->producer_silent;
        pf_health_ready(s->health, connected);
        pf_metric_set(s->m.connected, connected);
        pf_metric_set(s->m.held, (double)s->n_held);
        pf_metric_set(s->m.ips, pf_rate_update(&s->rate_items, now, (double)s->n_items));
        pf_metric_set(s->m.tps, pf_rate_update(&s->rate_tokens, now, (double)s->n_tokens));
        if (o->exit_when_done && s->finished_seen && s->n_held == 0) {
            pf_info(role_of(o), "job complete: exiting");
            break;
        }
    }
done_loop:
    rc = 0;
out_bye:
    if (s->prod) {
        pf_msg bye;
        pf_msg_init(&bye, PF_MSG_BYE);
        send_prod(s, &bye);
    }
out:
    if (r->cs)
        stop_compute(r, o);
    /* Every work is in `held` until it is answered (the queues only hold works that are also there), so
     * freeing `held` frees works still queued, running when we gave up, or inside a batch stage. */
    for (size_t i = 0; i < s->n_held; i++)
        work_free(s->held[i]);
    s->n_held = 0;
    free(s->held);
    free(r->in.v);
    free(r->out.v);
    free(r->started.v);
    pf_metric_set(s->m.held, 0);
    pf_metric_set(s->m.connected, 0);
    pf_health_unregister(s->health);
    pf_sock_watch_stop(s->watch_prod);
    pf_sock_watch_stop(s->watch_sink);
    if (s->prod)
        zmq_close(s->prod);
    if (s->sink)
        zmq_close(s->sink);
    if (ctx && !o->zctx)
        zmq_ctx_term(ctx);
    if (r->efd >= 0)
        close(r->efd);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    return rc;
}
