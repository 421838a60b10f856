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
#include "base/grow.h"
#include "base/log.h"
#include "workers/worker_internal.h"

/* M to the producer; with DATA (consumed, sent or not) as its data frame when not NULL. */
static void send_prod(wstate *s, pf_msg *m, zmq_msg_t *data)
{
    pf_err e = {{0}};
    m->name = s->name;
    if (!m->instance && s->link.instance[0])
        m->instance = s->link.instance;
    if (data ? pf_wire_send_data(s->prod, NULL, 0, m, data, &e) : pf_wire_send(s->prod, NULL, 0, m, &e)) {
        /* EAGAIN: not connected (producer down, or our key refused: the socket watch says which) */
        if (errno == EAGAIN)
            pf_debug(pf_worker_role(s->o), "to producer (%s): %s", pf_msg_type_name(m->type), e.msg);
        else
            pf_warn(pf_worker_role(s->o), "to producer (%s): %s", pf_msg_type_name(m->type), e.msg);
    }
}

void pf_worker_send_prod(wstate *s, pf_msg *m) { send_prod(s, m, NULL); }

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
    m.data_frames = !s->o->single_frames;   /* items with a data frame: their bytes are not copied into the map */
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

/* A preprocessed image goes back to the producer (which hands it to an inference worker). To a producer that
 * takes a data frame the image buffer itself is that frame (ZeroMQ frees it once sent): no copy into the map. */
static void send_tensor(wstate *s, pf_work *w, const pf_timings *tm)
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
    if (!s->peer_data_frames) {
        pf_worker_send_prod(s, &m);
        return;
    }
    zmq_msg_t data;
    pf_err e = {{0}};
    int bad = pf_wire_msg_own(&data, w->rgb, m.data_len, &e);
    w->rgb = NULL;   /* the frame's now (or freed) */
    m.data = NULL;
    if (bad)
        pf_warn(pf_worker_role(s->o), "to producer (tensor): %s", e.msg);
    else
        send_prod(s, &m, &data);
}

/* The `done`s of one drain, sent together once every record of the drain went to the sink: one message for
 * all of them when the producer takes batches (PROTOCOL.md, "Batched start and done"), else one each. The
 * strings point into the works, which are freed only after pf_worker_flush_dones. */
typedef struct batch {
    pf_item_ref *items;
    size_t n, cap;
} batch;

static int batch_add(batch *b, int64_t id, const char *key, const char *stage, const char *message)
{
    if (PF_GROW(b->items, b->cap, b->n, 1, 16))
        return -1;
    b->items[b->n++] = (pf_item_ref){id, key, stage, message};
    return 0;
}

/* Send the items of B as `start`s or `done`s (TYPE): one message when the producer takes batches and there
 * are several, else one message per item (an older producer, or a batch of one: the single form is the
 * smaller message). A `done` returns one credit per item. */
static void send_items(wstate *s, pf_msg_type type, const batch *b)
{
    int credit = type == PF_MSG_DONE && !s->stopping;
    if (s->peer_batch && b->n > 1) {
        pf_msg m;
        pf_msg_init(&m, type);
        m.items = b->items;
        m.n_items = b->n;
        m.credit = credit ? (int64_t)b->n : 0;
        pf_worker_send_prod(s, &m);
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        pf_msg m;
        pf_msg_init(&m, type);
        m.id = b->items[i].id;
        m.key = b->items[i].key;
        m.stage = b->items[i].stage;
        m.message = b->items[i].message;
        m.credit = credit;
        pf_worker_send_prod(s, &m);
    }
}

/* The item's final record (its result, or an error record) goes to the sink; its `done` joins DONES. */
static void send_record(wstate *s, const pf_work *w, const pf_timings *tm, int inference, batch *dones)
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
    /* the reason, for the job store and the job report */
    int is_err = r.type == PF_MSG_ERROR;
    if (batch_add(dones, in->id, in->key, is_err ? r.stage : NULL, is_err ? r.message : NULL)) {
        /* out of memory for the list: this one goes alone, now (its record is sent already) */
        batch one = {&(pf_item_ref){in->id, in->key, is_err ? r.stage : NULL, is_err ? r.message : NULL}, 1, 1};
        send_items(s, PF_MSG_DONE, &one);
    }
}

