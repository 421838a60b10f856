/* sink.c - see sink.h. One thread: the workers' ROUTER, the DEALER to the producer (hello, heartbeats,
 * acknowledgements; the producer's own error records come back on it), the optional PUB socket. What
 * happens to a record is in sink_output.c. */
#include "pipeline/sink.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "base/file.h"
#include "base/log.h"
#include "pipeline/compact.h"
#include "pipeline/outfile.h"
#include "pipeline/sink_internal.h"
#include "proto/wire.h"

pf_sink_params pf_sink_default_params(void)
{
    pf_sink_params p = {.out_fd = -1, .batch = 64, .flush_s = 0.05, .fsync = 1, .hb_interval = 1.0, .hb_timeout = 10.0,
                        .lim = pf_proto_default_limits()};
    pf_view_default_params(&p.views);
    return p;
}

static void metrics_init(sink *s)
{
    s->m.records[0] = pf_counter("paliflow_sink_records_total", "kind=\"result\"",
                                 "Records written to the output file in this run");
    s->m.records[1] = pf_counter("paliflow_sink_records_total", "kind=\"error\"",
                                 "Records written to the output file in this run");
    s->m.dups = pf_counter("paliflow_sink_duplicates_total", "",
                           "Records received again for an item already in the file (acknowledged, not written)");
    s->m.in_file = pf_gauge("paliflow_sink_records_in_file", "",
                            "Records in the output file (found at start + written since)");
    s->m.batches = pf_counter("paliflow_sink_batches_total", "", "Write + fdatasync batches");
    s->m.fsync_s = pf_histogram("paliflow_sink_flush_seconds", "", "Seconds to write and fdatasync one batch",
                                pf_buckets_seconds, pf_buckets_seconds_n);
    s->m.tokens = pf_counter("paliflow_sink_tokens_total", "", "Generated tokens in the records written");
    s->m.rps = pf_gauge("paliflow_sink_records_per_second", "", "Records written per second (last 60 s)");
    s->m.tps = pf_gauge("paliflow_sink_tokens_per_second", "", "Generated tokens written per second (last 60 s)");
    s->m.connected = pf_gauge("paliflow_sink_producer_connected", "", "1 while the producer answers");
    for (int i = 0; i < PF_TIMINGS_N; i++) {   /* stage="read" for read_s, ... */
        char l[48];
        snprintf(l, sizeof l, "stage=\"%.*s\"", (int)strlen(pf_timing_names[i]) - 2, pf_timing_names[i]);
        s->m.timing[i] = pf_histogram("paliflow_stage_seconds", l,
                                      "Per-stage seconds of the items written (from the records' timings)",
                                      pf_buckets_seconds, pf_buckets_seconds_n);
    }
    static const char *const st[3] = {"stage=\"producer\"", "stage=\"preprocess\"", "stage=\"inference\""};
    for (int i = 0; i < 3; i++)
        s->m.errors[i] = pf_counter("paliflow_sink_error_records_total", st[i], "Error records written, by stage");
    pf_rate_init(&s->rate_records, 60);
    pf_rate_init(&s->rate_tokens, 60);
}

void pf_sink_send_prod(sink *s, pf_msg *m)
{
    pf_err e = {{0}};
    m->name = s->name;
    if (s->link.instance[0])
        m->instance = s->link.instance;
    if (pf_wire_send(s->psock, NULL, 0, m, &e)) {
        if (errno == EAGAIN)   /* not connected: the producer is down or refused our key (see the watch) */
            pf_debug(LOG, "to producer (%s): %s", pf_msg_type_name(m->type), e.msg);
        else
            pf_warn(LOG, "to producer (%s): %s", pf_msg_type_name(m->type), e.msg);
    }
}

static void send_hello(sink *s, double now)
{
    pf_msg m;
    pf_msg_init(&m, PF_MSG_HELLO);
    m.role = "sink";
    char host[64] = {0};
    gethostname(host, sizeof host - 1);
    m.host = host;
    m.pid = getpid();
    m.path = s->o->out;
    m.out_end = s->out_end;   /* the producer redoes finished items whose records end beyond it */
    m.out_records = pf_sink_index_count(s->index);   /* or all, when fewer than it finished */
    m.leases = 1;   /* tell me every lease: I write a worker's record only for an item leased to it */
    m.batch_notes = 1;   /* in `notes` messages: one per turn of the producer's loop, not three per item */
    pf_sink_send_prod(s, &m);
    pf_link_said_hello(&s->link, now);
}

