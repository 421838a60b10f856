/* producer_internal.h - the producer's state, shared by pipeline/producer*.c only (the API is producer.h).
 *
 * One thread owns everything here: the ROUTER socket, the job store and the items in flight. An item's life:
 *
 *   job store (queued) --refill--> raw queue --dispatch--> FL_PRE (leased to a preprocess worker)
 *     --tensor--> FL_READY (ready queue, tensor in memory)
 *     --dispatch--> FL_INF (leased to an inference worker)
 *     --done--> FL_ACK (record on its way to the sink)
 *     --ack--> done or failed in the job store; forgotten.
 *
 * A lost lease (worker gone, deadline, nack) puts the item back (FL_READY keeps its tensor) or, after
 * max_attempts, turns it into a producer-made error record (FL_SINKQ, sent to the sink, then FL_ACK).
 *
 * Files: producer.c (run loop, setup, teardown), producer_items.c (items in flight, the two queues),
 * producer_job.c (job store, task settings, input scan), producer_peers.c (who is connected, what they
 * say), producer_dispatch.c (handing items out against credit), producer_leases.c (leases lost, expired,
 * given back, fulfilled), producer_records.c (records and the sink's acknowledgements), producer_stats.c
 * (metrics and the job report).
 */
#ifndef PF_PIPELINE_PRODUCER_INTERNAL_H
#define PF_PIPELINE_PRODUCER_INTERNAL_H

#include <stdint.h>
#include <string.h>
#include <time.h>

#include "base/metrics.h"
#include "base/ring.h"
#include "pipeline/jobstore.h"
#include "pipeline/keyset.h"
#include "pipeline/producer.h"
#include "pipeline/progress.h"
#include "proto/wire.h"

#define LOG "producer"

enum { ROLE_PRE = 1, ROLE_INF, ROLE_SINK };
enum { FL_PRE = 1, FL_READY, FL_INF, FL_ACK, FL_SINKQ };

/* A worker or sink on the ROUTER socket, known by its routing id. */
typedef struct peer {
    int used;
    uint8_t ident[256];
    size_t ident_len;
    char name[128];
    int role;
    int64_t credit;
    double last_seen;
} peer;

/* An item held in memory: from its first hand-out in this run to the sink's acknowledgement. */
typedef struct flight {
    int64_t id;
    char key[PF_KEY_LEN + 1];
    char *path;
    int attempts;
    int stage;           /* FL_* */
    int peer;            /* lease holder (index into peers), -1 none */
    double deadline;
    uint8_t *rgb;        /* READY / INF: the preprocessed image */
    int size, width, height;
    char *w_pre;
    pf_timings tm;
    int started;         /* the lease holder reported it started working on it */
    double t_lease;      /* when the current lease began (metrics) */
    int is_error;        /* the record is a producer-made error record */
    char *err_stage, *err_msg;
} flight;

/* An item in the raw queue, not handed out yet. */
typedef struct pending {
    int64_t id;
    int attempts;
    char path[];
} pending;

typedef struct prod {
    const pf_producer_opts *o;
    pf_jobstore *js;
    void *sock;
    char instance[40];
    pf_task task;           /* the job's task (strings owned below) */
    char *prompt;
    int image_size;
    uint64_t settings;
    peer *peers;
    int n_peers;
    flight **fl;
    size_t n_fl, cap_fl;
    pf_ring raw;            /* pending *: items to preprocess (retries in front) */
    pf_ring ready;          /* flight *: preprocessed items, FIFO (retries in front) */
    int64_t cursor;         /* last item id loaded from the job store */
    int db_exhausted;       /* no queued items with id > cursor (until the scan adds more) */
    pf_scan *scan;
    int scanning;
    pf_keyset finished;     /* ids finished in this run (to skip stale pending entries) */
    int64_t total, done, failed;
    int64_t at_start_done;
    int out_checked;        /* a sink reported its output's size (producer_reconcile.c): the job may complete */
    int has_sink_records;   /* the sink's latest count of distinct records in its output (hello, ack) */
    int64_t sink_records;
    int redid_all;          /* the output held fewer records than finished items: all were redone once */
    double t0;
    pf_progress prog;
    int rr_pre, rr_inf;
    pf_zap *zap;
    double t0_unix;
    /* this run's statistics (metrics and the job report); index 0 preprocess, 1 inference */
    int64_t requeued[2], expired[2], handed_back[2], joined[4], lost[4];
    int64_t done_run, failed_run;
    pf_rate rate;
    double last_gauges;
    struct {
        pf_metric *items[6], *queue[2], *job_items, *leased[2], *retried[2], *expired[2], *handed_back[2];
        pf_metric *finished[2], *errors[3], *workers[4], *joined[4], *lost[4], *hb_age[4], *stage_s[2];
        pf_metric *ips, *complete, *scanning;
    } m;
} prod;

