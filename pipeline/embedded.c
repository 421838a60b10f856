#include "pipeline/embedded.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "base/log.h"
#include "pipeline/outfile.h"
#include "workers/worker.h"

/* The runner waits on this for any role thread to end (not just the producer's): a sink that cannot write,
 * a worker that cannot start, must stop the run at once, not after the next SIGTERM. */
typedef struct ended_signal {
    pthread_mutex_t mu;
    pthread_cond_t cv;
} ended_signal;

typedef struct role_thread {
    pthread_t th;
    int started;
    int ended;     /* under sig->mu */
    int rc;
    pf_err err;
    void *opts;
    int kind;   /* 0 producer, 1 sink, 2 worker */
    const char *name;
    pf_job_stats *stats;
    ended_signal *sig;
} role_thread;

static void *role_main(void *arg)
{
    role_thread *t = arg;
    if (t->kind == 0)
        t->rc = pf_producer_run(t->opts, t->stats, &t->err);
    else if (t->kind == 1)
        t->rc = pf_sink_run(t->opts, &t->err);
    else
        t->rc = pf_worker_run(t->opts, &t->err);
    pthread_mutex_lock(&t->sig->mu);
    t->ended = 1;
    pthread_cond_signal(&t->sig->cv);
    pthread_mutex_unlock(&t->sig->mu);
    return NULL;
}

static int start(role_thread *t, int kind, const char *name, void *opts, ended_signal *sig, pf_err *err)
{
    t->kind = kind;
    t->name = name;
    t->opts = opts;
    t->sig = sig;
    if (pthread_create(&t->th, NULL, role_main, t) != 0)
        return pf_errf(err, "cannot start a thread");
    t->started = 1;
    return 0;
}

/* Before the model loads (seconds to minutes): the output can be written, and neither it nor the job store
 * is held by another run. The real locks are taken once the model is loaded (take_locks). */
static int preflight(const pf_embedded_params *o, pf_err *err)
{
    if (pf_outfile_check(o->sink.out, err) || pf_outfile_probe_lock(o->sink.out, err))
        return -1;
    if (!o->producer.db)
        return 0;
    /* the same file as both would have the sink read SQLite pages as records, and append lines to them */
    if (pf_outfile_same(o->sink.out, o->producer.db))
        return pf_errf(err, "%s: the output and the job store (%s) are the same file", o->sink.out, o->producer.db);
    return pf_dbfile_check(o->producer.db, err) || pf_dblock_probe(o->producer.db, err) ? -1 : 0;
}

/* The output's lock, then the job store's, taken here by one thread before any role starts and kept until
 * they have all ended; the sink and the producer work on copies (out_fd, db_lock_fd). Taken by the sink and
 * producer threads each on its own, as before, two runs started together could each get one of the two and
 * both be refused, and a run could be seen holding its output while its job store was still free. */
static int take_locks(const pf_embedded_params *o, int *out_fd, int *db_fd, pf_err *err)
{
    *db_fd = -1;
    if (pf_outfile_open(o->sink.out, out_fd, err))
        return -1;
    if (o->producer.db && pf_dblock_acquire(o->producer.db, db_fd, err)) {
        close(*out_fd);
        *out_fd = -1;
        return -1;
    }
    return 0;
}

/* Wait until the producer ends, or until another role ends first (a failure: the producer is stopped and
 * FAILED names the role), passing a stop request (*o->stop) on to the producer meanwhile. */
static void wait_roles(role_thread *rt, int n, ended_signal *sig, volatile sig_atomic_t *outer_stop,
                       volatile sig_atomic_t *prod_stop, role_thread **failed)
{
    pthread_mutex_lock(&sig->mu);
    for (;;) {
        if (rt[0].ended)
            break;
        for (int i = 1; i < n && !*failed; i++)
            if (rt[i].started && rt[i].ended) {
                *failed = &rt[i];
                *prod_stop = 1;
            }
        if (outer_stop && *outer_stop)
            *prod_stop = 1;
        /* the stop flag is set from a signal handler, which cannot signal the condition: poll it */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L)
            ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        int r = pthread_cond_timedwait(&sig->cv, &sig->mu, &ts);
        if (r != 0 && r != ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&sig->mu);
}