static void on_producer_msg(sink *s, pf_wire_in *in, double now)
{
    pf_msg *m = &in->msg;
    if (pf_link_heard(&s->link, now))   /* the end of the silence keep_in_touch warned about (as the workers say) */
        pf_info(LOG, "producer is back");
    switch (m->type) {
    case PF_MSG_WELCOME: {
        int fresh = pf_link_welcome(&s->link, m->instance);
        if (fresh) {
            pf_info(LOG, "connected to producer %s", m->instance);
            s->finished = s->compacted = 0;   /* a new run of the job (or another job): it ends again */
        }
        pf_sink_auth_welcomed(s, m, fresh);
        break;
    }
    case PF_MSG_LEASE:
    case PF_MSG_UNLEASE:
    case PF_MSG_NOTES:
        pf_sink_auth_on_note(s, m, now);
        break;
    case PF_MSG_RESET:
    case PF_MSG_HB:
        if (pf_link_wants_hello(&s->link, m, now))
            send_hello(s, now);
        if (m->type == PF_MSG_HB && m->finished && !s->finished) {
            s->finished = 1;
            pf_info(LOG, "producer reports the job complete (%lld done, %lld failed)", (long long)m->n_done,
                    (long long)m->n_failed);
        }
        break;
    case PF_MSG_ERROR:
    case PF_MSG_RESULT:
        pf_sink_auth_producer_record(s, m);
        break;
    default:
        break;
    }
}

static void make_name(sink *s)
{
    if (s->o->name) {
        snprintf(s->name, sizeof s->name, "%s", s->o->name);
        return;
    }
    char host[64] = {0};
    gethostname(host, sizeof host - 1);
    snprintf(s->name, sizeof s->name, "%s-sink-%d", host, (int)getpid());
}

/* The workers' ROUTER and the optional PUB (CURVE servers when the endpoints need it), and the DEALER to the
 * producer (a CURVE client, watched for a refused key). */
static int open_sockets(sink *s, void *ctx, pf_err *err)
{
    const pf_sink_params *o = s->o;
    s->rsock = pf_wire_socket(ctx, ZMQ_ROUTER, &o->lim, 0, err);
    s->psock = s->rsock ? pf_wire_socket(ctx, ZMQ_DEALER, &o->lim, 2000, err) : NULL;
    if (!s->psock)
        return -1;
    if ((pf_security_curve_bind(o->sec, o->bind) || (o->publish && pf_security_curve_bind(o->sec, o->publish))) &&
        pf_zap_start(ctx, o->sec->allow_path, o->sec->server.public_key, &s->zap, err))
        return -1;
    if (pf_secure_bind(s->rsock, o->bind, o->sec, err))
        return -1;
    if (o->publish) {
        s->pub = pf_wire_socket(ctx, ZMQ_PUB, &o->lim, 1000, err);
        if (!s->pub || pf_secure_bind(s->pub, o->publish, o->sec, err))
            return -1;
    }
    zmq_setsockopt(s->psock, ZMQ_ROUTING_ID, s->name, strlen(s->name));
    if (o->sec && pf_endpoint_is_network(o->producer)) {
        char peer[300];
        snprintf(peer, sizeof peer, "producer %s", o->producer);
        s->watch = pf_sock_watch_start(ctx, s->psock, o->producer, peer);
    }
    return pf_secure_connect(s->psock, o->producer, o->sec, o->sec ? o->sec->server_public : NULL, err);
}

/* After a reload (the command re-read its config file into the reloadable options): the allow-list too. */
static void reload(sink *s)
{
    const pf_sink_params *o = s->o;
    pf_err re = {{0}};
    if (s->zap && pf_zap_reload(s->zap, o->sec->allow_path, &re))
        pf_error(LOG, "reload: %s (the previous allow-list stays)", re.msg);
}

typedef struct recv_ctx {
    sink *s;
    double now;
    pf_err *err;
    int64_t n;   /* messages handled */
} recv_ctx;

#define GATHER_S 0.002    /* the longest pause for results to gather while a batch is open */
#define GATHER_BUSY 32    /* a turn that read this many messages found a backlog: no pause */

/* Results arrive one at a time when the workers keep pace with the producer, and each woke the loop for one
 * record: a poll, ZeroMQ's command processing and the IO thread's signal cost about as much CPU as the
 * record itself. While a batch is open its records wait for the flush anyway, so after a turn that read a
 * few messages the loop lets the next ones gather for GATHER_S before it reads again: never past the
 * batch's flush time, and not after a turn that found a backlog (the sink is behind: a pause would only slow
 * it). */