static inline int pf_prod_stage_index(int fl_stage) { return fl_stage == FL_INF ? 1 : 0; }

static inline int pf_prod_key_matches(const flight *f, const pf_msg *m)
{
    return m->key && strcmp(f->key, m->key) == 0;
}

/* Wall-clock time: lease deadlines in the job store and the report's timestamps. */
static inline double pf_prod_unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* producer_items.c: items in flight (tracked in memory while leased, ready or awaiting the sink's ack),
 * the raw queue (pending items, front = retry first) and the ready queue (preprocessed items, FIFO). */
int pf_prod_queue_push(prod *p, int64_t id, const char *path, int attempts, int front);
pending *pf_prod_queue_pop(prod *p);   /* NULL when empty; free() it */
int pf_prod_ready_push(prod *p, flight *f, int front);
flight *pf_prod_ready_pop(prod *p);
flight *pf_prod_flight_find(prod *p, int64_t id);
flight *pf_prod_flight_new(prod *p, int64_t id, const char *path, int attempts);
void pf_prod_flight_drop_tensor(flight *f);
void pf_prod_flight_remove(prod *p, flight *f);
size_t pf_prod_count_stage(const prod *p, int stage);

/* producer_job.c: the job store (transactions committed in groups), the job's task, the input scan. */
int pf_prod_tx(prod *p);
int pf_prod_commit_due(prod *p, pf_err *err);
void pf_prod_dbcheck(int rc, const pf_err *e);
int pf_prod_setup_job(prod *p, pf_err *err);
int pf_prod_setup_scan(prod *p, pf_err *err);
int pf_prod_scan_some(prod *p, double budget_s, pf_err *err);
void pf_prod_refill(prod *p);

/* producer_peers.c: connected workers and sinks, and what they send. */
int pf_prod_peer_find(prod *p, const uint8_t *ident, size_t len);
const char *pf_prod_role_name(int role);
int pf_prod_count_role(const prod *p, int role);
static inline int pf_prod_sink_alive(const prod *p) { return pf_prod_count_role(p, ROLE_SINK) > 0; }
int pf_prod_send_to(prod *p, int pi, pf_msg *m);
void pf_prod_send_heartbeats(prod *p, int finished);
void pf_prod_add_credit(prod *p, int pi, const pf_msg *m);
void pf_prod_handle(prod *p, pf_wire_in *in, double now);

/* producer_dispatch.c: hand raw items to preprocess workers, ready items to inference workers. */
void pf_prod_dispatch_pre(prod *p, double now);
void pf_prod_dispatch_inf(prod *p, double now);

/* producer_leases.c */
void pf_prod_lease_lost(prod *p, flight *f, int count_attempt, const char *why);
void pf_prod_peer_gone(prod *p, int pi, const char *why);
void pf_prod_expire(prod *p, double now);
void pf_prod_on_tensor(prod *p, int pi, pf_wire_in *in);
void pf_prod_on_nack(prod *p, int pi, pf_wire_in *in);

/* producer_records.c */
void pf_prod_make_error_record(prod *p, flight *f, const char *stage, const char *msg);
void pf_prod_on_done(prod *p, int pi, pf_wire_in *in, double now);
void pf_prod_on_ack(prod *p, pf_wire_in *in);
void pf_prod_flush_sink_queue(prod *p, double now);

/* producer_reconcile.c: a sink's hello reports its output's size; finished items beyond it are redone. */
void pf_prod_on_sink_output(prod *p, const pf_msg *m);
/* The job's records are all in the output, as far as the sink's reports tell: 1. 0 when no sink reported
 * yet, or when records are missing (every finished item was then sent back to be redone). */
int pf_prod_output_verified(prod *p);

/* producer_stats.c */
void pf_prod_metrics_init(prod *p);
void pf_prod_update_gauges(prod *p, double now);
int pf_prod_write_report(prod *p, int complete, pf_err *err);

#endif
