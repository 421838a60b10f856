/* producer.c - see producer.h. One thread, one ROUTER socket, one job store: setup, the loop (receive,
 * scan, refill, expire, dispatch, commit, heartbeat), and the end of the run. The pieces of the loop live in
 * producer_*.c (map in producer_internal.h). */
#include "pipeline/producer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "base/file.h"
#include "base/log.h"
#include "pipeline/producer_internal.h"

pf_producer_params pf_producer_default_params(void)
{
    return (pf_producer_params){.db_lock_fd = -1, .task = pf_task_default_params(), .max_attempts = 3,
                                .retry_backoff_s = 0.5, .preprocess_lease_s = 120, .inference_lease_s = 1800,
                                .ack_timeout_s = 60, .hb_interval = 1.0, .hb_timeout = 10.0, .max_ready = 64,
                                .max_file_bytes = 48u << 20, .lim = pf_proto_default_limits(), .progress = -1,
                                .progress_interval = 10};
}

/* After a reload (the command re-read its config file into the reloadable options): the allow-list too. */
static void reload(prod *p)
{
    pf_err e = {{0}};
    if (p->zap && pf_zap_reload(p->zap, p->o->sec->allow_path, &e))
        pf_error(LOG, "reload: %s (the previous allow-list stays)", e.msg);
    p->prog.interval = p->o->progress_interval;
}

static void make_instance(prod *p)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(p->instance, sizeof p->instance, "%08lx%04x", (unsigned long)ts.tv_sec,
             (unsigned)((ts.tv_nsec ^ getpid()) & 0xffff));
}

/* Open the job store, load or store the job's settings, return the previous run's leases to the queue,
 * and open the scan of the inputs. */
static int open_job(prod *p, pf_err *err)
{
    const pf_producer_params *o = p->o;
    if (pf_jobstore_open_held(o->db, o->db_lock_fd, &p->js, err) || pf_jobstore_checkpoint_thread(p->js, err))
        return -1;
    if (pf_jobstore_begin(p->js, err) || pf_prod_setup_job(p, err) || pf_prod_setup_tasks(p, err))
        return -1;
    int64_t reset = 0, counts[4];
    if (pf_jobstore_reset_leases(p->js, &reset, err))
        return -1;
    if (o->retry_failed) {
        int64_t n = 0;
        if (pf_jobstore_requeue_failed(p->js, &n, err))
            return -1;
        pf_info(LOG, "--retry-failed: %lld failed item%s queued again", (long long)n, n == 1 ? "" : "s");
    }
    if (pf_jobstore_counts(p->js, counts, err))
        return -1;
    p->total = counts[0] + counts[1] + counts[2] + counts[3];
    p->done = p->at_start_done = counts[PF_ITEM_DONE];
    p->failed = counts[PF_ITEM_FAILED];
    if (p->total)
        pf_info(LOG, "job store: %lld items, %lld done, %lld failed, %lld to do (%lld leases of the previous run "
                "returned to the queue)", (long long)p->total, (long long)p->done, (long long)p->failed,
                (long long)(p->total - p->done - p->failed), (long long)reset);
    if (pf_prod_setup_scan(p, err) || pf_jobstore_commit(p->js, err))
        return -1;
    return 0;
}