static void gather(sink *s, double now, int64_t read)
{
    if (read == 0 || read >= GATHER_BUSY || !s->n_batch || s->n_batch >= (size_t)s->o->batch)
        return;
    double t = s->batch_t0 + s->o->flush_s - now;
    if (t > GATHER_S)
        t = GATHER_S;
    if (t > 0) {
        struct timespec ts = {0, (long)(t * 1e9)};
        nanosleep(&ts, NULL);   /* a signal (stop, reload) ends it early */
    }
}

/* From a worker: a record. A full batch is flushed at once (-1: the flush failed, err says why). */
static int on_worker_msg(void *arg, pf_wire_in *in)
{
    recv_ctx *c = arg;
    sink *s = c->s;
    c->n++;
    if (in->msg.type == PF_MSG_RESULT || in->msg.type == PF_MSG_ERROR)
        pf_sink_auth_worker_record(s, in, c->now);
    if (s->n_batch >= (size_t)s->o->batch && pf_sink_flush_batch(s, c->err))
        return -1;
    return 0;
}

static int on_producer(void *arg, pf_wire_in *in)
{
    recv_ctx *c = arg;
    on_producer_msg(c->s, in, c->now);
    c->n++;
    return 0;
}

int pf_sink_read_producer(sink *s, double now)
{
    if (!s->psock)
        return 0;
    recv_ctx c = {s, now, NULL, 0};
    pf_wire_drain(s->psock, 0, &s->o->lim, 1 << 20, LOG, "the producer", on_producer, &c);
    return c.n > 0;
}

/* Heartbeats to the producer, hello again until it welcomes us, and a warning when it falls silent (the sink
 * keeps collecting results meanwhile). */
static void keep_in_touch(sink *s, double now)
{
    const pf_sink_params *o = s->o;
    int due = pf_link_tick(&s->link, now, o->hb_interval, o->hb_timeout);
    if (due & PF_LINK_SEND_HB) {
        pf_msg hb;
        pf_msg_init(&hb, PF_MSG_HB);
        pf_sink_send_prod(s, &hb);
    }
    if (due & PF_LINK_SEND_HELLO)
        send_hello(s, now);
    if (due & PF_LINK_WENT_SILENT)
        pf_warn(LOG, "producer silent for %.1f s; still collecting results", now - s->link.last_heard);
}

static void update_metrics(sink *s, double now)
{
    pf_metric_set(s->m.in_file, (double)s->in_file);
    pf_metric_set(s->m.connected, pf_link_connected(&s->link));
    pf_metric_set(s->m.rps, pf_rate_update(&s->rate_records, now, (double)s->written));
    pf_metric_set(s->m.tps, pf_rate_update(&s->rate_tokens, now, (double)s->tokens));
}

/* The job is complete (every record acknowledged): errors a later success superseded leave the output, so it
 * holds one final record per (item, task) (compact.h). Nothing is read when there are none. A failure leaves
 * them in (logged); -1 only when the views cannot follow the new file. */
static int compact(sink *s, pf_err *err)
{
    s->compacted = 1;
    if (pf_sink_index_superseded(s->index) == 0)
        return 0;
    pf_err e = {{0}};
    int64_t removed = 0;
    pf_views_close(s->views);   /* their checkpoints move with the file (pf_views_compacted) */
    s->views = NULL;
    if (pf_output_compact_indexed(s->o->out, &s->fd, &s->out_end, s->index, NULL, &removed, &e))
        pf_error(LOG, "%s: compaction: %s (superseded error records stay in it)", s->o->out, e.msg);
    else if (removed)
        pf_info(LOG, "%s: %lld error records superseded by a later success removed: one final record per item",
                s->o->out, (long long)removed);
    s->in_file = pf_sink_index_count(s->index);
    return pf_views_open(&s->o->views, s->o->out, s->fd, s->out_end, &s->views, err);
}

/* Drop what was not flushed (never acknowledged: the producer redoes it), close everything. */
static void close_run(sink *s, void *ctx)
{
    const pf_sink_params *o = s->o;
    /* The index up to the output's end, so that the next start reads nothing; not with records in the batch
     * (their identities are in the open transaction, their lines not in the output): then it rolls back, and
     * the next start reads the tail since the last commit. */
    pf_err ie = {{0}};
    if (s->index && (s->failed || s->n_batch))
        pf_sink_index_rollback(s->index);
    else if (s->index && pf_sink_index_commit(s->index, s->fd, s->out_end, &ie))
        pf_warn(LOG, "%s (the next start reads the output's tail again)", ie.msg);
    pf_sink_batch_close(s);
    pf_sink_auth_free(s);
    pf_metric_set(s->m.in_file, (double)s->in_file);
    pf_health_ready("sink", 0);
    pf_health_unregister("sink");
    pf_sock_watch_stop(s->watch);
    if (s->pub)
        zmq_close(s->pub);
    if (s->rsock)
        zmq_close(s->rsock);
    if (s->psock)
        zmq_close(s->psock);
    pf_zap_stop(s->zap);
    if (!o->zctx)
        zmq_ctx_term(ctx);
    if (s->fd >= 0) {
        if (o->fsync && fsync(s->fd) != 0)
            pf_error(LOG, "%s: fsync on close: %s", o->out, strerror(errno));
        close(s->fd);
    }
    pf_views_close(s->views);
    pf_sink_index_close(s->index);
}

