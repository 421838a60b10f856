/* worker_messages.c - the worker's side of the conversation (PROTOCOL.md): hello, credit for free slots,
 * items taken in (or handed back), and each finished work answered where it belongs: a tensor to the
 * producer, a result or error record to the sink followed by `done`, or a `nack` for a retry. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "base/file.h"
#include "base/log.h"
#include "workers/worker_internal.h"

void pf_worker_send_prod(wstate *s, pf_msg *m)
{
    pf_err e = {{0}};
    m->name = s->name;
    if (!m->instance && s->link.instance[0])
        m->instance = s->link.instance;
    if (pf_wire_send(s->prod, NULL, 0, m, &e)) {
        /* EAGAIN: not connected (producer down, or our key refused: the socket watch says which) */
        if (errno == EAGAIN)
            pf_debug(pf_worker_role(s->o), "to producer (%s): %s", pf_msg_type_name(m->type), e.msg);
        else
            pf_warn(pf_worker_role(s->o), "to producer (%s): %s", pf_msg_type_name(m->type), e.msg);
    }
}

static void send_sink(wstate *s, pf_msg *m)
{
    pf_err e = {{0}};
    if (pf_wire_send(s->sink, NULL, 0, m, &e)) {
        /* While stopping (Ctrl-C), the sink may be gone first: nothing is lost (the producer marks an item
         * done only when the sink acknowledges its record, so it is redone on resume), and a user who
         * pressed Ctrl-C has nothing to act on. */
        pf_log(s->stopping && errno == EAGAIN ? PF_LOG_DEBUG : PF_LOG_WARN, pf_worker_role(s->o),
               "to sink (%s, item %lld): %s", pf_msg_type_name(m->type), (long long)m->id, e.msg);
    }
}

/* Sent directly, not through pf_worker_send_prod: a hello carries no producer instance, and a failed send is
 * only worth a debug line (the hello is repeated every heartbeat until a producer welcomes us). */
void pf_worker_send_hello(wstate *s, double now)
{
    pf_msg m;
    pf_msg_init(&m, PF_MSG_HELLO);
    m.role = pf_worker_role(s->o);
    m.host = s->host;
    m.pid = getpid();
    m.capacity = s->capacity;
    m.image_size = s->image_size;   /* the producer sends us only items of that size */
    m.hello_seq = ++s->hello_seq;
    m.instance = NULL;
    pf_err e = {{0}};
    m.name = s->name;
    if (pf_wire_send(s->prod, NULL, 0, &m, &e))
        pf_debug(pf_worker_role(s->o), "hello: %s", e.msg);
    pf_link_said_hello(&s->link, now);
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

void pf_worker_held_remove(wstate *s, pf_work *w)
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
    if (n <= 0 || !s->link.instance[0] || s->stopping)
        return;
    pf_msg m;
    pf_msg_init(&m, PF_MSG_CREDIT);
    m.credit = n;
    pf_worker_send_prod(s, &m);
}

static void send_nack(wstate *s, const pf_msg *in, int handback, int worker_fault, const char *why);

/* Tell the producer to take an item back. handback: not the item's fault (we are leaving); worker_fault: a
 * retry that is this worker's fault, not the item's (pf_work.worker_fault). */
void pf_worker_send_nack(wstate *s, const pf_msg *in, int handback, const char *why)
{
    send_nack(s, in, handback, 0, why);
}

static void send_nack(wstate *s, const pf_msg *in, int handback, int worker_fault, const char *why)
{
    pf_msg m;
    pf_msg_init(&m, PF_MSG_NACK);
    m.id = in->id;
    m.key = in->key;
    m.stage = pf_worker_role(s->o);
    m.message = why;
    m.handback = handback;
    m.worker_fault = worker_fault;
    m.credit = s->stopping ? 0 : 1;
    if (handback)
        pf_metric_add(s->m.handed_back, 1);
    pf_worker_send_prod(s, &m);
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
    m->meta = in->meta;
}

/* The item's timings so far plus this stage's. */
static pf_timings work_timings(const pf_work *w, int inference)
{
    pf_timings tm = w->in.timings;
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
    return tm;
}

