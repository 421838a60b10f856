/* worker_compute.c - the compute threads: a per-item stage runs on `threads` threads (one stage instance
 * each, handed works already started by the main thread), a batched stage on one thread that admits new
 * items between steps (continuous batching) and, when idle, waits up to --max-delay-ms for a burst of items
 * to start together. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "base/file.h"
#include "base/log.h"
#include "workers/worker_internal.h"

static void wake_main(rt *r)
{
    uint64_t one = 1;
    ssize_t n = write(r->efd, &one, sizeof one);
    (void)n;
}

/* Now + MS milliseconds on CLOCK_REALTIME, the clock of pthread_cond_timedwait. */
static struct timespec deadline_after_ms(long ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    long ns = dl.tv_nsec + ms * 1000000L;
    dl.tv_sec += ns / 1000000000L;
    dl.tv_nsec = ns % 1000000000L;
    return dl;
}

/* Tell the main thread that the N items of WS left the queue for a compute thread: the producer then knows
 * which items were being worked on if this worker dies (only those are charged an attempt). A batch's items
 * are told together: one wake-up of the main thread, one `start` message, one wait. */
static void started_works(rt *r, pf_work **ws, size_t n)
{
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < n; i++)
        pf_ring_push(&r->started, ws[i]);
    wake_main(r);
    /* Wait (briefly) until the main thread has sent the starts: if one of these items crashes the process,
     * the producer should know it was among them. */
    struct timespec dl = deadline_after_ms(200);
    for (size_t i = 0; i < n; i++)
        while (!ws[i]->start_sent_ && !r->quit)
            if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) == ETIMEDOUT)
                goto out;
out:
    pthread_mutex_unlock(&r->mu);
}

/* N finished works to the main thread, with one wake-up. */
static void finish_works(rt *r, pf_work **ws, size_t n)
{
    double now = pf_now();
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < n; i++) {
        ws[i]->t_end = now;
        if (pf_ring_push(&r->out, ws[i]))
            pf_error("worker", "out of memory queueing a finished item (id %lld)", (long long)ws[i]->in.id);
    }
    pthread_mutex_unlock(&r->mu);
    wake_main(r);
}

static void finish_work(rt *r, pf_work *w) { finish_works(r, &w, 1); }

/* A per-item stage's thread. It never waits for its own `start`: it waits idle (counted in r->idle) until
 * the main thread hands it a work whose `start` is sent (r->ready). A finished work and the thread being idle
 * again are told in one critical section with one wake-up, so that the main thread sends the output and
 * starts the next work in the same turn. */
static void *item_thread(void *arg)
{
    compute *c = arg;
    rt *r = c->r;
    pf_work *done = NULL;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        if (done) {
            done->t_end = pf_now();
            if (pf_ring_push(&r->out, done))
                pf_error("worker", "out of memory queueing a finished item (id %lld)", (long long)done->in.id);
        }
        r->idle++;
        if (done || r->in.n > 0)   /* an output to send, or queued works to start for us */
            wake_main(r);
        done = NULL;
        while (!r->quit && r->ready.n == 0)
            pthread_cond_wait(&r->cv_ready, &r->mu);
        r->idle--;
        if (r->quit)
            break;
        pf_work *w = pf_ring_pop(&r->ready);
        pthread_mutex_unlock(&r->mu);
        w->t_start = pf_now();
        r->o->ops->process(c->inst, w);
        done = w;
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* A failed batched step is fatal for the worker: the main thread hands its items back and exits. */
static void set_fatal(rt *r, const char *msg)
{
    pthread_mutex_lock(&r->mu);
    r->fatal = 1;
    snprintf(r->fatal_msg, sizeof r->fatal_msg, "%s", msg);
    pthread_mutex_unlock(&r->mu);
    wake_main(r);
}

/* Wait until there is work (items queued, or ACTIVE sequences to advance), then take as many queued items
 * as the batch has room for into TAKE. Returns how many, or -1 when the worker quits. */
static long take_items(rt *r, size_t active, size_t max_batch, pf_work **take)
{
    pthread_mutex_lock(&r->mu);
    while (!r->quit && r->in.n == 0 && active == 0)
        pthread_cond_wait(&r->cv, &r->mu);
    if (r->quit) {
        pthread_mutex_unlock(&r->mu);
        return -1;
    }
    /* Dynamic batching: when idle, give a burst of items max_delay_ms to arrive together. */
    if (active == 0 && r->in.n < max_batch && r->o->max_delay_ms > 0) {
        struct timespec dl = deadline_after_ms(r->o->max_delay_ms);
        while (!r->quit && r->in.n < max_batch)
            if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) == ETIMEDOUT)
                break;
    }
    size_t k = 0;
    while (active + k < max_batch && r->in.n > 0)
        take[k++] = pf_ring_pop(&r->in);
    pthread_mutex_unlock(&r->mu);
    return (long)k;
}

/* Continuous batching on one thread: new items join between steps, finished ones leave after each. */
static void *batch_thread(void *arg)
{
    compute *c = arg;
    rt *r = c->r;
    const pf_stage_ops *ops = r->o->ops;
    size_t max_batch = r->o->max_batch > 0 ? (size_t)r->o->max_batch : 1;
    pf_work **take = calloc(max_batch, sizeof *take);
    if (!take) {
        set_fatal(r, "out of memory");
        return NULL;
    }
    for (;;) {
        long k = take_items(r, ops->active(c->inst), max_batch, take);
        if (k < 0)
            break;
        double t = pf_now();
        for (long i = 0; i < k; i++)
            take[i]->t_start = t;
        if (k > 0)
            started_works(r, take, (size_t)k);
        for (long i = 0; i < k; i++) {
            pf_err e = {{0}};
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
            set_fatal(r, e.msg);
            break;
        }
        if (n_done)
            finish_works(r, done, n_done);
    }
    free(take);
    return NULL;
}

int pf_worker_start_compute(rt *r, const pf_worker_params *o, pf_err *err)
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

void pf_worker_stop_compute(rt *r, const pf_worker_params *o)
{
    pthread_mutex_lock(&r->mu);
    r->quit = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_cond_broadcast(&r->cv_ready);
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