int pf_sink_run(const pf_sink_params *o, pf_err *err)
{
    sink S = {0}, *s = &S;
    s->o = o;
    s->fd = -1;
    make_name(s);
    int rc = -1;
    metrics_init(s);
    pf_health_register("sink", 60);
    void *ctx = o->zctx ? o->zctx : zmq_ctx_new();
    if (!ctx)
        return pf_errf(err, "zmq_ctx_new failed");
    if (pf_sink_auth_init(s)) {
        pf_errf(err, "out of memory for the lease table");
        goto out;
    }
    /* checked (a regular file, writable, room), locked against a second writer (or that lock, taken by the
     * caller, shared), then read back */
    if ((o->out_fd >= 0 ? pf_outfile_adopt(o->out, o->out_fd, &s->fd, err) : pf_outfile_open(o->out, &s->fd, err)) ||
        pf_sink_load_existing(s, err) ||
        pf_views_open(&o->views, o->out, s->fd, s->out_end, &s->views, err))
        goto out;
    pf_metric_set(s->m.in_file, (double)s->in_file);
    if (open_sockets(s, ctx, err))
        goto out;
    pf_health_ready("sink", 1);
    pf_info(LOG, "%s: writing %s, results on %s, publishing on %s, producer %s", s->name, o->out, o->bind,
            o->publish ? o->publish : "(none)", o->producer);
    double now = pf_now();
    pf_link_start(&s->link, now);
    send_hello(s, now);
    while (!pf_control_stopping(&o->ctl)) {
        zmq_pollitem_t it[2] = {{s->rsock, 0, ZMQ_POLLIN, 0}, {s->psock, 0, ZMQ_POLLIN, 0}};
        /* with records waiting, wake up in time for their --flush-ms */
        long timeout = s->n_batch ? (long)(o->flush_s * 1000 / 2) + 1 : 100;
        if (zmq_poll(it, 2, timeout) < 0 && errno == ETERM)
            break;
        now = pf_now();
        pf_health_tick("sink");
        pf_sock_watch_poll(s->watch);
        if (pf_control_reload(&o->ctl))
            reload(s);
        recv_ctx c = {s, now, err, 0};
        /* The producer first, all of it: its lease notes let the workers' records in, and a record read before
         * the note for it must wait (sink_auth.c). Its rate is the producer's dispatch rate: no starvation. */
        if (pf_wire_drain(s->psock, 0, &o->lim, 1 << 20, LOG, "the producer", on_producer, &c) == -2)
            break;
        int got = pf_wire_drain(s->rsock, 1, &o->lim, 1000, LOG, NULL, on_worker_msg, &c);
        if (got == -1)
            goto out;
        if (s->failed) {   /* the record index failed: stop before acknowledging anything unchecked */
            *err = s->fail;
            goto out;
        }
        if (got == -2)
            break;
        pf_sink_auth_tick(s, now);
        if (s->n_batch && (s->n_batch >= (size_t)o->batch || now - s->batch_t0 >= o->flush_s))
            if (pf_sink_flush_batch(s, err))
                goto out;
        keep_in_touch(s, now);
        update_metrics(s, now);
        if (o->compact_at_end && s->finished && !s->compacted && s->n_batch == 0 && compact(s, err))
            goto out;
        if (o->exit_when_done && s->finished && s->n_batch == 0) {
            pf_info(LOG, "job complete: exiting");
            break;
        }
        gather(s, now, c.n);
    }
    if (pf_sink_flush_batch(s, err))
        goto out;
    pf_info(LOG, "%lld records written, %lld duplicates dropped, %lld messages refused (%lld waited for their "
            "lease note)", (long long)s->written, (long long)s->dups, (long long)pf_sink_auth_refused(s),
            (long long)pf_sink_auth_waited(s));
    rc = 0;
out:
    close_run(s, ctx);
    return rc;
}
