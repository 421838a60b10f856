/* worker.c - the generic worker runtime (see worker.h): setup, the main loop (producer messages, finished
 * works, heartbeats, a graceful stop with its drain), teardown. The compute threads are in
 * worker_compute.c, the messages in worker_messages.c (map in worker_internal.h). */
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
#include "workers/worker_internal.h"

void pf_work_fail(pf_work *w, int status, const char *fmt, ...)
{
    w->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->message, sizeof w->message, fmt, ap);
    va_end(ap);
}

pf_worker_params pf_worker_default_params(void)
{
    return (pf_worker_params){.threads = 1, .max_batch = 8, .max_delay_ms = 20, .hb_interval = 1.0,
                              .hb_timeout = 10.0, .drain_timeout = 30.0, .lim = pf_proto_default_limits()};
}

int pf_worker_name_opt_hook(const pf_opt *opt, void *field, const char *val, pf_err *err)
{
    (void)field;
    /* the name goes into every record and log line: bounded, and never empty */
    if (!*val || strlen(val) > 100)
        return pf_errf(err, "--%s: want 1 to 100 characters", opt->name);
    return 0;
}

void pf_worker_work_free(pf_work *w)
{
    if (!w)
        return;
    pf_msg_free(&w->in);
    free(w->buf_);
    if (w->frame_) {
        zmq_msg_t *f = w->frame_;
        zmq_msg_close(&f[0]);
        zmq_msg_close(&f[1]);
        free(f);
    }
    free(w->rgb);
    free(w->text);
    free(w->objects);
    free(w->ids);
    free(w);
}

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

