#include "pipeline/embedded.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "base/log.h"
#include "workers/worker.h"

typedef struct role_thread {
    pthread_t th;
    int started;
    int rc;
    pf_err err;
    void *opts;
    int kind;   /* 0 producer, 1 sink, 2 worker */
    pf_job_stats *stats;
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
    return NULL;
}

static int start(role_thread *t, int kind, void *opts, pf_err *err)
{
    t->kind = kind;
    t->opts = opts;
    if (pthread_create(&t->th, NULL, role_main, t) != 0)
        return pf_errf(err, "cannot start a thread");
    t->started = 1;
    return 0;
}

int pf_embedded_run(pf_embedded_opts *o, pf_job_stats *stats, pf_err *err)
{
    void *ctx = zmq_ctx_new();
    if (!ctx)
        return pf_errf(err, "zmq_ctx_new failed");
    char prod_ep[64], sink_ep[64];
    snprintf(prod_ep, sizeof prod_ep, "inproc://paliflow-producer-%d", (int)getpid());
    snprintf(sink_ep, sizeof sink_ep, "inproc://paliflow-sink-%d", (int)getpid());
    volatile sig_atomic_t inner_stop = 0;
    int rc = -1;
    role_thread rt[4];
    memset(rt, 0, sizeof rt);

    /* The inference stage loads the model before anything starts: the job needs its image size. */
    void *inf_inst = o->inf_ops->create(o->inf_cfg, err);
    if (!inf_inst) {
        pf_err_prefix(err, "inference stage");
        zmq_ctx_term(ctx);
        return -1;
    }
    if (o->producer.image_size <= 0 && o->inf_ops->image_size)
        o->producer.image_size = o->inf_ops->image_size(inf_inst);
    if (o->producer.image_size <= 0) {
        pf_errf(err, "the image size is unknown (give --image-size)");
        goto out;
    }

    pf_producer_opts po = o->producer;
    po.bind = prod_ep;
    po.zctx = ctx;
    po.ctl.stop = o->stop;
    pf_sink_opts so = o->sink;
    so.bind = sink_ep;
    so.producer = prod_ep;
    so.zctx = ctx;
    so.ctl.stop = &inner_stop;
    so.hb_interval = po.hb_interval;
    pf_worker_opts pre, inf;
    pf_worker_opts_defaults(&pre);
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
    if (start(&rt[0], 0, &po, err))
        goto join;
    if (start(&rt[1], 1, &so, err) || start(&rt[2], 2, &pre, err) || start(&rt[3], 2, &inf, err))
        goto join;
    pthread_join(rt[0].th, NULL);
    rt[0].started = 0;
    rc = rt[0].rc;
    if (rc < 0)
        pf_errf(err, "%s", rt[0].err.msg);
join:
    inner_stop = 1;
    for (int i = 0; i < 4; i++) {
        if (rt[i].started)
            pthread_join(rt[i].th, NULL);
        if (i > 0 && rt[i].started && rt[i].rc < 0) {
            pf_error("run", "%s", rt[i].err.msg);
            if (rc == 0)
                rc = -1, pf_errf(err, "%s", rt[i].err.msg);
        }
    }
out:
    o->inf_ops->destroy(inf_inst);
    zmq_ctx_term(ctx);
    return rc;
}