static void count_work(wstate *s, const pf_work *w, int inference)
{
    pf_metric_add(s->m.items[w->status == PF_WORK_OK ? 0 : w->status == PF_WORK_FAILED ? 1 : 2], 1);
    pf_metric_observe(s->m.stage_s, w->t_end - w->t_start);
    pf_metric_observe(s->m.queue_s, w->t_start - w->t_received);
    s->n_items++;
    if (w->status == PF_WORK_OK && inference) {
        s->n_tokens += (int64_t)w->n_ids;
        pf_metric_add(s->m.tokens, (double)w->n_ids);
    }
}

/* A preprocessed image goes back to the producer (which hands it to an inference worker). */
static void send_tensor(wstate *s, const pf_work *w, const pf_timings *tm)
{
    pf_msg m;
    pf_msg_init(&m, PF_MSG_TENSOR);
    m.id = w->in.id;
    m.key = w->in.key;
    m.image_size = w->size;
    m.width = w->width;
    m.height = w->height;
    m.data = w->rgb;
    m.data_len = (size_t)w->size * (size_t)w->size * 3;
    m.timings = *tm;
    m.w_preprocess = s->name;
    m.content_key = w->content_key[0] ? w->content_key : NULL;   /* path-only: the producer never read the bytes */
    m.credit = s->stopping ? 0 : 1;
    pf_worker_send_prod(s, &m);
}

/* The item's final record (its result, or an error record) goes to the sink, then `done` to the producer. */
static void send_record(wstate *s, const pf_work *w, const pf_timings *tm, int inference)
{
    const pf_msg *in = &w->in;
    pf_msg r;
    if (w->status == PF_WORK_OK) {
        pf_msg_init(&r, PF_MSG_RESULT);
        r.text = w->text ? w->text : "";
        r.text_len = w->text ? w->text_len : 0;
        r.ids = w->ids;
        r.n_ids = w->n_ids;
        r.stopped_by_eos = w->stopped_by_eos;
        r.objects = w->objects;
        r.objects_len = w->objects_len;
    } else {
        pf_msg_init(&r, PF_MSG_ERROR);
        r.stage = pf_worker_role(s->o);
        r.message = w->message[0] ? w->message : "failed";
        /* the producer warns about it once for the job; here only for debugging a worker */
        pf_debug(pf_worker_role(s->o), "%s: %s", in->path, r.message);
    }
    r.width = in->width;
    r.height = in->height;
    fill_item_fields(&r, in);
    r.timings = *tm;
    r.w_preprocess = inference ? in->w_preprocess : s->name;
    r.w_inference = inference ? s->name : NULL;
    /* path-only: the key of the bytes, made where they were read (the preprocess worker), carried on */
    r.content_key = inference ? in->content_key : w->content_key[0] ? w->content_key : NULL;
    send_sink(s, &r);
    pf_msg d;
    pf_msg_init(&d, PF_MSG_DONE);
    d.id = in->id;
    d.key = in->key;
    d.credit = s->stopping ? 0 : 1;
    if (r.type == PF_MSG_ERROR) {   /* the reason, for the job store and the job report */
        d.stage = r.stage;
        d.message = r.message;
    }
    pf_worker_send_prod(s, &d);
}

/* A finished work: send its outcome where it belongs and return its credit. */
static void answer(wstate *s, pf_work *w)
{
    int inference = w->in.width > 0;   /* an inference item carries the preprocessed tensor */
    pf_timings tm = work_timings(w, inference);
    count_work(s, w, inference);
    if (w->status == PF_WORK_RETRY) {
        pf_warn(pf_worker_role(s->o), "%s: %s (handing it back to be retried%s)", w->in.path, w->message,
                w->worker_fault ? " elsewhere: the fault is this worker's" : "");
        send_nack(s, &w->in, 0, w->worker_fault, w->message);
    } else if (w->status == PF_WORK_OK && !inference) {
        send_tensor(s, w, &tm);
    } else {
        send_record(s, w, &tm, inference);
    }
}

