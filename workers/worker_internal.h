/* worker_internal.h - the worker runtime's state, shared by workers/worker*.c only (the API is worker.h).
 *
 * Two sides, one mutex between them. The main thread (worker.c, worker_messages.c) owns the sockets: it
 * takes items from the producer, queues them for the compute threads (`in`), and answers finished works
 * (`out`) to the sink and the producer. The compute threads (worker_compute.c) run the stage and wake the
 * main thread through an eventfd. The producer must learn which items a crash should be charged to, before
 * they are worked on: a batched stage's thread reports the items it takes (`started`) and waits until their
 * `start` was sent; a per-item stage's idle threads are counted (`idle`), and the main thread sends the
 * `start` of the items it hands them (`ready`), so that they wait for nothing.
 */
#ifndef PF_WORKERS_WORKER_INTERNAL_H
#define PF_WORKERS_WORKER_INTERNAL_H

#include <pthread.h>

#include "base/metrics.h"
#include "base/ring.h"
#include "proto/link.h"
#include "proto/wire.h"
#include "workers/worker.h"

typedef struct rt rt;

typedef struct compute {
    rt *r;
    void *inst;
    pthread_t th;
    int started;
} compute;

struct rt {
    const pf_worker_params *o;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_cond_t cv_ready;    /* per-item stages: `ready` got works */
    pf_ring in, out, started;   /* pf_work *: to compute, finished, begun (all under mu) */
    pf_ring ready;              /* per-item stages: started (their `start` sent), for the idle threads */
    int idle;                   /* per-item stages: compute threads waiting for a work in `ready` */
    int efd;
    int quit;        /* compute threads: exit */
    int fatal;       /* a batched step failed */
    char fatal_msg[PF_ERR_MAX];
    compute *cs;
    int n_cs;
    pf_metric *m_batch;
};

/* ---------- the main thread's state ---------- */

typedef struct wstate {
    const pf_worker_params *o;
    rt *r;
    void *prod, *sink;
    char name[128];
    char host[64];
    pf_link link;           /* to the producer: its instance, welcome, heartbeats, silence */
    int64_t hello_seq;      /* number of our latest hello: only the welcome that echoes it counts */
    int image_size;         /* the model's image size, announced at hello (0: the stage has none) */
    int peer_batch;         /* the producer's welcome said it takes start/done for several items at once */
    int peer_data_frames;   /* ... and tensors with a data frame (PROTOCOL.md, "Data frames") */
    int capacity;
    pf_work **held;         /* works received and not yet answered */
    size_t n_held, cap_held;
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

static inline const char *pf_worker_role(const pf_worker_params *o) { return o->ops->name; }

/* worker.c */
void pf_worker_work_free(pf_work *w);

/* worker_compute.c: start the compute threads (one per instance of a per-item stage, one for a batched
 * stage), and stop them (their stage instances destroyed unless the caller made them). */
int pf_worker_start_compute(rt *r, const pf_worker_params *o, pf_err *err);
void pf_worker_stop_compute(rt *r, const pf_worker_params *o);

/* worker_messages.c */
void pf_worker_send_prod(wstate *s, pf_msg *m);
void pf_worker_send_hello(wstate *s, double now);
void pf_worker_send_nack(wstate *s, const pf_msg *in, int handback, const char *why);
void pf_worker_held_remove(wstate *s, pf_work *w);
/* Send the start of every work a compute thread began, and the outcome of every finished one; then, for a
 * per-item stage, start queued works for the idle compute threads. */
void pf_worker_drain_outputs(wstate *s);
void pf_worker_on_producer_msg(wstate *s, pf_wire_in *in, double now);

#endif