int pf_embedded_run(pf_embedded_params *o, pf_job_stats *stats, pf_err *err)
{
    if (preflight(o, err))
        return -1;
    void *ctx = zmq_ctx_new();
    if (!ctx)
        return pf_errf(err, "zmq_ctx_new failed");
    char prod_ep[64], sink_ep[64];
    snprintf(prod_ep, sizeof prod_ep, "inproc://paliflow-producer-%d", (int)getpid());
    snprintf(sink_ep, sizeof sink_ep, "inproc://paliflow-sink-%d", (int)getpid());
    volatile sig_atomic_t inner_stop = 0, prod_stop = 0;
    int rc = -1;
    role_thread rt[4];
    memset(rt, 0, sizeof rt);
    ended_signal sig = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};
    role_thread *failed = NULL;
    int out_fd = -1, db_fd = -1;

    /* The inference stage loads the model before anything starts: the job needs its image size. */
    void *inf_inst = o->inf_ops->create(o->inf_cfg, err);
    if (!inf_inst) {
        pf_err_prefix(err, "inference stage");
        zmq_ctx_term(ctx);
        return -1;
    }
    int model_size = o->inf_ops->image_size ? o->inf_ops->image_size(inf_inst) : 0;
    if (o->producer.image_size <= 0)
        o->producer.image_size = model_size;
    /* Every item would fail on this model: refused before anything starts. */
    if (model_size > 0 && o->producer.image_size != model_size) {
        pf_errf(err, "--image-size %d, but the model takes %d px images (leave --image-size out to use the "
                "model's)", o->producer.image_size, model_size);
        goto out;
    }
    if (o->producer.image_size <= 0) {
        pf_errf(err, "the image size is unknown (give --image-size)");
        goto out;
    }
    if (take_locks(o, &out_fd, &db_fd, err))
        goto out;

    pf_producer_params po = o->producer;
    po.bind = prod_ep;
    po.zctx = ctx;
    po.ctl.stop = &prod_stop;   /* *o->stop, or a role that failed (wait_roles) */
    po.db_lock_fd = db_fd;
    pf_sink_params so = o->sink;
    so.bind = sink_ep;
    so.producer = prod_ep;
    so.zctx = ctx;
    so.ctl.stop = &inner_stop;
    so.out_fd = out_fd;
    so.hb_interval = po.hb_interval;
    pf_worker_params pre, inf;
    pre = pf_worker_default_params();
    pre.producer = prod_ep;
    pre.sink = sink_ep;
    pre.ops = o->pre_ops;
    pre.stage_cfg = o->pre_cfg;
    pre.threads = o->pre_threads > 0 ? o->pre_threads : 1;
    pre.zctx = ctx;
    pre.ctl.stop = &inner_stop;
    pre.name = "embedded-preprocess";
    pre.hb_interval = po.hb_interval;
    pre.lim = po.lim;
    inf = pre;
    inf.ops = o->inf_ops;
    inf.stage_cfg = o->inf_cfg;
    inf.threads = 1;
    inf.max_batch = o->max_batch > 0 ? o->max_batch : 8;
    inf.max_delay_ms = o->max_delay_ms;
    inf.instances = &inf_inst;
    inf.n_instances = 1;
    inf.name = "embedded-inference";

    /* libzmq >= 4.0 lets inproc connects come before the bind, so the start order does not matter. */
    rt[0].stats = stats;
    if (start(&rt[0], 0, "producer", &po, &sig, err))
        goto join;
    if (start(&rt[1], 1, "sink", &so, &sig, err) || start(&rt[2], 2, "preprocess worker", &pre, &sig, err) ||
        start(&rt[3], 2, "inference worker", &inf, &sig, err)) {
        prod_stop = 1;
        goto join;
    }
    wait_roles(rt, 4, &sig, o->stop, &prod_stop, &failed);
join:
    inner_stop = 1;
    prod_stop = 1;
    for (int i = 0; i < 4; i++)
        if (rt[i].started)
            pthread_join(rt[i].th, NULL);
    /* The run's error: a thread that could not start (err already says), the producer's own, the role that
     * ended first and stopped the run, or a role that failed while stopping. The others are logged. */
    role_thread *why = NULL;
    int all_started = rt[0].started && rt[1].started && rt[2].started && rt[3].started;
    if (!all_started)
        rc = -1;
    else if (rt[0].rc < 0)
        why = &rt[0];
    else if (failed)
        why = failed;
    else
        for (int i = 1; i < 4 && !why; i++)
            if (rt[i].rc < 0)
                why = &rt[i];
    if (why) {
        rc = -1;
        pf_errf(err, "%s: %s", why->name, why->rc < 0 ? why->err.msg : "stopped before the job ended");
    } else if (all_started) {
        rc = rt[0].rc;
    }
    for (int i = 0; i < 4; i++)
        if (rt[i].started && &rt[i] != why && rt[i].rc < 0)
            pf_error("run", "%s: %s", rt[i].name, rt[i].err.msg);
out:
    /* after every role has ended: the locks go with the last copy of each */
    if (out_fd >= 0)
        close(out_fd);
    if (db_fd >= 0)
        close(db_fd);
    o->inf_ops->destroy(inf_inst);
    zmq_ctx_term(ctx);
    return rc;
}