/* The ROUTER socket every peer connects to; CURVE with the ZAP handler when the endpoint needs it. */
static int open_socket(prod *p, void *ctx, pf_err *err)
{
    const pf_producer_params *o = p->o;
    p->sock = pf_wire_socket(ctx, ZMQ_ROUTER, &o->lim, 1000, err);
    if (!p->sock)
        return -1;
    int one = 1;
    zmq_setsockopt(p->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    if (pf_security_curve_bind(o->sec, o->bind) &&
        pf_zap_start(ctx, o->sec->allow_path, o->sec->server.public_key, &p->zap, err))
        return -1;
    return pf_secure_bind(p->sock, o->bind, o->sec, err);
}

typedef struct recv_ctx {
    prod *p;
    double now;
    int hellos; /* say_finished: hellos answered */
} recv_ctx;

static int on_message(void *arg, pf_wire_in *in)
{
    recv_ctx *c = arg;
    pf_prod_handle(c->p, in, c->now);
    return 0;
}

/* After the job: welcome a newcomer (say_finished), drop the rest. */
static int on_late_hello(void *arg, pf_wire_in *in)
{
    recv_ctx *c = arg;
    if (in->msg.type == PF_MSG_HELLO) {
        pf_prod_handle(c->p, in, c->now);
        c->hellos++;
    }
    return 0;
}

/* The counts come from the job store, which keeps them (jobstore.h) and could have been edited by another
 * program: when they and what is left disagree (they say finished and an item is still queued, or nothing is
 * left and they say unfinished), the store is looked at (one lookup) and, if they were wrong, counted again. */
static int counts_right(prod *p, int say_finished)
{
    int open = 0;
    pf_err e = {{0}};
    if (pf_jobstore_any_open(p->js, &open, &e)) {
        pf_error(LOG, "%s", e.msg);
        return 1;
    }
    if (open != say_finished)
        return 1;
    int64_t c[4];
    pf_warn(LOG, "the job store's item counts were wrong (%lld items, %lld done, %lld failed; was it edited by "
            "another program?): counting them again", (long long)p->total, (long long)p->done, (long long)p->failed);
    if (pf_jobstore_recount(p->js, &e) || pf_jobstore_counts(p->js, c, &e)) {
        pf_error(LOG, "%s", e.msg);
        return 1;
    }
    p->total = c[0] + c[1] + c[2] + c[3];
    p->done = c[PF_ITEM_DONE];
    p->failed = c[PF_ITEM_FAILED];
    p->db_exhausted = 0;   /* items the counts hid are read from the store */
    return 0;
}

/* Every item is done or failed, and nothing is left to scan or hand out; and a sink has confirmed that its
 * output holds their records (producer_reconcile.c). */
static int job_finished(prod *p)
{
    if (p->scanning || p->n_fl || p->raw.n)
        return 0;
    int say = p->total == p->done + p->failed;
    if (!say && !p->db_exhausted)
        return 0;
    if (!counts_right(p, say) || !say)
        return 0;
    return p->total == 0 || pf_prod_output_verified(p);
}

/* --stay: keep answering peers (the job is finished) and serving metrics until stopped. */
static void stay_up(prod *p)
{
    pf_err ce = {{0}};
    if (pf_jobstore_commit(p->js, &ce))   /* the finished job is on disk before it is announced */
        pf_error(LOG, "%s", ce.msg);
    pf_prod_send_heartbeats(p, 1);
    pf_metric_set(p->m.complete, 1);
    pf_info(LOG, "job complete: %lld items, %lld done, %lld failed, %.1f s; staying up (--stay) until "
            "SIGTERM", (long long)p->total, (long long)p->done, (long long)p->failed, pf_now() - p->t0);
    pf_err re = {{0}};
    if (p->o->report && pf_prod_write_report(p, 1, &re))
        pf_error(LOG, "%s", re.msg);
}

/* Tell everyone the job is complete (workers started with --exit-when-done leave) for FINISH_WINDOW
 * seconds, heartbeating every 0.1 s. A worker that starts while the job ends says hello during this
 * window (ZeroMQ retries a connect every 0.1 s): it is welcomed and hears that the job is complete too,
 * instead of waiting for a producer that is gone. Everything else received meanwhile is dropped. */
#define FINISH_WINDOW 0.5
static void say_finished(prod *p)
{
    double start = pf_now(), last_hb = 0;
    for (double now = start; now - start < FINISH_WINDOW; now = pf_now()) {
        if (now - last_hb >= 0.1) {
            pf_prod_send_heartbeats(p, 1);
            last_hb = now;
        }
        zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 20) < 0 && errno == ETERM)
            return;
        recv_ctx c = {p, now, 0};
        if (pf_wire_drain(p->sock, 1, &p->o->lim, 100, LOG, NULL, on_late_hello, &c) == -2)
            return;
        if (c.hellos)
            last_hb = 0; /* the newcomer hears "complete" right after its welcome */
    }
}

/* The job is complete: 0. */
static int finished(prod *p)
{
    say_finished(p);
    pf_info(LOG, "job complete: %lld items, %lld done, %lld failed, %.1f s", (long long)p->total,
            (long long)p->done, (long long)p->failed, pf_now() - p->t0);
    pf_metric_set(p->m.complete, 1);
    return 0;
}

/* Stopped before the job was complete: 1. */
static int stopped(prod *p)
{
    pf_info(LOG, "stopped: %lld of %lld items finished; rerun with --db %s to resume",
            (long long)(p->done + p->failed), (long long)p->total, p->o->db);
    return 1;
}

static void prod_free(prod *p)
{
    if (pf_prod_feed_stop(p->feed) == 0)   /* before the scan it walks; a thread left behind keeps it */
        pf_scan_close(p->scan);
    pf_jobstore_close(p->js);
    while (p->n_fl)
        pf_prod_flight_remove(p, p->fl[p->n_fl - 1]);
    free(p->fl);
    pending *e;
    while ((e = pf_prod_queue_pop(p)))
        free(e);
    pf_ring_free(&p->raw);
    pf_prod_delayed_free(p);
    pf_ring_free(&p->ready);
    pf_prod_picked_free(p);
    pf_prod_notes_free(p);
    free(p->peers);
    free(p->prompt);
    pf_prod_tasks_free(p);
    pf_prod_archive_free(p);
    pf_prod_scan_stash_free(p);
}