void pf_worker_drain_outputs(wstate *s)
{
    /* Take both queues in one critical section: a compute thread queues a work's start before its output,
     * so every output taken here has its start taken here or earlier, and no start can refer to a work
     * freed below. */
    rt *r = s->r;
    pthread_mutex_lock(&r->mu);
    pf_ring started = r->started, out = r->out;
    memset(&r->started, 0, sizeof r->started);
    memset(&r->out, 0, sizeof r->out);
    pthread_mutex_unlock(&r->mu);
    pf_work *w;
    if (started.n) {
        while ((w = pf_ring_pop(&started))) {
            pf_msg m;
            pf_msg_init(&m, PF_MSG_START);
            m.id = w->in.id;
            m.key = w->in.key;
            pf_worker_send_prod(s, &m);
            pthread_mutex_lock(&r->mu);
            w->start_sent_ = 1;
            pthread_mutex_unlock(&r->mu);
        }
        pthread_mutex_lock(&r->mu);
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
    while ((w = pf_ring_pop(&out))) {
        answer(s, w);
        pf_worker_held_remove(s, w);
        pf_worker_work_free(w);
    }
    pf_ring_free(&started);
    pf_ring_free(&out);
}

static void on_item(wstate *s, pf_wire_in *in)
{
    pf_msg *m = &in->msg;
    if (s->stopping) {
        pf_worker_send_nack(s, m, 1, "worker is shutting down");
        return;
    }
    int want_inference = s->o->ops->process == NULL;   /* batched stages take tensors */
    if ((m->width > 0) != want_inference) {
        pf_worker_send_nack(s, m, 1,
                            want_inference ? "inference worker got a raw item" : "preprocess worker got a tensor");
        return;
    }
    pf_work *w = calloc(1, sizeof *w);
    if (!w) {
        pf_worker_send_nack(s, m, 1, "out of memory");
        return;
    }
    /* Own a copy of the frame and re-decode into it, so every pointer of w->in lives with the work. */
    size_t len = zmq_msg_size(&in->frame);
    w->buf_ = malloc(len ? len : 1);
    pf_err e = {{0}};
    if (!w->buf_) {
        free(w);
        pf_worker_send_nack(s, m, 1, "out of memory");
        return;
    }
    memcpy(w->buf_, zmq_msg_data(&in->frame), len);
    w->buf_len_ = len;
    if (pf_msg_decode(w->buf_, len, &s->o->lim, &w->in, &e)) {   /* cannot fail: same bytes */
        pf_worker_work_free(w);
        pf_worker_send_nack(s, m, 1, e.msg);
        return;
    }
    w->t_received = pf_now();
    if (held_add(s, w)) {
        pf_worker_work_free(w);
        pf_worker_send_nack(s, m, 1, "out of memory");
        return;
    }
    pthread_mutex_lock(&s->r->mu);
    int bad = pf_ring_push(&s->r->in, w);
    pthread_cond_broadcast(&s->r->cv);
    pthread_mutex_unlock(&s->r->mu);
    if (bad) {
        pf_worker_held_remove(s, w);
        pf_worker_send_nack(s, &w->in, 1, "out of memory");
        pf_worker_work_free(w);
    }
}

void pf_worker_on_producer_msg(wstate *s, pf_wire_in *in, double now)
{
    pf_msg *m = &in->msg;
    if (pf_link_heard(&s->link, now))
        pf_info(pf_worker_role(s->o), "producer is back");
    switch (m->type) {
    case PF_MSG_WELCOME: {
        /* Hellos queued while no producer listened are each welcomed: once welcomed, only the welcome of our
         * latest hello counts (one announcement of free slots, not one per queued hello). The first welcome
         * is taken whatever hello it answers: with a producer slower to answer than our hello interval,
         * waiting for the latest could go on for ever. A welcome without a number is an older producer's.
         * The producer caps our credit at our capacity anyway; this keeps the messages few. */
        if (s->link.welcomed && m->hello_seq > 0 && m->hello_seq != s->hello_seq) {
            pf_debug(pf_worker_role(s->o), "ignoring the welcome of hello %lld (the latest is %lld)",
                     (long long)m->hello_seq, (long long)s->hello_seq);
            break;
        }
        int was_welcomed = s->link.welcomed;
        if (pf_link_welcome(&s->link, m->instance) || !was_welcomed)
            pf_info(pf_worker_role(s->o), "joined producer %s as %s (%d free slots)", m->instance, s->name,
                    free_slots(s));
        send_credit(s, free_slots(s));
        break;
    }
    case PF_MSG_RESET:
    case PF_MSG_HB:
        if (pf_link_wants_hello(&s->link, m, now))
            pf_worker_send_hello(s, now);
        if (m->type == PF_MSG_HB && m->finished && !s->finished_seen) {
            s->finished_seen = 1;
            pf_info(pf_worker_role(s->o), "producer reports the job complete");
        }
        break;
    case PF_MSG_ITEM:
        on_item(s, in);
        break;
    default:
        pf_debug(pf_worker_role(s->o), "ignoring %s from the producer", pf_msg_type_name(m->type));
    }
}