/* A finished work: send its outcome where it belongs and return its credit. */
static void answer(wstate *s, pf_work *w, batch *dones)
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
        send_record(s, w, &tm, inference, dones);
    }
}

/* The starts of one drain: one message (or one per item, see send_items), then every compute thread waiting
 * for one of them is told, with one broadcast. */
static void send_starts(wstate *s, pf_ring *started)
{
    rt *r = s->r;
    batch b = {0};
    pf_work *w;
    size_t n = started->n;
    pf_work **ws = malloc((n ? n : 1) * sizeof *ws);
    size_t k = 0;
    while ((w = pf_ring_pop(started))) {
        if (ws && batch_add(&b, w->in.id, w->in.key, NULL, NULL) == 0) {
            ws[k++] = w;
            continue;
        }
        /* out of memory for the lists: this start goes alone */
        batch one = {&(pf_item_ref){w->in.id, w->in.key, NULL, NULL}, 1, 1};
        send_items(s, PF_MSG_START, &one);
        pthread_mutex_lock(&r->mu);
        w->start_sent_ = 1;
        pthread_mutex_unlock(&r->mu);
    }
    send_items(s, PF_MSG_START, &b);
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < k; i++)
        ws[i]->start_sent_ = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    free(ws);
    free(b.items);
}

/* A per-item stage: take from the queue as many works as there are idle compute threads without one, send
 * their `start`s (one message when the producer takes batches), then hand them over. The `start` goes before
 * the work reaches a thread, as a batched stage's does before it is submitted: a crash while working on it is
 * charged to it. Works stay queued (no `start`) while every thread is busy. */
static void start_for_idle(wstate *s)
{
    rt *r = s->r;
    pthread_mutex_lock(&r->mu);
    size_t want = r->idle > (int)r->ready.n ? (size_t)(r->idle - (int)r->ready.n) : 0;
    if (want > r->in.n)
        want = r->in.n;
    pf_work **ws = want ? malloc(want * sizeof *ws) : NULL;
    batch b = {0};
    if (ws)
        b.items = malloc(want * sizeof *b.items);
    if (want && (!ws || !b.items)) {
        /* they stay queued: the next turn (a heartbeat at the latest) tries again */
        pthread_mutex_unlock(&r->mu);
        pf_error("worker", "out of memory starting %zu items", want);
        free(ws);
        free(b.items);
        return;
    }
    b.cap = want;
    for (size_t i = 0; i < want; i++) {
        ws[i] = pf_ring_pop(&r->in);
        b.items[b.n++] = (pf_item_ref){ws[i]->in.id, ws[i]->in.key, NULL, NULL};
    }
    pthread_mutex_unlock(&r->mu);
    if (!want)
        return;
    send_items(s, PF_MSG_START, &b);
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < want; i++) {
        ws[i]->start_sent_ = 1;
        if (pf_ring_push(&r->ready, ws[i]))
            pf_error("worker", "out of memory handing item %lld to a compute thread", (long long)ws[i]->in.id);
    }
    pthread_cond_broadcast(&r->cv_ready);
    pthread_mutex_unlock(&r->mu);
    free(ws);
    free(b.items);
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
    if (started.n)
        send_starts(s, &started);
    /* Records first, then the `done`s (in one message when the producer takes batches): a `done` still
     * follows its record, and the works stay alive until their `done` is sent (its strings are theirs). */
    batch dones = {0};
    pf_work *w;
    size_t n_out = out.n, k = 0;
    pf_work **finished = malloc((n_out ? n_out : 1) * sizeof *finished);
    while ((w = pf_ring_pop(&out))) {
        answer(s, w, &dones);
        pf_worker_held_remove(s, w);
        if (finished)
            finished[k++] = w;
        else {   /* out of memory for the list: its `done` (if any) goes now, before the work is freed */
            send_items(s, PF_MSG_DONE, &dones);
            dones.n = 0;
            pf_worker_work_free(w);
        }
    }
    send_items(s, PF_MSG_DONE, &dones);
    for (size_t i = 0; i < k; i++)
        pf_worker_work_free(finished[i]);
    free(finished);
    free(dones.items);
    pf_ring_free(&started);
    pf_ring_free(&out);
    if (s->o->ops->process)
        start_for_idle(s);
}