/* The end of a run that returns RC: final counts, gauges and the job report (unless setup failed), then
 * close everything. */
static void close_run(prod *p, void *ctx, int rc, pf_job_stats *stats)
{
    const pf_producer_params *o = p->o;
    /* a walk cut short: its thread is joined before its counters are read (one left behind keeps its scan) */
    if (pf_prod_feed_stop(p->feed))
        p->scan = NULL;
    p->feed = NULL;
    if (stats) {
        stats->total = p->total;
        stats->done = p->done;
        stats->failed = p->failed;
        stats->seconds = pf_now() - p->t0;
        stats->hidden_skipped = (int64_t)pf_scan_hidden_skipped(p->scan);
    }
    pf_progress_finish(&p->prog, p->total, p->done, p->failed);   /* no-op if done; ends the bar on errors */
    pf_prod_update_gauges(p, pf_now());
    if (o->report && p->js && rc >= 0) {
        pf_err re = {{0}};
        if (pf_prod_write_report(p, rc == 0, &re))
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
    prod_free(p);
}

int pf_producer_run(const pf_producer_params *o, pf_job_stats *stats, pf_err *err)
{
    prod P = {0}, *p = &P;
    p->o = o;
    p->t0 = pf_now();
    p->t0_unix = pf_prod_unix_now();
    pf_refusals_init(&p->refused, LOG);
    pf_prod_metrics_init(p);
    pf_health_register("producer", 60);
    int rc = -1;
    void *ctx = o->zctx ? o->zctx : zmq_ctx_new();
    if (!ctx)
        return pf_errf(err, "zmq_ctx_new failed");
    make_instance(p);
    if (open_job(p, err) || open_socket(p, ctx, err))
        goto out;
    pf_health_ready("producer", 1);
    pf_info(LOG, "job: task '%s', image size %d, bound %s (instance %s)", p->prompt, p->image_size, o->bind,
            p->instance);
    pf_progress_init(&p->prog, o->progress, o->progress_interval, "producer");
    double last_hb = 0;
    int complete = 0;
    while (!pf_control_stopping(&o->ctl)) {
        zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLIN, 0};
        /* Files found and not in the job store yet: poll without waiting once their chunk is due (paced while
         * workers are connected, pf_prod_scan_some), inserting them is work. While the scan thread walks with
         * nothing found yet, look again every few ms. A poll that waited and heard nothing: the loop is idle. */
        long wait_ms = !p->scanning ? 50 : pf_prod_scan_wait_ms(p, pf_now());
        int ev = zmq_poll(&it, 1, wait_ms);
        if (ev < 0 && errno == ETERM)
            break;
        p->scan_idle = ev == 0 && wait_ms > 0;
        double now = pf_now();
        pf_health_tick("producer");
        if (pf_control_reload(&o->ctl))
            reload(p);
        /* at most 1000 messages per iteration, so that the scan, leases and dispatch keep running */
        if (pf_wire_drain(p->sock, 1, &o->lim, 1000, LOG, NULL, on_message, &(recv_ctx){p, now, 0}) == -2)
            break;
        if (p->scanning && pf_prod_scan_some(p, 0.05, err))
            goto out;
        pf_prod_refill(p);
        pf_prod_expire(p, now);
        if (pf_prod_sink_alive(p)) {   /* no sink, no new work: its records would have nowhere to go */
            pf_prod_dispatch_pre(p, now);
            pf_prod_dispatch_inf(p, now);
            pf_prod_send_picked(p, now);   /* the turn's lease notes to the sinks, then its items */
            pf_prod_flush_sink_queue(p, now);
        }
        if (pf_prod_commit_due(p, err))
            goto out;
        if (now - last_hb >= o->hb_interval) {
            pf_prod_send_heartbeats(p, complete);
            last_hb = now;
        }
        {
            int quarantined = 0;
            int pre = pf_prod_count_working(p, ROLE_PRE, &quarantined);
            int inf = pf_prod_count_working(p, ROLE_INF, &quarantined);
            pf_progress_update(&p->prog, p->total, p->done, p->failed, p->done - p->at_start_done, pre, inf,
                               quarantined, pf_prod_sink_alive(p), p->scanning);
        }
        if (now - p->last_gauges >= 0.1) {
            pf_prod_update_gauges(p, now);
            pf_refusals_tick(&p->refused);
        }
        if (!complete && job_finished(p)) {
            complete = 1;
            if (!o->stay)
                break;
            stay_up(p);
            last_hb = now;
        }
    }
    if (pf_jobstore_commit(p->js, err))
        goto out;
    pf_progress_finish(&p->prog, p->total, p->done, p->failed);
    rc = complete ? finished(p) : stopped(p);
out:
    close_run(p, ctx, rc, stats);
    return rc;
}
