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
#include <sys/stat.h>
#include <time.h>

#include "base/metrics.h"
#include "base/ring.h"
#include "pipeline/jobstore.h"
#include "pipeline/producer.h"
#include "pipeline/progress.h"
#include "proto/refusal.h"
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
    char key[64];        /* CURVE key the peer was admitted with ("" without CURVE) */
    int leases;          /* a sink that checks records against our lease notes (said so in its hello) */
    int batch_notes;     /* ... and takes them in `notes` messages (producer_trust.c) */
    int data_frames;     /* a worker that takes items with a data frame (its hello said so; PROTOCOL.md) */
    /* Failure policy (producer_quarantine.c) */
    int64_t capacity;    /* items it holds at most (its hello): credit + leases never exceed it; 0 unknown */
    int image_size;      /* the model's image size it announced (inference workers); 0 none */
    int quarantined;     /* its failures are its own (no file, wrong model...): no more work */
    int64_t pid;         /* of its hello: another pid under the same name is a restarted worker (clean slate) */
    int strikes;         /* items it failed that then succeeded on another worker, less its own successes */
    int64_t failed_ids[32];   /* id + 1 of the latest items it failed (a ring; 0 empty): struck off when they
                                 succeed elsewhere (the item's flight may be gone meanwhile: a retry waits) */
    int failed_pos;
} peer;

/* A --path-only item's file as the producer's stat saw it when it handed the item out (set: 1). */
typedef struct file_seen {
    int set;
    int64_t dev, ino, size, mtime_ns, ctime_ns;
} file_seen;

/* An item held in memory: from its first hand-out in this run to the sink's acknowledgement. */
typedef struct flight {
    int64_t id;
    char key[PF_KEY_LEN + 1];
    char content_key[PF_KEY_LEN + 1];   /* --path-only: the bytes' key its preprocess worker made ("" none) */
    char *path;
    file_seen seen;      /* --path-only: its file at the latest hand-out (pf_prod_worker_fault) */
    int attempts;
    int stage;           /* FL_* */
    int peer;            /* lease holder (index into peers), -1 none */
    double deadline;
    uint8_t *rgb;        /* READY / INF: the preprocessed image, inside FRAME (the tensor message as received:
                            kept, not copied; 150 KB per item at 224 px) */
    zmq_msg_t frame;
    int has_frame;
    int size, width, height;
    char *w_pre;
    pf_timings tm;
    int started;         /* the lease holder reported it started working on it */
    double t_lease;      /* when the current lease began (metrics) */
    int is_error;        /* the record is a producer-made error record */
    char *err_stage, *err_msg;
    /* The worker whose record the sink may take for this item (told to the sink in a lease note): set on
     * each lease, kept after its `done` (the record may still be on its way), cleared when the lease ends
     * otherwise. */
    char *holder;        /* its routing id, printable (pf_wire_ident_str) */
    char holder_key[64];
    int holder_stage;    /* FL_PRE or FL_INF; 0: none */
    /* The item's own task (a manifest line's prompt and settings, or one of several --task): loaded from the
     * job store when it is first handed out in this run (pf_prod_flight_load_task); else the job's. */
    pf_task task;
    char *prompt;        /* owns task.prompt when the item has its own task */
    uint64_t settings;   /* pf_task_hash of the item's task: part of its key */
    char *meta;          /* JSON object for its record (manifest id, extra columns), or NULL */
} flight;