static void make_name(wstate *s)
{
    if (s->o->name) {
        snprintf(s->name, sizeof s->name, "%s", s->o->name);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned r = (unsigned)(ts.tv_nsec ^ (getpid() << 16));
    snprintf(s->name, sizeof s->name, "%s-%s-%d-%04x", s->host, pf_worker_role(s->o), (int)getpid(),
             r & 0xffff);
}

/* Two DEALERs: to the producer (named, so that the producer knows us across reconnects) and to the sink;
 * CURVE clients on network endpoints, each watched for a refused key. */
static int open_sockets(wstate *s, void *ctx, pf_err *err)
{
    const pf_worker_params *o = s->o;
    s->prod = pf_wire_socket(ctx, ZMQ_DEALER, &o->lim, 2000, err);
    s->sink = s->prod ? pf_wire_socket(ctx, ZMQ_DEALER, &o->lim, 5000, err) : NULL;
    if (!s->sink)
        return -1;
    zmq_setsockopt(s->prod, ZMQ_ROUTING_ID, s->name, strlen(s->name));
    /* the sink takes our records only from the routing id the producer leased the items to */
    zmq_setsockopt(s->sink, ZMQ_ROUTING_ID, s->name, strlen(s->name));
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
        return -1;
    return 0;
}

typedef struct recv_ctx {
    wstate *s;
    double now;
} recv_ctx;

static int on_message(void *arg, pf_wire_in *in)
{
    recv_ctx *c = arg;
    pf_worker_on_producer_msg(c->s, in, c->now);
    return 0;
}

/* A batched step failed: the stage cannot go on, so every item held goes back (no attempt counted). */
static int stage_failed(wstate *s, pf_err *err)
{
    rt *r = s->r;
    pthread_mutex_lock(&r->mu);
    int fatal = r->fatal;
    pthread_mutex_unlock(&r->mu);
    if (!fatal)
        return 0;
    pf_error(pf_worker_role(s->o), "stage failed: %s; handing back %zu items", r->fatal_msg, s->n_held);
    s->stopping = 1;
    for (size_t i = 0; i < s->n_held; i++)
        pf_worker_send_nack(s, &s->held[i]->in, 1, "worker failed");
    pf_errf(err, "%s stage: %s", s->o->ops->name, r->fatal_msg);
    return 1;
}

/* Heartbeats to the producer, hello again until it welcomes us, and a warning when it falls silent (the
 * items held are kept: a producer that comes back takes their outcomes). */
static void keep_in_touch(wstate *s, double now)
{
    const pf_worker_params *o = s->o;
    int due = pf_link_tick(&s->link, now, o->hb_interval, o->hb_timeout);
    if (due & PF_LINK_SEND_HB) {
        pf_msg hb;
        pf_msg_init(&hb, PF_MSG_HB);
        pf_worker_send_prod(s, &hb);
    }
    if (due & PF_LINK_SEND_HELLO)
        pf_worker_send_hello(s, now);
    if (due & PF_LINK_WENT_SILENT)
        pf_warn(pf_worker_role(o), "producer silent for %.1f s; keeping my items and waiting for it",
                now - s->link.last_heard);
}

/* SIGTERM/SIGINT: items not started yet go straight back; running ones get drain_timeout to finish. */
static void begin_stop(wstate *s, double now)
{
    rt *r = s->r;
    s->stopping = 1;
    s->stop_at = now;
    pthread_mutex_lock(&r->mu);
    pf_work *w;
    size_t handed = 0;
    while ((w = pf_ring_pop(&r->in))) {
        pf_worker_send_nack(s, &w->in, 1, "worker is shutting down");
        pf_worker_held_remove(s, w);
        pf_worker_work_free(w);
        handed++;
    }
    pthread_mutex_unlock(&r->mu);
    pf_info(pf_worker_role(s->o), "stopping: handed back %zu waiting items, finishing %zu in progress",
            handed, s->n_held);
}

/* While stopping: 1 when nothing is held any more, or when the drain timeout passed (the items still in
 * progress are handed back). */
static int drained(wstate *s, double now)
{
    if (s->n_held == 0)
        return 1;
    if (now - s->stop_at > s->o->drain_timeout) {
        pf_warn(pf_worker_role(s->o), "drain timeout: handing back %zu items in progress", s->n_held);
        for (size_t i = 0; i < s->n_held; i++)
            pf_worker_send_nack(s, &s->held[i]->in, 1, "worker is shutting down");
        return 1;
    }
    return 0;
}

static void update_metrics(wstate *s, double now)
{
    int connected = pf_link_connected(&s->link);
    pf_health_ready(s->health, connected);
    pf_metric_set(s->m.connected, connected);
    pf_metric_set(s->m.held, (double)s->n_held);
    pf_metric_set(s->m.ips, pf_rate_update(&s->rate_items, now, (double)s->n_items));
    pf_metric_set(s->m.tps, pf_rate_update(&s->rate_tokens, now, (double)s->n_tokens));
}

/* Name, capacity (the credit it announces), metrics and health of the worker. */
static void init_state(wstate *s, rt *r, const pf_worker_params *o)
{
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
}

/* Stop the compute threads, free every work (all of them are in `held` until answered: the queues only hold
 * works that are also there, so this frees works still queued, running when we gave up, or inside a batch
 * stage), close the sockets. */
static void teardown(wstate *s, void *ctx)
{
    rt *r = s->r;
    const pf_worker_params *o = s->o;
    if (r->cs)
        pf_worker_stop_compute(r, o);
    for (size_t i = 0; i < s->n_held; i++)
        pf_worker_work_free(s->held[i]);
    s->n_held = 0;
    free(s->held);
    pf_ring_free(&r->in);
    pf_ring_free(&r->out);
    pf_ring_free(&r->started);
    pf_ring_free(&r->ready);
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
    pthread_cond_destroy(&r->cv_ready);
}

int pf_worker_run(const pf_worker_params *o, pf_err *err)
{
    if (!o->ops || (!o->ops->process && (!o->ops->submit || !o->ops->step || !o->ops->active)))
        return pf_errf(err, "worker: incomplete stage");
    rt R = {0};
    rt *r = &R;
    r->o = o;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    pthread_cond_init(&r->cv_ready, NULL);
    r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    wstate S = {0};
    wstate *s = &S;
    init_state(s, r, o);
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
    if (pf_worker_start_compute(r, o, err) || open_sockets(s, ctx, err))
        goto out;
    if (o->ops->image_size && r->n_cs > 0 && r->cs[0].inst)   /* announced in every hello */
        s->image_size = o->ops->image_size(r->cs[0].inst);
    pf_info(pf_worker_role(o), "%s: producer %s, sink %s, capacity %d", s->name, o->producer, o->sink,
            s->capacity);
    double now = pf_now();
    pf_link_start(&s->link, now);
    pf_worker_send_hello(s, now);
    for (;;) {
        zmq_pollitem_t items[2] = {{s->prod, 0, ZMQ_POLLIN, 0}, {NULL, r->efd, ZMQ_POLLIN, 0}};
        int pr = zmq_poll(items, 2, 100);
        if (pr < 0 && errno == ETERM)
            break;
        now = pf_now();
        pf_health_tick(s->health);
        pf_sock_watch_poll(s->watch_prod);
        pf_sock_watch_poll(s->watch_sink);
        pf_control_reload(&o->ctl);
        if (items[1].revents & ZMQ_POLLIN) {   /* a compute thread woke us: reset the eventfd */
            uint64_t v;
            ssize_t nr = read(r->efd, &v, sizeof v);
            (void)nr;
        }
        if (pf_wire_drain(s->prod, 0, &o->lim, 256, pf_worker_role(o), "the producer", on_message,
                          &(recv_ctx){s, now}) == -2)
            break;
        pf_worker_drain_outputs(s);
        if (stage_failed(s, err))
            goto out_bye;
        keep_in_touch(s, now);
        if (!s->stopping && pf_control_stopping(&o->ctl))
            begin_stop(s, now);
        if (s->stopping && drained(s, now))
            break;
        update_metrics(s, now);
        if (o->exit_when_done && s->finished_seen && s->n_held == 0) {
            pf_info(pf_worker_role(o), "job complete: exiting");
            break;
        }
    }
    rc = 0;
out_bye:
    if (s->prod) {
        pf_msg bye;
        pf_msg_init(&bye, PF_MSG_BYE);
        pf_worker_send_prod(s, &bye);
    }
out:
    teardown(s, ctx);
    return rc;
}