/* Make IN's message and frames the work's own without copying them (an inference item is a 150 KB tensor at
 * 224 px): the decoded fields point into the frames, whose data stays where it is when a frame moves (a
 * message this size is never stored inside the zmq_msg_t itself; checked for the map, whose `data` may point
 * into it). A data frame is all of `data`: a small one that does live inside its zmq_msg_t is pointed at
 * again where it moved. 0, or -1 with IN untouched. */
static int take_frame(pf_work *w, pf_wire_in *in)
{
    if (!in->frame_open)
        return -1;
    zmq_msg_t *f = malloc(2 * sizeof *f);
    if (!f || zmq_msg_init(&f[0]) != 0 || zmq_msg_init(&f[1]) != 0) {
        free(f);
        return -1;
    }
    const void *at = zmq_msg_data(&in->frame);
    if (zmq_msg_move(&f[0], &in->frame) != 0 || zmq_msg_data(&f[0]) != at) {
        if (zmq_msg_data(&f[0]) != at)   /* moved after all: move it back, the copy below decodes it again */
            zmq_msg_move(&in->frame, &f[0]);
        zmq_msg_close(&f[0]);
        free(f);
        return -1;
    }
    if (in->data_open) {
        zmq_msg_move(&f[1], &in->data);   /* cannot fail: both are valid messages */
        in->msg.data = zmq_msg_size(&f[1]) ? zmq_msg_data(&f[1]) : (const uint8_t *)"";
    }
    w->frame_ = f;
    w->in = in->msg;   /* its arena, ids and pointers into the frames are the work's now */
    pf_msg_init(&in->msg, PF_MSG_NONE);
    return 0;
}

/* The fallback: own a copy of the frames (the map, then the data frame if any, in one buffer) and re-decode
 * from it, so every pointer of w->in lives with the work. 0, or -1 (out of memory). */
static int copy_frame(wstate *s, pf_work *w, pf_wire_in *in)
{
    size_t len = zmq_msg_size(&in->frame), dlen = in->data_open ? zmq_msg_size(&in->data) : 0;
    w->buf_ = malloc(len + dlen + 1);
    pf_err e = {{0}};
    if (!w->buf_)
        return -1;
    memcpy(w->buf_, zmq_msg_data(&in->frame), len);
    if (dlen)
        memcpy(w->buf_ + len, zmq_msg_data(&in->data), dlen);
    w->buf_len_ = len + dlen;
    if (pf_msg_decode_frames(w->buf_, len, in->data_open ? w->buf_ + len : NULL, dlen, &s->o->lim, &w->in,
                             &e)) {   /* cannot fail: same bytes */
        pf_error(pf_worker_role(s->o), "item %lld: %s", (long long)in->msg.id, e.msg);
        return -1;
    }
    return 0;
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
    if (take_frame(w, in) && copy_frame(s, w, in)) {
        pf_worker_work_free(w);
        pf_worker_send_nack(s, m, 1, "out of memory");
        return;
    }
    /* from here on the message is w->in (take_frame may have emptied IN's) */
    w->t_received = pf_now();
    if (held_add(s, w)) {
        pf_worker_send_nack(s, &w->in, 1, "out of memory");
        pf_worker_work_free(w);
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
        s->peer_batch = m->batch;   /* each welcome says it again: a restarted producer may be older */
        s->peer_data_frames = m->data_frames && !s->o->single_frames;
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