static inline file_seen pf_prod_file_seen(const struct stat *st)
{
    return (file_seen){.set = 1, .dev = (int64_t)st->st_dev, .ino = (int64_t)st->st_ino, .size = (int64_t)st->st_size,
                       .mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec,
                       .ctime_ns = (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec};
}

static inline int pf_prod_same_file(const file_seen *a, const file_seen *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime_ns == b->mtime_ns &&
           a->ctime_ns == b->ctime_ns;
}

/* A file the scan thread found (producer_scan.c): the path as found, its identity (pf_prod_canonical) and
 * size (-1: cannot be stat'ed; the item then becomes an error record when handed out). */
typedef struct pf_prod_scan_entry {
    char *ident;      /* in the same block, after path: one malloc per entry */
    int64_t size;
    char path[];
} pf_prod_scan_entry;
typedef struct pf_prod_feed pf_prod_feed;

/* An item in the raw queue, not handed out yet. */
typedef struct pending {
    int64_t id;
    int attempts;
    char path[];
} pending;

typedef struct prod {
    const pf_producer_params *o;
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
    pf_prod_feed *feed;     /* the thread walking SCAN (producer_scan.c); NULL before the first turn and after */
#define PF_PROD_STASH 64
    pf_prod_scan_entry *stash[PF_PROD_STASH];   /* entries taken from the feed, [stash_i, stash_n) not added yet */
    size_t stash_i, stash_n;
    int scanning;
    double scan_next;       /* while workers are connected, the next insert chunk waits until then (scan_some) */
    int scan_idle;          /* the loop's last poll waited and nothing came: a chunk now delays nothing */
    /* Items per file (issue 19): tasks[i] is the canonical task JSON of the i-th task every scanned file gets
     * ("" = the job's task, always first; then each further --task); the manifest, read after the scan. */
    char **tasks;
    size_t n_tasks;
    char *task_json;        /* the job's task, canonical (a manifest line with the same task stores "") */
    struct pf_manifest *manifest;
    int files_scanned;      /* the folder/list scan is over; the manifest is being read */
    struct pf_prod_arc *arc;   /* tar/zip shards: the one being listed, the dispatch's reader (producer_archive.c) */
    /* The inference workers the latest images went to (hash of the path -> peer), so that the other tasks of
     * an image follow it: that worker's image-feature cache then runs the vision tower once for all of them. */
    struct { uint64_t h; int peer; } affinity[64];
    unsigned affinity_next;
    int64_t total, done, failed;
    int64_t at_start_done;
    int out_checked;        /* a sink reported its output's size (producer_reconcile.c): the job may complete */
    int64_t out_said_end;   /* the output size last reported as holding every finished record (logged once) */
    int has_sink_records;   /* the sink's latest count of distinct records in its output (hello, ack) */
    int64_t sink_records;
    int redid_all;          /* the output held fewer records than finished items: all were redone once */
    double t0;
    int handed_out;         /* an item went out in this run (the first one is logged: the restart's cost) */
    pf_progress prog;
    int rr_pre, rr_inf;
    pf_zap *zap;
    double t0_unix;
    /* this run's statistics (metrics and the job report); index 0 preprocess, 1 inference */
    int64_t requeued[2], expired[2], handed_back[2], joined[4], lost[4];
    int64_t done_run, failed_run;
    pf_rate rate;
    double last_gauges;
    pf_refusals refused;   /* messages dropped by "who may say what" (producer_trust.c) */
    struct pf_delayed *delayed;   /* retries waiting out their backoff (producer_quarantine.c) */
    size_t n_delayed, cap_delayed;
    uint64_t rng;                 /* backoff jitter */
    int warned_old_sink;
    struct pf_prod_sink_notes *sink_notes;   /* lease notes waiting for each sink, by peer slot (producer_trust.c) */
    int n_sink_notes;
    int64_t notes_n, notes_msgs;             /* notes batched, and the `notes` messages that carried them */
    struct pf_prod_out *out;   /* items picked in this turn, sent after the notes of their leases (dispatch) */
    size_t n_out, cap_out, out_bytes;
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
/* F's own task and record additions from the job store (items.task, items.meta): 0, or -1 when the stored
 * task cannot be read (then F keeps the job's task and the reason is logged). *FINAL (may be NULL): the item
 * is done or failed in the job store (a stale queue entry: it is not to go out). */
int pf_prod_flight_load_task(prod *p, flight *f, int *final);
void pf_prod_flight_remove(prod *p, flight *f);
/* Item ID is done or failed in the job store (the job store is the truth: the producer keeps no set of the
 * items finished in the run, so its memory stays flat in the job's size). */
int pf_prod_item_final(prod *p, int64_t id);
size_t pf_prod_count_stage(const prod *p, int stage);

/* producer_job.c: the job store (transactions committed in groups), the job's task, the input scan. */
int pf_prod_tx(prod *p);
/* The canonical JSON of a task (its identity in the job store), and back; *prompt owns t->prompt. */
char *pf_prod_task_json(const pf_task *t, int image_size);
int pf_prod_task_from_json(const char *s, pf_task *t, char **prompt, int *image_size, pf_err *err);
int pf_prod_commit_due(prod *p, pf_err *err);
void pf_prod_dbcheck(int rc, const pf_err *e);
int pf_prod_setup_job(prod *p, pf_err *err);
int pf_prod_setup_scan(prod *p, pf_err *err);
int pf_prod_scan_some(prod *p, double budget_s, pf_err *err);
/* How long the loop's poll may wait (ms) while scanning, at NOW: 0 when entries wait and their chunk is due,
 * until it is due when it is paced, a few ms when the walk has found nothing new. */
long pf_prod_scan_wait_ms(prod *p, double now);

/* producer_scan.c: the walk in its own thread, feeding the loop through a bounded queue. */
/* Start walking SCAN (the thread uses it alone until the walk is complete or the feed stopped). */
int pf_prod_feed_start(pf_scan *scan, pf_prod_feed **out, pf_err *err);
/* Take up to MAX entries found (the caller frees them: pf_prod_scan_entry_free); never waits. *state: 0 the
 * walk goes on, 1 it is complete and everything was taken, -1 it failed (ERR says why). */
size_t pf_prod_feed_take(pf_prod_feed *f, pf_prod_scan_entry **v, size_t max, int *state, pf_err *err);
size_t pf_prod_feed_waiting(pf_prod_feed *f);
/* YIELD 1: the walk runs at nice +10 (workers are connected: the loop's CPU comes first); 0: at the process'
 * own priority. */
void pf_prod_feed_yield(pf_prod_feed *f, int yield);
/* Stop the walk (it returns after the entry at hand) and free what was not taken: 0 (also for NULL). -1: the
 * walk is blocked reading its list (a FIFO, stdin) and was left behind with the scan it uses, which the caller
 * must then not close. */
int pf_prod_feed_stop(pf_prod_feed *f);
void pf_prod_scan_entry_free(pf_prod_scan_entry *en);
/* Free the entries taken from the feed but not added (a stop in the middle of a shard's listing). */
void pf_prod_scan_stash_free(prod *p);

/* producer_manifest.c: the job's items per file and per manifest line. */
/* The job's tasks: the given --task list (stored for resumes) or the stored one. After pf_prod_setup_job. */
int pf_prod_setup_tasks(prod *p, pf_err *err);
/* Open the manifest given (or stored by an earlier run), if any. */
int pf_prod_open_manifest(prod *p, const char *path, pf_err *err);
/* A scanned file: its canonical path (realpath, so "photos/a.jpg", "./photos/a.jpg" and the absolute path are
 * one item) into the job once per task. *added counts new items. */
int pf_prod_add_path(prod *p, const char *path, int *added, pf_err *err);
/* The same with the identity found already (the scan thread's entry). */
int pf_prod_add_found(prod *p, const char *path, const char *ident, int64_t size, int *added, pf_err *err);
/* PATH's identity: its realpath (or, when it cannot be resolved, the absolute path folded lexically); *size
 * its size, -1 when it cannot be stat'ed. NULL: out of memory. Thread-safe (the scan thread calls it). */
char *pf_prod_canonical(const char *path, int64_t *size);
/* Read a bounded chunk of the manifest into the job; at its end the scan is complete. */
int pf_prod_manifest_some(prod *p, double budget_s, pf_err *err);
void pf_prod_tasks_free(prod *p);
/* One (path, task, meta) into the job; IDENT is its identity (canonical path, or shard + member). */
int pf_prod_add_one(prod *p, const char *path, const char *ident, int64_t size, const char *task, const char *meta,
                    int *added, pf_err *err);
/* PATH's realpath (or lexically absolute when it has none); *size its size, -1 when it cannot be stat'ed. */
char *pf_prod_canonical(const char *path, int64_t *size);

/* producer_archive.c: tar/zip shards. pf_prod_archive_add takes PATH when it is a shard (its listing starts:
 * pf_prod_archive_some adds its members, TASKS each, with META's columns) or "SHARD#MEMBER" (one member):
 * 1 taken, 0 not an archive path, -1 error. */
int pf_prod_archive_add(prod *p, const char *path, const char *const *tasks, size_t n_tasks, const char *meta,
                        int *added, pf_err *err);
int pf_prod_archive_listing(const prod *p);   /* a shard is being listed */
int pf_prod_archive_some(prod *p, double t_end, int *added, pf_err *err);
/* The bytes of F when it is an archive item: 0 not one; 1 read (*bytes malloc'd); -1 its error (WHY). */
int pf_prod_archive_read(prod *p, flight *f, uint8_t **bytes, size_t *len, char *why, size_t why_cap);
void pf_prod_archive_free(prod *p);
void pf_prod_refill(prod *p);

/* producer_peers.c: connected workers and sinks, and what they send. */
int pf_prod_peer_find(prod *p, const uint8_t *ident, size_t len);
const char *pf_prod_role_name(int role);
int pf_prod_count_role(const prod *p, int role);
/* The connected workers of ROLE that get work: pf_prod_count_role less the quarantined ones, which are added
 * to *QUARANTINED (one pass over the peers: it runs every turn of the producer's loop). */
int pf_prod_count_working(const prod *p, int role, int *quarantined);
static inline int pf_prod_sink_alive(const prod *p) { return pf_prod_count_role(p, ROLE_SINK) > 0; }
int pf_prod_send_to(prod *p, int pi, pf_msg *m);
void pf_prod_send_heartbeats(prod *p, int finished);
void pf_prod_add_credit(prod *p, int pi, const pf_msg *m);
void pf_prod_handle(prod *p, pf_wire_in *in, double now);

/* producer_dispatch.c: hand raw items to preprocess workers, ready items to inference workers. */
void pf_prod_dispatch_pre(prod *p, double now);
void pf_prod_dispatch_inf(prod *p, double now);
/* The items picked by the two above go out, after the sinks got the notes of their leases (one `notes` message
 * per sink for the whole turn). -1: a sink could not be told (dropped); the items went back to their queues. */
int pf_prod_send_picked(prod *p, double now);
void pf_prod_picked_free(prod *p);

/* producer_leases.c */
void pf_prod_lease_lost(prod *p, flight *f, int count_attempt, const char *why);
void pf_prod_peer_gone(prod *p, int pi, const char *why);
void pf_prod_expire(prod *p, double now);
void pf_prod_on_tensor(prod *p, int pi, pf_wire_in *in);
void pf_prod_on_nack(prod *p, int pi, pf_wire_in *in);

/* producer_records.c */
void pf_prod_make_error_record(prod *p, flight *f, const char *stage, const char *msg);
void pf_prod_on_done(prod *p, int pi, pf_wire_in *in, double now);
void pf_prod_on_ack(prod *p, int pi, pf_wire_in *in);
void pf_prod_flush_sink_queue(prod *p, double now);

/* producer_reconcile.c: a sink's hello reports its output's size; finished items beyond it are redone. */
void pf_prod_on_sink_output(prod *p, const pf_msg *m);
/* The job's records are all in the output, as far as the sink's reports tell: 1. 0 when no sink reported
 * yet, or when records are missing (every finished item was then sent back to be redone). */
int pf_prod_output_verified(prod *p);
/* producer_trust.c: who may say what (PROTOCOL.md): the sink learns every lease (so that it takes records
 * only from their holders), and messages from peers that may not send them are refused. */
/* Tell every sink the lease of F to peer PI at STAGE (FL_PRE/FL_INF), before the item goes out: -1 when a
 * sink could not be told (then the item must not go out). */
int pf_prod_note_lease(prod *p, flight *f, int pi, int stage);
/* F's lease is over (tensor in, lease lost): the sink must take no record for it from that holder. */
void pf_prod_note_unlease(prod *p, flight *f);
/* A sink (re)joined: tell it every lease it may see a record for. */
void pf_prod_note_all_leases(prod *p, int si);
/* Send the notes waiting for every sink (before any item goes out to a worker, and at the end of a turn): 0, or
 * -1 when a sink could not be told, which is then dropped (no work goes out until it says hello again). */
int pf_prod_notes_flush(prod *p);
/* The same for sink SI alone, before anything else goes to it (one connection keeps its order); -1: it is
 * dropped at the next pf_prod_notes_flush. */
int pf_prod_notes_flush_sink(prod *p, int si);
/* Sink SI said hello: its waiting notes are moot (the welcome makes it forget every lease; all are sent anew). */
void pf_prod_notes_reset(prod *p, int si);
void pf_prod_notes_free(prod *p);
/* Whether IN from peer PI may act on item F (found by the message's id, may be NULL): F is leased to PI at
 * STAGE1 or STAGE2 and the key matches. Otherwise the message is refused (counted, logged) and 0 returned. */
int pf_prod_from_holder(prod *p, pf_wire_in *in, int pi, flight *f, int stage1, int stage2);
/* Count and log a refused message IN (from peer PI, -1 unknown). */
void pf_prod_refuse(prod *p, pf_wire_in *in, int pi, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* producer_quarantine.c: the failure policy. A retry waits out an exponential backoff with jitter; a
 * failure that is the worker's (no such file on its host, another model) quarantines the worker instead of
 * costing the item an attempt; credit never lets a worker hold more than its capacity. */
/* Delay F's next attempt (it is out of every queue): back to the raw queue, or to the ready queue when it
 * keeps its tensor, after the backoff for its attempt count. 0, or -1 out of memory (F is untouched). */
int pf_prod_retry_later(prod *p, flight *f, double now);
/* Retries whose backoff is over go to the front of their queues. */
void pf_prod_release_delayed(prod *p, double now);
size_t pf_prod_delayed_count(const prod *p);
void pf_prod_delayed_free(prod *p);
/* Set paliflow_producer_workers_quarantined{role} from the connected workers. */
void pf_prod_quarantine_gauge(prod *p, int role);
/* No more work for worker PI: WHY is logged once and counted (paliflow_producer_quarantined_total). */
void pf_prod_quarantine(prod *p, int pi, const char *why);
/* A hello's announcements: capacity, and the model's image size (a mismatch quarantines the worker). */
void pf_prod_hello_policy(prod *p, int pi, const pf_msg *m);
/* Clamp every ROLE worker's credit to its capacity minus the items leased to it (a repeated or stale
 * hello, or credit from a stale welcome, must not let a worker hoard the queue). */
void pf_prod_clamp_credit(prod *p, int role);
/* Worker PI gave F back saying the failure is its own: 1 when believed (the producer can see the file),
 * then the worker is quarantined and F goes back without an attempt; 0: F is to be charged as usual. */
int pf_prod_worker_fault(prod *p, int pi, flight *f, const char *why);
/* Worker PI failed F (an attempt charged): remembered, for a strike if F then succeeds elsewhere. */
void pf_prod_note_failure(prod *p, int pi, const flight *f);
/* F succeeded on worker PI: a worker that failed it before gets a strike; three quarantine it. */
void pf_prod_success_elsewhere(prod *p, const flight *f, int pi);

/* producer_stats.c */
void pf_prod_metrics_init(prod *p);
void pf_prod_update_gauges(prod *p, double now);
int pf_prod_write_report(prod *p, int complete, pf_err *err);

#endif
